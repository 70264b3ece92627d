//! Export benchmark: runs export jobs on the emulator through a `certflow worker` process
//! whose every AWS call goes through the fault proxy (no faults, just counting), and prints
//! the AWS calls per successful job by service and operation, the job wall time from
//! enqueue to SUCCEEDED, and the same service calls made directly in the same run — the
//! engine's overhead ratio.
//!
//! The install goes to `--servers N` (default 1) servers of the simulated SSM fleet
//! ([`certflow_tests::fleet`]) tagged for the job; the fleet's SSM calls per job are
//! printed beside the per-service figures.
//!
//! ```text
//! deploy/local/emulator.sh start && source .local/emulator.env
//! cargo build -p certflow && cargo run -p certflow-tests --bin export_bench -- 10 --servers 50
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use certflow_tests::certflow::Env;
use certflow_tests::fleet::Fleet;
use certflow_tests::proxy::FaultProxy;
use certflow_tests::unique;
use certflow_tests::worker_process::WorkerCommand;
use engine::backend::sqs::create_queue_with_dlq;
use engine::{EventKind, JobStatus};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (jobs, servers) = args();
    let env = Env::new().await;
    let proxy = FaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL"),
        1,
    )
    .await;
    let tasks = unique("bench-tasks");
    create_queue_with_dlq(
        &aws_sdk_sqs::Client::new(&env.sdk),
        &tasks,
        Duration::from_secs(30),
        5,
    )
    .await
    .expect("task queue");
    let tag = unique("bench");
    env.instances(servers, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // past validation: no polling in `check`

    let mut worker = WorkerCommand::new(&env, &proxy.url())
        .args(["--poll-wait-secs", "20", "--sweep-every-secs", "0"])
        .env("CERTFLOW_TASKS_QUEUE", &tasks)
        .log_level("warn")
        .spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.clear_calls();
    let fleet_before = Fleet::global().call_counts();

    let mut wall = Duration::ZERO;
    let mut timers = Duration::ZERO;
    let mut last = None;
    for i in 0..jobs {
        let started = Instant::now();
        let id = env
            .submit(&format!(
                r#"{{"CertificateArn":"{arn}","CertName":"bench-{i}","TargetTagKey":"Tier","TargetTagValue":"{tag}"}}"#
            ))
            .await;
        let rec = env.wait(&id).await;
        wall += started.elapsed();
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
        last = Some(id.clone());
        // The durable timers the workflow asked for (the wait step's first poll after
        // ~2 s): time the job spent waiting by design, not engine overhead.
        let history = env.jobs.history(&id).await.expect("history");
        for pair in history.windows(2) {
            if pair[0].to_status == JobStatus::Waiting && pair[1].kind != EventKind::Created {
                timers += Duration::from_millis((pair[1].at - pair[0].at).max(0) as u64);
            }
        }
    }
    let calls = proxy.calls();
    let fleet_calls = Fleet::global().call_counts();
    worker.kill();

    let mut by_op: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &calls {
        *by_op
            .entry((c.service.clone(), c.operation.clone()))
            .or_default() += 1;
    }
    let receives = by_op
        .get(&("sqs".to_string(), "ReceiveMessage".to_string()))
        .copied()
        .unwrap_or(0);
    let total: usize = by_op.values().sum();
    println!(
        "export-bench: {jobs} jobs, one at a time, {servers} tagged server(s) of the simulated fleet, moto on loopback"
    );
    println!("\nAWS calls per successful job, by service and operation:");
    for ((svc, op), n) in &by_op {
        println!("  {svc:<16} {op:<24} {:>6.2}", *n as f64 / jobs as f64);
    }
    println!(
        "  total {:.2} per job ({:.2} without ReceiveMessage long polls, which are idle cost)",
        total as f64 / jobs as f64,
        (total - receives) as f64 / jobs as f64
    );

    println!("\nSSM calls the simulated fleet answered, per job:");
    for (op, n) in &fleet_calls {
        let n = n - fleet_before.get(op).copied().unwrap_or(0);
        if n > 0 {
            println!(
                "  ssm (fleet)      {op:<24} {:>6.2}",
                n as f64 / jobs as f64
            );
        }
    }

    // The install's batches as the last job staged them (canary, then batches of
    // MaxConcurrency): the direct calls send one command per batch, as the worker does.
    let last = last.expect("at least one job");
    let mut batches: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (server, r) in env.servers(&last).await {
        batches.entry(r.batch).or_default().push(server);
    }
    println!(
        "\nThe install went out in {} batch(es) of {:?} server(s)",
        batches.len(),
        batches.values().map(Vec::len).collect::<Vec<_>>()
    );
    let tag_filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("tag:Tier")
        .values(&tag)
        .build()
        .expect("a DescribeInstanceInformation filter");

    // The same service calls, made directly, once per job's worth.
    let clients = &env.deps.clients;
    let ssm = &clients.ssm;
    let direct_started = Instant::now();
    let rounds = jobs.min(10);
    for i in 0..rounds {
        let name = format!(
            "{}direct-{i}-{}",
            env.deps.config.secret_prefix,
            unique("d")
        );
        let _ = clients
            .acm
            .describe_certificate()
            .certificate_arn(&arn)
            .send()
            .await;
        let _ = clients
            .acm
            .list_tags_for_certificate()
            .certificate_arn(&arn)
            .send()
            .await;
        // As the export step's first attempt: the target's secret looked for, then
        // created with its one version.
        let _ = clients
            .secrets
            .describe_secret()
            .secret_id(&name)
            .send()
            .await;
        let _ = clients
            .acm
            .export_certificate()
            .certificate_arn(&arn)
            .passphrase(aws_sdk_acm::primitives::Blob::new("passphrase-passphrase"))
            .send()
            .await;
        let _ = clients
            .secrets
            .create_secret()
            .name(&name)
            .secret_string("{\"passphrase\":\"x\"}")
            .send()
            .await;
        let _ = clients
            .dynamodb
            .update_item()
            .table_name(&env.deps.config.inventory_table)
            .key("TagKeyValue", AttributeValue::S("direct#x".into()))
            .key(
                "CertificateArnCertName",
                AttributeValue::S(format!("{arn}#{i}")),
            )
            .update_expression("SET LastStatus = :s")
            .expression_attribute_values(":s", AttributeValue::S("EXPORTED".into()))
            .send()
            .await;
        // As the install step: the tag's servers resolved, then one command per batch by
        // instance id, each waited for with its invocations (as the wait step); after the
        // last batch the servers are resolved once more (late joiners).
        let _ = ssm
            .describe_instance_information()
            .filters(tag_filter.clone())
            .send()
            .await;
        for ids in batches.values() {
            let sent = ssm
                .send_command()
                .document_name(&env.deps.config.document_name)
                .set_instance_ids(Some(ids.clone()))
                .parameters("CertName", vec![format!("direct-{i}")])
                .parameters("SecretId", vec!["x".into()])
                .parameters("Region", vec!["us-east-1".into()])
                .send()
                .await;
            if let Some(id) = sent
                .ok()
                .and_then(|s| s.command().and_then(|c| c.command_id().map(str::to_string)))
            {
                let _ = ssm
                    .list_command_invocations()
                    .command_id(&id)
                    .details(true)
                    .send()
                    .await;
            }
        }
        let _ = ssm
            .describe_instance_information()
            .filters(tag_filter.clone())
            .send()
            .await;
        let _ = clients
            .dynamodb
            .update_item()
            .table_name(&env.deps.config.inventory_table)
            .key("TagKeyValue", AttributeValue::S("direct#x".into()))
            .key(
                "CertificateArnCertName",
                AttributeValue::S(format!("{arn}#{i}")),
            )
            .update_expression("SET LastStatus = :s")
            .expression_attribute_values(":s", AttributeValue::S("INSTALLED".into()))
            .send()
            .await;
    }
    let direct = direct_started.elapsed() / rounds as u32;
    let per_job = wall / jobs as u32;
    let per_job_active = per_job.saturating_sub(timers / jobs as u32);
    println!(
        "\nJob wall time, enqueue to SUCCEEDED:      {:>8.1} ms",
        per_job.as_secs_f64() * 1e3
    );
    println!(
        "  of which durable timers (by design):    {:>8.1} ms",
        (timers / jobs as u32).as_secs_f64() * 1e3
    );
    println!(
        "  active time:                            {:>8.1} ms",
        per_job_active.as_secs_f64() * 1e3
    );
    println!(
        "Same service calls made directly:         {:>8.1} ms",
        direct.as_secs_f64() * 1e3
    );
    println!(
        "Engine overhead ratio (active / direct):  {:>8.2}   (target ≤ 1.2; the engine's own calls — jobs table, task queue — are the difference)",
        per_job_active.as_secs_f64() / direct.as_secs_f64()
    );
}

const USAGE: &str = "\
usage: export_bench [JOBS] [--servers N]

Runs JOBS export jobs (default 10), one at a time, through a `certflow worker` process
whose AWS calls go through the fault proxy, each installing on N servers (default 1) of
the simulated SSM fleet (a canary, then batches of MaxConcurrency); prints the AWS calls
per job, the job wall time, and the same service calls made directly.
Needs the emulator (deploy/local/emulator.sh start; source .local/emulator.env) and the
certflow binary (cargo build -p certflow).";

/// The number of jobs (first plain argument, default 10) and `--servers N` (default 1).
fn args() -> (usize, u32) {
    let mut jobs = 10;
    let mut servers = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        } else if a == "--servers" {
            servers = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n >= 1)
                .expect("--servers N (N >= 1)");
        } else if let Some(n) = a.strip_prefix("--servers=") {
            servers = n.parse().expect("--servers=N");
        } else {
            jobs = a
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or_else(|| panic!("the number of jobs (>= 1), not {a:?}\n{USAGE}"));
        }
    }
    (jobs, servers)
}
