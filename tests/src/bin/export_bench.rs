//! Export benchmark: runs export jobs on the emulator through a `certflow worker` process
//! whose every AWS call goes through the fault proxy (no faults, just counting), and prints
//! the AWS calls per successful job by service and operation (with their mean request
//! size), the job wall time from enqueue to SUCCEEDED (p50/p99), the worker process's CPU
//! per job and when idle, and the workflow's service calls made directly by the bench in the
//! same run, through the same proxy — the engine's overhead ratio in wall time, and in CPU
//! what those calls cost a client that does nothing else.
//!
//! **Keep-alive.** The proxy keeps the worker's connections open whatever the emulator
//! does (moto answers `Connection: close`; the proxy does not pass that on and opens its
//! own upstream connections), so the worker's CPU is the engine's and the SDK's, not a TCP
//! handshake per call. The client connections the worker opened during the jobs are
//! printed: about none per job after the warm-up job.
//!
//! **CPU.** The worker process's CPU-time clock (user + system, every thread's, in ns;
//! [`bench::pid_cpu_ms`]) over the measured jobs, per job; then over `--idle-secs` of idleness, per second. The release build's
//! figure is the one that counts: the bench uses `target/release/certflow` when it exists
//! (`cargo build --release -p certflow`), else the debug build, and says which.
//!
//! Three figures split the CPU per job. The SDK's floor: 1,000 `DescribeCertificate` calls
//! from a bare client, per call, back-to-back, and 60 more each after the client's thread
//! slept 200 ms (on a VM the same call costs two to three times as much after a rest, and
//! a lone job's calls mostly come after one). The workflow's own calls (the certificate, the secret,
//! the export, the inventory, the fleet and its command), made once per round by a thread of
//! the bench with requests of the same sizes: what they cost is the SDK's share of the
//! job; the rest is the engine's calls (jobs table, task queue) and certflow's own code.
//! And the engine alone (`--engine-jobs`): `demo` jobs, whose steps make no call, through
//! the same worker.
//!
//! The install goes to `--servers N` (default 1) servers of the simulated SSM fleet
//! ([`certflow_tests::fleet`]) tagged for the job; the fleet's SSM calls per job are
//! printed beside the per-service figures. `--concurrent C` keeps C jobs in flight (the
//! emulator's storm) instead of one at a time.
//!
//! ```text
//! deploy/local/emulator.sh start && source .local/emulator.env
//! cargo build --release -p certflow
//! cargo run --release -p certflow-tests --bin export_bench -- 20 --idle-secs 30 --json /tmp/export.json
//! cargo run --release -p certflow-tests --bin export_bench -- 100 --concurrent 20
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use certflow_tests::bench;
use certflow_tests::certflow::Env;
use certflow_tests::fleet::Fleet;
use certflow_tests::proxy::FaultProxy;
use certflow_tests::unique;
use certflow_tests::worker_process::WorkerCommand;
use engine::backend::sqs::create_queue_with_dlq;
use engine::{EventKind, JobStatus};

fn main() {
    let args = <Args as clap::Parser>::parse();
    // The worker binary: `--worker-bin`, else the release build when there is one (the
    // CPU figures are a release build's), else the debug build beside this bench.
    let (bin, build) = match &args.worker_bin {
        Some(p) => (
            PathBuf::from(p),
            if p.contains("/release/") {
                "release"
            } else {
                "debug"
            },
        ),
        None => {
            let target = bench::target_dir().expect("the cargo target directory");
            let release = target.join("release/certflow");
            if release.exists() {
                (release, "release")
            } else {
                (target.join("debug/certflow"), "debug")
            }
        }
    };
    assert!(
        bin.exists(),
        "{} not found: build it (cargo build --release -p certflow) or pass --worker-bin",
        bin.display()
    );
    // `certflow_bin()` reads it; set before any thread starts.
    std::env::set_var("CERTFLOW_BIN", &bin);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(args, bin, build));
}

async fn run(args: Args, bin: PathBuf, build: &'static str) {
    let jobs = args.jobs as usize;
    let concurrent = args.concurrent as usize;
    let warmup = args.warmup as usize;
    let (servers, idle_secs) = (args.servers, args.idle_secs);
    let env = Env::new().await;
    let proxy = FaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL"),
        1,
    )
    .await;
    if concurrent > 1 {
        // moto's own transactions are not fit for concurrent writers on one table.
        proxy.isolate_dynamodb_transactions(true);
    }
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
        .args(match args.runtime_threads {
            RuntimeThreads::Count(n) => vec!["--runtime-threads".to_string(), n.to_string()],
            RuntimeThreads::PerCpu => vec![],
        })
        .env("CERTFLOW_TASKS_QUEUE", &tasks)
        // Its log costs CPU too: as the stack runs it (certflow.yaml), JSON lines.
        .log_level(&args.log)
        .env("CERTFLOW_LOG_FORMAT", "json")
        .spawn();
    let pid = worker.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = |i: usize| {
        format!(
            r#"{{"CertificateArn":"{arn}","CertName":"bench-{i}","TargetTagKey":"Tier","TargetTagValue":"{tag}"}}"#
        )
    };
    // Warm-up: the worker's first job opens its connections and caches the install
    // document's hash; neither is a per-job cost.
    for i in 0..warmup {
        let id = env.submit(&body(jobs + i)).await;
        let rec = env.wait(&id).await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    }
    proxy.clear_calls();
    let fleet_before = Fleet::global().call_counts();
    let connections_before = proxy.client_connections();
    let cpu_before = worker_cpu_ms(pid);

    let started = Instant::now();
    let mut walls_ms: Vec<f64> = Vec::with_capacity(jobs);
    let mut timers = Duration::ZERO;
    let mut last = None;
    let mut next = 0;
    let mut pending = tokio::task::JoinSet::new();
    while next < jobs || !pending.is_empty() {
        while next < jobs && pending.len() < concurrent {
            let (i, b) = (next, body(next));
            next += 1;
            let submitted = bench::now_ms();
            let id = env.submit(&b).await;
            let jobs_api = env.jobs.clone();
            pending.spawn(async move {
                let rec = wait_terminal(&jobs_api, &id).await;
                (i, id, submitted, rec)
            });
        }
        let Some(done) = pending.join_next().await else {
            break;
        };
        let (_, id, submitted, rec) = done.expect("a job waiter");
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
        walls_ms.push((rec.updated_at - submitted).max(0) as f64);
        // The durable timers the workflow asked for (the wait step's first look after
        // ~2 s): time the job spent waiting by design, not engine overhead.
        let history = env.jobs.history(&id).await.expect("history");
        for pair in history.windows(2) {
            if pair[0].to_status == JobStatus::Waiting && pair[1].kind != EventKind::Created {
                timers += Duration::from_millis((pair[1].at - pair[0].at).max(0) as u64);
            }
        }
        last = Some(id);
    }
    let elapsed = started.elapsed();
    let cpu_jobs = worker_cpu_ms(pid) - cpu_before;
    let connections = proxy.client_connections() - connections_before;
    let calls = proxy.calls();
    let fleet_calls = Fleet::global().call_counts();

    // Idle: the worker long-polls its three queues and nothing else happens.
    // First, the SDK's own floor: what one call costs a client that does nothing else.
    let floor =
        tokio::task::block_in_place(|| sdk_floor(&env.sdk, &proxy.url(), &arn, FLOOR_CALLS, None));
    let rested_floor = tokio::task::block_in_place(|| {
        sdk_floor(
            &env.sdk,
            &proxy.url(),
            &arn,
            RESTED_FLOOR_CALLS,
            Some(FLOOR_REST),
        )
    });
    let idle_before = worker_cpu_ms(pid);
    let idle_calls_before = proxy.calls().len();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_ms = worker_cpu_ms(pid) - idle_before;
    let idle_calls = proxy.calls().len() - idle_calls_before;
    // The engine alone, on the same worker and backends: jobs whose steps make no call.
    let engine_alone = match args.engine_jobs {
        0 => None,
        n => Some(engine_alone(&env, &proxy, &tasks, pid, n as usize).await),
    };
    worker.kill();
    let idle_per_s = idle_ms / idle_secs.max(1) as f64;

    let mut by_op: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut request_bytes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &calls {
        let op = (c.service.clone(), c.operation.clone());
        *request_bytes.entry(op.clone()).or_default() += c.body.len();
        *by_op.entry(op).or_default() += 1;
    }
    let receives = by_op
        .get(&("sqs".to_string(), "ReceiveMessage".to_string()))
        .copied()
        .unwrap_or(0);
    let total: usize = by_op.values().sum();
    let how = if concurrent > 1 {
        format!("up to {concurrent} at once")
    } else {
        "one at a time".to_string()
    };
    println!(
        "export-bench {}: {jobs} jobs, {how}, after {warmup} warm-up job(s) not counted; {servers} tagged server(s) of the simulated fleet, moto on loopback",
        bench::today()
    );
    println!(
        "worker: {} ({build} build), every AWS call through the keep-alive fault proxy",
        bin.display()
    );
    println!(
        "\nAWS calls per successful job, by service and operation (and their mean request body):"
    );
    for ((svc, op), n) in &by_op {
        let bytes = request_bytes
            .get(&(svc.clone(), op.clone()))
            .copied()
            .unwrap_or(0);
        println!(
            "  {svc:<16} {op:<28} {:>6.2}   {:>6} B",
            *n as f64 / jobs as f64,
            bytes / (*n).max(1)
        );
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

    // The workflow's own service calls, made directly by a thread of this bench through
    // the same proxy: their wall time is the basis of the overhead ratio, their CPU what
    // those calls cost a client that does nothing else.
    let plan = DirectPlan {
        sdk: env
            .sdk
            .to_builder()
            .stalled_stream_protection(
                aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
            )
            .build(),
        url: proxy.url(),
        arn: arn.clone(),
        secret_prefix: env.deps.config.secret_prefix.clone(),
        inventory_table: env.deps.config.inventory_table.clone(),
        document_name: env.deps.config.document_name.clone(),
        batches: batches.values().cloned().collect(),
        tag_filter,
    };
    let calls_before_direct = proxy.calls().len();
    let direct_cpu = tokio::task::block_in_place(|| plan.measure(DIRECT_ROUNDS));
    let direct_calls =
        (proxy.calls().len() - calls_before_direct) as f64 / (DIRECT_ROUNDS + 1) as f64;
    let direct = direct_cpu.wall;
    let mean_ms = walls_ms.iter().sum::<f64>() / jobs as f64;
    let timers_ms = (timers / jobs as u32).as_secs_f64() * 1e3;
    let active_ms = (mean_ms - timers_ms).max(0.0);
    let p50 = bench::percentile(&walls_ms, 50.0);
    let p99 = bench::percentile(&walls_ms, 99.0);
    let jobs_per_s = jobs as f64 / elapsed.as_secs_f64();
    println!(
        "\nJob wall time, enqueue to SUCCEEDED:      {mean_ms:>8.1} ms mean, p50 {p50:.0} ms, p99 {p99:.0} ms (record's updated_at − submission)"
    );
    println!("  of which durable timers (by design):    {timers_ms:>8.1} ms");
    println!("  active time:                            {active_ms:>8.1} ms");
    println!(
        "Same service calls made directly:         {:>8.1} ms",
        direct.as_secs_f64() * 1e3
    );
    println!(
        "Engine overhead ratio (active / direct):  {:>8.2}   (target ≤ 1.2; the engine's own calls — jobs table, task queue — are the difference)",
        active_ms / (direct.as_secs_f64() * 1e3)
    );
    println!(
        "Throughput:                               {jobs_per_s:>8.2} jobs/s ({jobs} jobs in {:.1} s, {how})",
        elapsed.as_secs_f64()
    );

    let cpu_per_job = cpu_jobs / jobs as f64;
    let total_f = total as f64;
    let threads = match args.runtime_threads {
        RuntimeThreads::Count(n) => format!("{n} runtime thread(s)"),
        RuntimeThreads::PerCpu => "a runtime thread per CPU".to_string(),
    };
    println!(
        "\nWorker CPU ({build} build, {threads}, log {} as JSON lines; pid {pid}, its CPU clock in ns):",
        args.log
    );
    println!(
        "  per export job                         {cpu_per_job:>8.2} ms   [target <= 5 ms: {}] ({:.1} ms over {jobs} jobs; {:.3} ms per proxied call, receives included)",
        if cpu_per_job <= 5.0 { "met" } else { "MISSED" },
        cpu_jobs,
        cpu_jobs / total_f.max(1.0)
    );
    println!(
        "  idle                                   {idle_per_s:>8.2} ms per s [target < 1 ms/s: {}] ({idle_ms:.1} ms over {idle_secs} s; {idle_calls} calls meanwhile, long polls of 20 s on 3 queues)",
        if idle_per_s < 1.0 { "met" } else { "MISSED" },
    );
    let calls_per_job = total_f / jobs as f64;
    println!(
        "  the AWS SDK's floor                    {floor:>8.3} ms per call ({FLOOR_CALLS} DescribeCertificate calls back-to-back through the same proxy from a thread of this bench that does nothing else, keep-alive) = {:.2} ms for this job's {calls_per_job:.2} calls",
        floor * calls_per_job,
    );
    println!(
        "    after a rest                         {rested_floor:>8.3} ms per call ({RESTED_FLOOR_CALLS} of the same calls, each after the thread slept {} ms, as most of a lone job's calls come: caches and clock gone cold) = {:.2} ms for this job's calls",
        FLOOR_REST.as_millis(),
        rested_floor * calls_per_job,
    );
    // The job's calls split in two: the workflow's, whose SDK cost the bench measures by
    // making them itself, and the engine's (jobs table, task queue), which carry the rest.
    let engine_calls = calls_per_job - direct_calls;
    let rest = cpu_per_job - direct_cpu.cpu_ms;
    println!(
        "  the workflow's calls, made directly    {:>8.2} ms per job ({direct_calls:.2} calls of the same kinds and sizes, from a thread of this bench that does nothing else, through the same proxy: {:.3} ms a call)",
        direct_cpu.cpu_ms,
        direct_cpu.cpu_ms / direct_calls.max(1.0)
    );
    println!(
        "  everything else                        {rest:>8.2} ms per job (the engine's {engine_calls:.2} calls — jobs table, task queue — and all of certflow's own code and log: {:.3} ms per engine call)",
        rest / engine_calls.max(1.0)
    );
    if let Some(e) = &engine_alone {
        println!(
            "  the engine alone                       {:>8.2} ms per job ({} `demo` jobs whose four steps make no call, on the same worker: the jobs table and task queue only, {:.2} calls per job: {}; {:.3} ms a call)",
            e.cpu_ms_per_job,
            e.jobs,
            e.calls_per_job,
            e.calls_by_op,
            e.cpu_ms_per_job / e.calls_per_job.max(1.0)
        );
    }
    println!(
        "Client connections the worker opened to the proxy during the jobs: {connections} ({:.3} per job; the proxy keeps them alive although moto answers `Connection: close`)",
        connections as f64 / jobs as f64
    );

    if let Some(path) = &args.json {
        let calls_per_job: serde_json::Map<String, serde_json::Value> = by_op
            .iter()
            .map(|((svc, op), n)| (format!("{svc} {op}"), (*n as f64 / jobs as f64).into()))
            .collect();
        let out = serde_json::json!({
            "kind": "export_bench",
            "date": bench::today(),
            "jobs": jobs,
            "servers": servers,
            "concurrent": concurrent,
            "calls_per_job": calls_per_job,
            "calls_per_job_total": total_f / jobs as f64,
            "receives_per_job": receives as f64 / jobs as f64,
            "worker_cpu_ms_per_job": cpu_per_job,
            "worker_build": build,
            "worker_runtime_threads": match args.runtime_threads {
                RuntimeThreads::Count(n) => Some(n),
                RuntimeThreads::PerCpu => None,
            },
            "worker_log": args.log,
            "worker_cpu_exact": true,
            "idle_cpu_ms_per_s": idle_per_s,
            "sdk_floor_ms_per_call": floor,
            "sdk_rested_floor_ms_per_call": rested_floor,
            "sdk_floor_rest_ms": FLOOR_REST.as_millis() as u64,
            "direct_calls_per_job": direct_calls,
            "direct_cpu_ms_per_job": direct_cpu.cpu_ms,
            "engine_alone_cpu_ms_per_job": engine_alone.as_ref().map(|e| e.cpu_ms_per_job),
            "engine_alone_calls_per_job": engine_alone.as_ref().map(|e| e.calls_per_job),
            "client_connections": connections,
            "wall_ms_p50": p50,
            "wall_ms_p99": p99,
            "jobs_per_s": jobs_per_s,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&out).expect("JSON") + "\n",
        )
        .unwrap_or_else(|e| panic!("write {path}: {e}"));
        println!("\nfigures written to {path}");
    }
}

/// The worker's CPU so far, in ms. Without it there is no figure to print, so a worker that
/// has exited ends the bench, saying which process it was.
fn worker_cpu_ms(pid: u32) -> f64 {
    bench::pid_cpu_ms(pid).unwrap_or_else(|| {
        panic!("the worker (pid {pid}) exited during the bench: its CPU can no longer be read")
    })
}

/// Waits until job `id` is terminal (polling its record every 100 ms, up to 5 minutes).
async fn wait_terminal(jobs: &engine::Jobs, id: &engine::JobId) -> engine::JobRecord {
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(rec) = jobs.get(id).await {
            if rec.status.is_terminal() {
                return rec;
            }
        }
        assert!(
            Instant::now() < until,
            "job {id} did not finish in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs export jobs through a `certflow worker` process whose AWS calls go through the
/// fault proxy (which keeps the worker's connections alive), each installing on servers of
/// the simulated SSM fleet (a canary, then batches of MaxConcurrency); prints the AWS calls
/// per job, the job wall time (p50/p99), the worker's CPU per job and when idle, the
/// client connections it opened, and the same service calls made directly.
///
/// Needs the emulator (deploy/local/emulator.sh start; source .local/emulator.env) and the
/// certflow binary (cargo build --release -p certflow).
#[derive(Debug, clap::Parser)]
#[command(name = "export_bench", args_override_self = true)]
struct Args {
    /// Export jobs measured.
    #[arg(default_value_t = 10, value_parser = bench::at_least_one::<u64>)]
    jobs: u64,
    /// Tagged servers of the simulated fleet each job installs on.
    #[arg(long, default_value_t = 1, value_parser = bench::at_least_one::<u32>)]
    servers: u32,
    /// Jobs kept in flight (1: one at a time).
    #[arg(long, default_value_t = 1, value_parser = bench::at_least_one::<u64>)]
    concurrent: u64,
    /// After the jobs, seconds the idle worker is measured for.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Jobs run first and not counted (their connections, the install document's hash).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// The worker's runtime threads: a number (1 as the stack runs it, since its tasks have
    /// at most 1 vCPU), or `cpus` for one per CPU of this machine.
    #[arg(long, default_value = "1", value_parser = runtime_threads)]
    runtime_threads: RuntimeThreads,
    /// The worker's log filter (`CERTFLOW_LOG`); it logs JSON lines, as the stack runs it,
    /// and the bench discards them.
    #[arg(long, default_value = "info")]
    log: String,
    /// `demo` jobs run after the idle time to measure the engine alone on the same worker
    /// (0: none).
    #[arg(long, default_value_t = 20)]
    engine_jobs: u64,
    /// The certflow binary (default: target/release/certflow if built, else
    /// target/debug/certflow).
    #[arg(long)]
    worker_bin: Option<String>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<String>,
}

/// How many runtime threads the worker runs.
#[derive(Debug, Clone, Copy)]
enum RuntimeThreads {
    /// This many (`--runtime-threads N`).
    Count(u16),
    /// The worker's default: one per CPU.
    PerCpu,
}

fn runtime_threads(v: &str) -> Result<RuntimeThreads, String> {
    if v == "cpus" {
        return Ok(RuntimeThreads::PerCpu);
    }
    match v.parse::<u16>() {
        Ok(n @ 1..=256) => Ok(RuntimeThreads::Count(n)),
        _ => Err(format!("`cpus` or a number from 1 to 256, not {v:?}")),
    }
}

/// Calls the SDK floor is measured over: a few hundred ms of CPU, steady from run to run.
const FLOOR_CALLS: usize = 1_000;

/// Calls the rested floor is measured over, each after [`FLOOR_REST`] asleep.
const RESTED_FLOOR_CALLS: usize = 60;

/// How long the floor's thread sleeps before each call of the rested floor: longer than a
/// call's round trip to the emulator, shorter than the gaps of a job's timers and long
/// polls. After that long, the same call costs this machine's CPU two to three times as
/// much as back-to-back (caches and clock gone cold): a worker with one job at a time
/// makes most of its calls after such a rest.
const FLOOR_REST: Duration = Duration::from_millis(200);

/// The AWS SDK's CPU per call, in ms: `n` `DescribeCertificate` calls through the proxy
/// at `url` (keep-alive), one after another on a thread and runtime of their own, whose
/// CPU alone is measured — the proxy and everything else run on other threads. With
/// `rest`, the thread sleeps that long before each call (a plain sleep: nothing else
/// runs on the thread, so nothing but the call is counted).
fn sdk_floor(
    sdk: &aws_config::SdkConfig,
    url: &str,
    arn: &str,
    n: usize,
    rest: Option<Duration>,
) -> f64 {
    let conf = aws_sdk_acm::config::Builder::from(sdk)
        .endpoint_url(url)
        // As the worker configures its clients (workers/src/aws.rs).
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
        )
        .build();
    let acm = aws_sdk_acm::Client::from_conf(conf);
    let arn = arn.to_string();
    std::thread::Builder::new()
        .name("sdk-floor".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the SDK floor");
            rt.block_on(async {
                // Warm up: connection, credentials, endpoint resolution.
                for _ in 0..20 {
                    acm.describe_certificate()
                        .certificate_arn(&arn)
                        .send()
                        .await
                        .expect("DescribeCertificate");
                }
                let mut cpu = 0.0;
                for _ in 0..n {
                    if let Some(rest) = rest {
                        std::thread::sleep(rest);
                    }
                    let before = bench::this_thread_cpu_ms();
                    acm.describe_certificate()
                        .certificate_arn(&arn)
                        .send()
                        .await
                        .expect("DescribeCertificate");
                    cpu += bench::this_thread_cpu_ms() - before;
                }
                cpu / n as f64
            })
        })
        .expect("the SDK floor's thread")
        .join()
        .expect("the SDK floor's thread ended")
}

/// Rounds of the workflow's calls made directly (after one warm-up round).
const DIRECT_ROUNDS: usize = 20;

/// What the direct calls need: one export job's worth of the workflow's service calls, made
/// by a client that does nothing else.
struct DirectPlan {
    /// The SDK settings as the worker's clients have them.
    sdk: aws_config::SdkConfig,
    /// The proxy's URL (keep-alive), which every client is pointed at.
    url: String,
    arn: String,
    secret_prefix: String,
    inventory_table: String,
    document_name: String,
    /// The install's batches, as the last job staged them: one command each.
    batches: Vec<Vec<String>>,
    tag_filter: aws_sdk_ssm::types::InstanceInformationStringFilter,
}

/// One round's cost, averaged over the measured rounds.
struct DirectCost {
    /// Wall time of one round.
    wall: Duration,
    /// CPU of the thread that made the calls (with its runtime and connections), per round.
    cpu_ms: f64,
}

impl DirectPlan {
    /// Runs one warm-up round and `rounds` measured ones on a thread and current-thread
    /// runtime of their own, whose CPU alone is read; the proxy runs on other threads.
    fn measure(self, rounds: usize) -> DirectCost {
        std::thread::Builder::new()
            .name("direct-calls".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the direct calls");
                rt.block_on(async {
                    let clients = self.clients();
                    self.round(&clients, 0).await;
                    let cpu_before = bench::threads_cpu_ms("direct-calls");
                    let started = Instant::now();
                    for i in 1..=rounds {
                        self.round(&clients, i).await;
                    }
                    DirectCost {
                        wall: started.elapsed() / rounds as u32,
                        cpu_ms: (bench::threads_cpu_ms("direct-calls") - cpu_before)
                            / rounds as f64,
                    }
                })
            })
            .expect("the direct calls' thread")
            .join()
            .expect("the direct calls' thread ended")
    }

    /// The workflow's clients, pointed at the proxy. Set on each client's own config: the
    /// shared config's endpoint yields to `AWS_ENDPOINT_URL` (the emulator) in the
    /// environment.
    fn clients(&self) -> workflows::aws::Clients {
        let (sdk, url) = (&self.sdk, self.url.as_str());
        workflows::aws::Clients {
            acm: aws_sdk_acm::Client::from_conf(
                aws_sdk_acm::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .build(),
            ),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .build(),
            ),
            ssm: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .build(),
            ),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .build(),
            ),
            events: aws_sdk_eventbridge::Client::from_conf(
                aws_sdk_eventbridge::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .build(),
            ),
        }
    }

    /// One export job's worth of the workflow's calls, in the workflow's order, with
    /// requests and answers of the same size (the exported bundle is what the secret holds).
    /// Answers are not checked: the calls' cost is the point, not their outcome.
    async fn round(&self, clients: &workflows::aws::Clients, i: usize) {
        let name = format!("{}direct-{i}-{}", self.secret_prefix, unique("d"));
        let arn = &self.arn;
        let ssm = &clients.ssm;
        let _ = clients
            .acm
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await;
        let _ = clients
            .acm
            .list_tags_for_certificate()
            .certificate_arn(arn)
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
        let exported = clients
            .acm
            .export_certificate()
            .certificate_arn(arn)
            .passphrase(aws_sdk_acm::primitives::Blob::new("passphrase-passphrase"))
            .send()
            .await
            .ok();
        let bundle = serde_json::json!({
            "passphrase": "passphrase-passphrase",
            "certificate": exported.as_ref().and_then(|e| e.certificate()),
            "certificate_chain": exported.as_ref().and_then(|e| e.certificate_chain()),
            "private_key": exported.as_ref().and_then(|e| e.private_key()),
            "certificate_arn": arn,
        });
        let _ = clients
            .secrets
            .create_secret()
            .name(&name)
            .secret_string(bundle.to_string())
            .send()
            .await;
        let inventory = |status: &str| {
            clients
                .dynamodb
                .update_item()
                .table_name(&self.inventory_table)
                .key("TagKeyValue", AttributeValue::S("direct#x".into()))
                .key(
                    "CertificateArnCertName",
                    AttributeValue::S(format!("{arn}#{i}")),
                )
                .update_expression("SET LastStatus = :s")
                .expression_attribute_values(":s", AttributeValue::S(status.into()))
                .send()
        };
        let _ = inventory("EXPORTED").await;
        // As the install step: the tag's servers resolved, then one command per batch by
        // instance id, each waited for with its invocations (as the wait step); after the
        // last batch the servers are resolved once more (late joiners).
        let _ = ssm
            .describe_instance_information()
            .filters(self.tag_filter.clone())
            .send()
            .await;
        for ids in &self.batches {
            let sent = ssm
                .send_command()
                .document_name(&self.document_name)
                .set_instance_ids(Some(ids.clone()))
                .parameters("CertName", vec![format!("direct-{i}")])
                .parameters("SecretId", vec![name.clone()])
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
            .filters(self.tag_filter.clone())
            .send()
            .await;
        let _ = inventory("INSTALLED").await;
    }
}

/// The engine's own cost on the real backends: CPU and calls per `demo` job.
struct EngineAlone {
    jobs: usize,
    cpu_ms_per_job: f64,
    calls_per_job: f64,
    /// The calls per job by operation, for the printout.
    calls_by_op: String,
}

/// Runs `n` `demo` jobs (after one not counted) through the worker with pid `pid` over the
/// bench's task queue `tasks`, one at a time. The demo workflow's steps make no AWS call,
/// so what the worker spends on them is the engine's: its calls to the jobs table and task
/// queue (through `proxy`, counted), and its own code. The bench creates the jobs directly
/// on the emulator, outside the proxy.
async fn engine_alone(
    env: &Env,
    proxy: &FaultProxy,
    tasks: &str,
    pid: u32,
    n: usize,
) -> EngineAlone {
    use std::sync::Arc;
    use workflows::demo::{DemoState, NAME};
    let queue =
        engine::backend::sqs::SqsTaskQueue::connect(aws_sdk_sqs::Client::new(&env.sdk), tasks)
            .await
            .expect("the bench's task queue");
    let jobs = engine::Jobs::new(
        Arc::new(engine::backend::dynamodb::DynamoJobStore::new(
            aws_sdk_dynamodb::Client::new(&env.sdk),
            &env.table,
        )),
        Arc::new(queue),
        workflows::registry(env.deps.clone()),
        Arc::new(engine::SystemClock),
    );
    let run = |i: usize| {
        let jobs = &jobs;
        async move {
            let state = DemoState {
                label: format!("bench-{i}"),
                ..DemoState::default()
            };
            let new = engine::NewJob::new(NAME, None, &state).expect("a demo job");
            let created = jobs.create(new).await.expect("demo job created");
            let rec = wait_terminal(jobs, &created.record.job_id).await;
            assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
        }
    };
    run(n).await;
    proxy.clear_calls();
    let before = worker_cpu_ms(pid);
    for i in 0..n {
        run(i).await;
    }
    let cpu = worker_cpu_ms(pid) - before;
    let calls = proxy.calls();
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &calls {
        *by_op.entry(c.operation.as_str()).or_default() += 1;
    }
    EngineAlone {
        jobs: n,
        cpu_ms_per_job: cpu / n as f64,
        calls_per_job: calls.len() as f64 / n as f64,
        calls_by_op: by_op
            .iter()
            .map(|(op, k)| format!("{op} {:.2}", *k as f64 / n as f64))
            .collect::<Vec<_>>()
            .join(", "),
    }
}
