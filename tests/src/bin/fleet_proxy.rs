//! `fleet-proxy`: a fault proxy (no rules) in front of the emulator whose SSM Run Command
//! operations are answered by a simulated fleet ([`certflow_tests::fleet`]), for demos and
//! manual runs. It prints `FLEET_PROXY_URL=http://127.0.0.1:<port>` on stdout, then one
//! line per registered server on stderr, and runs until killed.
//!
//! ```text
//! fleet-proxy --upstream http://127.0.0.1:5000 \
//!     --servers 10:Environment=prod --servers 2:Environment=dev \
//!     --fail Environment=prod:0 --latency-ms 1500
//! ```
//!
//! - `--upstream URL`: the emulator (default: `AWS_ENDPOINT_URL`).
//! - `--servers N:Key=Value` (repeatable): registers N EC2 servers tagged `Key=Value`;
//!   `--on-prem-servers N:Key=Value` registers on-premises (`mi-…`) ones.
//! - `--fail Key=Value:INDEX[:REASON]` (repeatable): server number INDEX (from 0, in id
//!   order) of that tag fails the install with REASON on standard error.
//! - `--latency-ms MS`: how long every server takes to run a command (default 0).

use std::time::Duration;

use certflow_tests::fleet::{Behaviour, Fleet, Kind};
use certflow_tests::proxy::FaultProxy;

fn usage(why: &str) -> ! {
    eprintln!(
        "fleet-proxy: {why}\nusage: fleet-proxy [--upstream URL] [--servers N:Key=Value]... \
         [--on-prem-servers N:Key=Value]... [--fail Key=Value:INDEX[:REASON]]... [--latency-ms MS]"
    );
    std::process::exit(2)
}

/// `N:Key=Value`.
fn servers_arg(v: &str) -> (usize, String, String) {
    let (n, tag) = v
        .split_once(':')
        .unwrap_or_else(|| usage(&format!("--servers {v:?}: expected N:Key=Value")));
    let n: usize = n
        .parse()
        .unwrap_or_else(|_| usage(&format!("--servers {v:?}: {n:?} is not a number")));
    let (k, val) = tag
        .split_once('=')
        .unwrap_or_else(|| usage(&format!("--servers {v:?}: expected Key=Value")));
    (n, k.to_string(), val.to_string())
}

/// `Key=Value:INDEX[:REASON]`.
fn fail_arg(v: &str) -> (String, String, usize, String) {
    let (tag, rest) = v
        .split_once(':')
        .unwrap_or_else(|| usage(&format!("--fail {v:?}: expected Key=Value:INDEX")));
    let (k, val) = tag
        .split_once('=')
        .unwrap_or_else(|| usage(&format!("--fail {v:?}: expected Key=Value:INDEX")));
    let (index, reason) = rest.split_once(':').unwrap_or((rest, ""));
    let index: usize = index
        .parse()
        .unwrap_or_else(|_| usage(&format!("--fail {v:?}: {index:?} is not an index")));
    let reason = if reason.is_empty() {
        "certflow-install: error: simulated failure (fleet-proxy --fail)".to_string()
    } else {
        reason.to_string()
    };
    (k.to_string(), val.to_string(), index, reason)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut upstream = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let mut servers = Vec::new();
    let mut fails = Vec::new();
    let mut latency = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--upstream" => upstream = value(),
            "--servers" => servers.push((servers_arg(&value()), Kind::Ec2)),
            "--on-prem-servers" => servers.push((servers_arg(&value()), Kind::OnPrem)),
            "--fail" => fails.push(fail_arg(&value())),
            "--latency-ms" => {
                let v = value();
                let ms: u64 = v
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--latency-ms {v:?}")));
                latency = Duration::from_millis(ms);
            }
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if upstream.is_empty() {
        usage("no --upstream and no AWS_ENDPOINT_URL");
    }
    let fleet = Fleet::global();
    fleet.set_default_latency(latency);
    for ((n, k, v), kind) in &servers {
        for id in fleet.add(*n, &[(k.as_str(), v.as_str())], *kind) {
            eprintln!("fleet-proxy: server {id} {k}={v}");
        }
    }
    for (k, v, index, reason) in fails {
        let tagged = fleet.tagged(&k, &v);
        let Some(id) = tagged.get(index) else {
            usage(&format!(
                "--fail {k}={v}:{index}: that tag has {} server(s)",
                tagged.len()
            ));
        };
        fleet.set_behaviour(id, Behaviour::Fail { stderr: reason });
        eprintln!("fleet-proxy: server {id} {k}={v} fails its installs");
    }
    let proxy = match FaultProxy::try_start(&upstream, 0).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fleet-proxy: {e}");
            std::process::exit(1);
        }
    };
    println!("FLEET_PROXY_URL={}", proxy.url());
    // Flushed at once: a script reads the line while the proxy runs.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    let counts = fleet.call_counts();
    eprintln!("fleet-proxy: stopping; SSM calls answered: {counts:?}");
}
