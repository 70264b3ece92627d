//! `storm`: a renewal storm on the in-memory backends, with AWS's latency.
//!
//! The real export workflow (`workflows::registry`, as `certflow worker` registers it) runs
//! in this process on `engine::Worker`s over the engine's in-memory job store and queues,
//! each operation delayed by the DynamoDB or SQS call it stands for
//! ([`certflow_tests::fake_aws::SlowStore`], [`SlowQueue`]); the workflow's AWS SDK clients
//! talk to an in-process fake AWS ([`certflow_tests::fake_aws::FakeAws`]: ACM, Secrets
//! Manager, the inventory table, SSM through the simulated fleet, EventBridge) that answers
//! after AWS's typical latency ([`certflow_tests::fake_aws::LatencyModel`], figures and
//! sources printed). Export requests arrive on the intake queue spread evenly over the
//! window, one certificate and one server per request, as ACM's renewals of many
//! certificates would.
//!
//! Threads: the workers run on a runtime of their own (threads `engine-w*`); the fake AWS
//! and the fleet's event publisher on another (`fake-aws*`); the bench itself on the main
//! thread. Worker CPU is the `engine-w*` threads' scheduler time (`/proc/self/task/*/schedstat`, in ns).
//!
//! Phases:
//! 1. **storm**: `--jobs` requests over `--window-secs`; p50/p99 from request to
//!    SUCCEEDED, completed jobs per second per worker and per vCPU-second, worker CPU per
//!    job, AWS calls per job by service and operation.
//! 2. **saturation curve**: the same at each offered rate of `--rates` (jobs per minute)
//!    for `--curve-secs`; where completed throughput stops following the offered rate is
//!    the saturation point.
//! 3. **events vs polls**: `--wake-jobs` jobs with SSM's command status event published
//!    when a command ends (EventBridge → events queue → `Intent::Wake`), then without; the
//!    time from the command's success to the job's SUCCEEDED, p50/p99 each.
//! 4. **engine path**: the demo workflow (polls 0, failures 0), no latency: the engine's
//!    own CPU per job (target ≤ 2 ms).
//!
//! ```text
//! cargo run --release -p certflow-tests --bin storm -- --jobs 2000 --window-secs 60 --json /tmp/storm.json
//! cargo run --release -p certflow-tests --bin storm -- --workflow demo --jobs 2000
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certflow_tests::bench;
use certflow_tests::fake_aws::{
    CommandSent, Counts, FakeAws, LatencyModel, SlowQueue, SlowStore, LATENCY_SOURCES,
};
use certflow_tests::fleet::{Fleet, Kind};
use clap::{Parser, ValueEnum};
use engine::backend::memory::{MemoryJobStore, MemoryTaskQueue, QueueChaos};
use engine::{
    Intake, JobId, JobStatus, JobStore, Jobs, NewJob, SystemClock, TaskQueue, Worker, WorkerConfig,
};
use workflows::demo::{self, DemoState};
use workflows::export_certificate::{self, Deps, ExportConfig};

/// A renewal storm on the in-memory backends, with AWS's latency: what one worker keeps up
/// with, where it saturates, what command status events save over polls, and the engine's
/// own CPU per job.
///
/// The real export workflow runs on engine workers over the in-memory job store and
/// queues, against an in-process fake AWS; each call waits AWS's typical latency. Phases:
/// the storm (--jobs over --window-secs); the saturation curve (each of --rates for
/// --curve-secs); events vs polls (--wake-jobs with SSM's command status events, then
/// without); the engine path (--demo-jobs of the demo workflow, no latency).
// `allow_negative_numbers`: a negative number reaches its parser, which says what is wrong
// with it, instead of clap taking `-1` for an unknown flag.
#[derive(Clone, Debug, Parser)]
#[command(name = "storm", args_override_self = true)]
struct Args {
    /// Requests in the storm
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2000,
        value_parser = bench::at_least_one::<usize>,
        allow_negative_numbers = true,
    )]
    jobs: usize,
    /// The storm's requests arrive evenly over S seconds, as ACM's renewals of many
    /// certificates would (0: all at once)
    #[arg(
        long = "window-secs",
        value_name = "S",
        default_value = "60",
        value_parser = secs,
        allow_negative_numbers = true,
    )]
    window: Duration,
    /// Engine workers, sharing the queues, on one runtime
    #[arg(
        long,
        value_name = "W",
        default_value_t = 1,
        value_parser = bench::at_least_one::<usize>,
        allow_negative_numbers = true,
    )]
    workers: usize,
    /// The workers' runtime threads
    #[arg(
        long,
        value_name = "T",
        default_value_t = 2,
        value_parser = bench::at_least_one::<usize>,
        allow_negative_numbers = true,
    )]
    threads: usize,
    /// Each worker's slots (default: WorkerConfig's, 32)
    #[arg(long, value_name = "C", value_parser = bench::at_least_one::<usize>, allow_negative_numbers = true)]
    concurrency: Option<usize>,
    /// How long a task may hold short waits in-process (default: WorkerConfig's, 5; 0: every
    /// wait goes through the task queue): a held wait keeps its slot
    #[arg(
        long = "hold-waits-secs",
        value_name = "S",
        value_parser = secs,
        allow_negative_numbers = true,
    )]
    hold_waits: Option<Duration>,
    /// Offered rates of the saturation curve, jobs/min, comma-separated: where completed
    /// throughput stops following them is the saturation point
    #[arg(
        long,
        value_name = "LIST",
        default_value = "500,1000,2000,4000,8000",
        value_parser = rates,
    )]
    rates: Rates,
    /// Each curve run's arrival window, in seconds
    #[arg(
        long = "curve-secs",
        value_name = "S",
        default_value = "30",
        value_parser = curve_secs,
        allow_negative_numbers = true,
    )]
    curve: Duration,
    /// Jobs of each events-vs-polls run (over 20 s)
    #[arg(
        long = "wake-jobs",
        value_name = "N",
        default_value_t = 200,
        value_parser = bench::at_least_one::<usize>,
        allow_negative_numbers = true,
    )]
    wake_jobs: usize,
    /// Jobs of the engine-path phase: enough for a steady figure (a pass of a few seconds)
    #[arg(
        long = "demo-jobs",
        value_name = "N",
        default_value_t = 20_000,
        value_parser = bench::at_least_one::<usize>,
        allow_negative_numbers = true,
    )]
    demo_jobs: usize,
    /// How long a server takes to run the install command, which the wait step waits out
    #[arg(
        long = "install-secs",
        value_name = "S",
        default_value = "5",
        value_parser = secs,
        allow_negative_numbers = true,
    )]
    install: Duration,
    /// The storm and the curve publish SSM's command status events too (the events-vs-polls
    /// phase always runs both ways)
    #[arg(long)]
    events: bool,
    /// Multiplies every AWS latency (0: none), to see what the latency costs
    #[arg(
        long = "latency-scale",
        value_name = "F",
        default_value_t = 1.0,
        value_parser = scale,
        allow_negative_numbers = true,
    )]
    latency_scale: f64,
    /// Which workflow to run
    #[arg(long, value_enum, default_value_t = Workflow::Export)]
    workflow: Workflow,
    /// Skips the saturation curve, the longest phase
    #[arg(long = "no-curve")]
    no_curve: bool,
    /// Skips the events-vs-polls phase
    #[arg(long = "no-wake")]
    no_wake: bool,
    /// Skips the engine-path phase (unless --workflow demo, which is only that phase)
    #[arg(long = "no-demo")]
    no_demo: bool,
    /// Writes the figures as JSON (the report reads them)
    #[arg(long, value_name = "PATH")]
    json: Option<String>,
}

impl Args {
    fn demo_only(&self) -> bool {
        self.workflow == Workflow::Demo
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workflow {
    /// The real export workflow, with every phase
    Export,
    /// Only the engine-path phase (demo workflow, no latency)
    Demo,
}

/// The saturation curve's offered rates, jobs a minute.
#[derive(Clone, Debug)]
struct Rates(Vec<f64>);

/// Seconds, fractions allowed: a time the bench waits or spreads requests over.
fn secs(v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| "not a number of seconds".to_string())?;
    Duration::try_from_secs_f64(s).map_err(|_| "must be 0 or more seconds".to_string())
}

/// A curve run's window, a second or more: the jobs it offers in less are a burst rather
/// than a rate.
fn curve_secs(v: &str) -> Result<Duration, String> {
    let d = secs(v)?;
    if d < Duration::from_secs(1) {
        return Err("must be 1 second or more".into());
    }
    Ok(d)
}

/// A factor of AWS's latencies: a negative one has no meaning.
fn scale(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err("not a factor of 0 or more".into()),
    }
}

/// A comma-separated list of rates; blanks around a rate and empty entries are let go, as
/// a list typed by hand may have them.
fn rates(v: &str) -> Result<Rates, String> {
    v.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
            _ => Err(format!("{r:?} is not a rate above 0 jobs a minute")),
        })
        .collect::<Result<_, _>>()
        .map(Rates)
}

/// The prefix of the workers' runtime threads (whose CPU is the worker's).
const WORKER_THREADS: &str = "engine-w";

fn main() {
    let args = Args::parse();
    // The SDK must reach the fake only: nothing from the environment (an emulator's
    // endpoint, a profile) may redirect it. Done before any thread starts.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDSTORM");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "storm-secret");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    let workers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("the workers' runtime");
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-aws")
        .enable_all()
        .build()
        .expect("the fake AWS's runtime");
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the bench's runtime");
    main_rt.block_on(run(
        args,
        workers_rt.handle().clone(),
        fake_rt.handle().clone(),
    ));
    workers_rt.shutdown_timeout(Duration::from_secs(1));
    fake_rt.shutdown_timeout(Duration::from_secs(1));
}

/// What one storm run measured.
#[derive(Debug, Clone, Default)]
struct RunResult {
    offered_per_min: f64,
    jobs: usize,
    succeeded: usize,
    failed: usize,
    unfinished: usize,
    completed_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms_per_job: f64,
    jobs_per_s_per_vcpu: f64,
    vcpus: f64,
    wall_s: f64,
    calls: BTreeMap<String, u64>,
    /// The part of `calls` made by the engine's in-memory backends (jobs table, queues).
    engine_calls: BTreeMap<String, u64>,
    after_success: Vec<f64>,
    /// From the command status event's arrival on the events queue to SUCCEEDED, ms.
    after_event: Vec<f64>,
    /// Request to job created (the intake's lag), ms.
    intake_lag: Vec<f64>,
    /// Jobs whose history has a `woken` event.
    woken: usize,
    first_failure: Option<String>,
}

/// Where the fake reports commands, and what the publisher learnt.
struct Commands {
    /// Job id → when (epoch ms) its command was seen ended with Success.
    success_at: Mutex<HashMap<String, i64>>,
    /// Job id → when (epoch ms) its command status event reached the events queue.
    event_at: Mutex<HashMap<String, i64>>,
    /// The events queue of the current run, when events are published.
    events: Mutex<Option<MemoryTaskQueue>>,
}

async fn run(args: Args, workers_rt: tokio::runtime::Handle, fake_rt: tokio::runtime::Handle) {
    println!(
        "storm {}: {} vCPU(s) on this machine; workers on a runtime of {} thread(s), fake AWS on its own thread",
        bench::today(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.threads
    );
    let mut json = serde_json::Map::new();
    json.insert("kind".into(), "storm".into());
    json.insert("date".into(), bench::today().into());
    json.insert("workers".into(), args.workers.into());

    let demo_cpu = if args.no_demo && !args.demo_only() {
        None
    } else {
        Some(engine_path(&args, &workers_rt).await)
    };
    if args.demo_only() {
        if let (Some(path), Some(cpu)) = (&args.json, demo_cpu) {
            json.insert("engine_path_cpu_ms_per_job".into(), cpu.into());
            write_json(path, json);
        }
        return;
    }

    let latency = LatencyModel::aws_typical().scaled(args.latency_scale);
    println!("\nlatency model (median ms, by service and operation):");
    for (k, v) in latency.entries() {
        println!("  {k:<32} {v:>6.1}");
    }
    println!("  sources: {LATENCY_SOURCES}");
    json.insert(
        "latency_model".into(),
        serde_json::to_value(latency.entries()).expect("JSON"),
    );

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<CommandSent>();
    let fake = {
        let latency = latency.clone();
        fake_rt
            .spawn(async move { FakeAws::start(latency, Some(tx)).await })
            .await
            .expect("the fake AWS")
    };
    println!("fake AWS on {}", fake.url());
    let commands = Arc::new(Commands {
        success_at: Mutex::new(HashMap::new()),
        event_at: Mutex::new(HashMap::new()),
        events: Mutex::new(None),
    });
    // The command watcher: when a command ends, note when, and publish SSM's status event
    // (after EventBridge's delivery latency) if this run publishes events.
    {
        let commands = commands.clone();
        let latency = latency.clone();
        fake_rt.spawn(async move {
            while let Some(sent) = rx.recv().await {
                let commands = commands.clone();
                let latency = latency.clone();
                tokio::spawn(watch_command(sent, commands, latency));
            }
        });
    }
    Fleet::global().set_default_latency(args.install);
    // As the `certflow` binary configures the SDK (workers/src/aws.rs): no upload
    // stalled-stream check, which would wake the runtime every few ms per call in flight.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(fake.url())
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::enabled()
                .upload_enabled(false)
                .build(),
        )
        .load()
        .await;

    let storm_rate = args.jobs as f64 / args.window.as_secs_f64().max(1e-3) * 60.0;
    println!(
        "\n== storm: {} export requests over {:.0} s ({storm_rate:.0}/min), {} worker(s), install {:.1} s per server, {} ==",
        args.jobs,
        args.window.as_secs_f64(),
        args.workers,
        args.install.as_secs_f64(),
        if args.events { "command status events published" } else { "no events: the wait step polls" }
    );
    let storm = storm_run(
        &args,
        &sdk,
        &fake,
        &commands,
        &workers_rt,
        args.jobs,
        args.window,
        args.events,
        "storm",
    )
    .await;
    print_run(&storm, &args);
    print_calls(&storm);

    let mut runs = Vec::new();
    if !args.no_curve {
        println!(
            "\n== saturation curve: each rate for {:.0} s ({}) ==",
            args.curve.as_secs_f64(),
            if args.events { "events" } else { "polls" }
        );
        println!(
            "  {:>10} {:>6} {:>12} {:>9} {:>9} {:>10} {:>12} {:>6}",
            "offered/min",
            "jobs",
            "completed/s",
            "p50 ms",
            "p99 ms",
            "CPU ms/job",
            "jobs/s/vCPU",
            "vCPU"
        );
        for (i, rate) in args.rates.0.iter().enumerate() {
            let jobs = ((rate / 60.0) * args.curve.as_secs_f64()).round().max(1.0) as usize;
            let r = storm_run(
                &args,
                &sdk,
                &fake,
                &commands,
                &workers_rt,
                jobs,
                args.curve,
                args.events,
                &format!("curve{i}"),
            )
            .await;
            println!(
                "  {:>10.0} {:>6} {:>12.1} {:>9.0} {:>9.0} {:>10.2} {:>12.0} {:>6.2}{}",
                rate,
                jobs,
                r.completed_per_s,
                r.p50_ms,
                r.p99_ms,
                r.cpu_ms_per_job,
                r.jobs_per_s_per_vcpu,
                r.vcpus,
                if r.succeeded < jobs {
                    format!(
                        "  ({} succeeded, {} failed, {} unfinished)",
                        r.succeeded, r.failed, r.unfinished
                    )
                } else {
                    String::new()
                }
            );
            runs.push(r);
        }
        let followed = runs
            .iter()
            .filter(|r| r.completed_per_s >= 0.9 * r.offered_per_min / 60.0)
            .map(|r| r.offered_per_min)
            .fold(0.0, f64::max);
        println!(
            "  completed throughput follows the offered rate (within 10 %) up to {followed:.0} jobs/min; beyond, it saturates"
        );
    }

    let mut after = serde_json::Map::new();
    let mut after_event = serde_json::Map::new();
    if !args.no_wake {
        println!(
            "\n== events vs polls: {} jobs over 20 s each, install {:.1} s; time from the command's success to the job's SUCCEEDED ==",
            args.wake_jobs,
            args.install.as_secs_f64()
        );
        for (name, events) in [("events", true), ("polls", false)] {
            let r = storm_run(
                &args,
                &sdk,
                &fake,
                &commands,
                &workers_rt,
                args.wake_jobs,
                Duration::from_secs(20),
                events,
                &format!("wake-{name}"),
            )
            .await;
            let p50 = bench::percentile(&r.after_success, 50.0);
            let p99 = bench::percentile(&r.after_success, 99.0);
            println!(
                "  {name:<7} p50 {p50:>7.0} ms  p99 {p99:>7.0} ms  ({} jobs measured, {} woken by the event; request to SUCCEEDED p50 {:.0} ms, p99 {:.0} ms)",
                r.after_success.len(),
                r.woken,
                r.p50_ms,
                r.p99_ms
            );
            after.insert(name.into(), serde_json::json!({ "p50": p50, "p99": p99 }));
            if !r.after_event.is_empty() {
                let (e50, e99) = (
                    bench::percentile(&r.after_event, 50.0),
                    bench::percentile(&r.after_event, 99.0),
                );
                println!(
                    "  {:<7} p50 {e50:>7.0} ms  p99 {e99:>7.0} ms  from the event's arrival on the events queue to SUCCEEDED ({} jobs)",
                    "",
                    r.after_event.len()
                );
                after_event.insert(name.into(), serde_json::json!({ "p50": e50, "p99": e99 }));
            }
        }
        println!(
            "  (events: EventBridge's delivery to the events queue is modelled at {:.0} ms; polls: the wait step looks 2 s after sending, then 2 s, 3 s, 4.5 s … apart)",
            latency.median("events", "delivery")
        );
    }

    if let Some(path) = &args.json {
        json.insert("vcpus".into(), storm.vcpus.into());
        let mut all_runs = vec![run_json(&storm)];
        all_runs.extend(runs.iter().map(run_json));
        json.insert("runs".into(), all_runs.into());
        let per_job: serde_json::Map<String, serde_json::Value> = storm
            .calls
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    (*n as f64 / storm.succeeded.max(1) as f64).into(),
                )
            })
            .collect();
        json.insert("calls_per_job".into(), per_job.into());
        json.insert(
            "engine_path_cpu_ms_per_job".into(),
            demo_cpu.unwrap_or(0.0).into(),
        );
        json.insert("after_success_ms".into(), after.into());
        json.insert("after_event_ms".into(), after_event.into());
        write_json(path, json);
    }
}

fn run_json(r: &RunResult) -> serde_json::Value {
    serde_json::json!({
        "offered_per_min": r.offered_per_min,
        "jobs": r.jobs,
        "completed_per_s": r.completed_per_s,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "cpu_ms_per_job": r.cpu_ms_per_job,
        "jobs_per_s_per_vcpu": r.jobs_per_s_per_vcpu,
    })
}

fn write_json(path: &str, json: serde_json::Map<String, serde_json::Value>) {
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(json)).expect("JSON");
    std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("write {path}: {e}"));
    println!("\nfigures written to {path}");
}

/// Waits for command `sent` to end; notes when it succeeded, and publishes SSM's status
/// event on the run's events queue when there is one.
async fn watch_command(sent: CommandSent, commands: Arc<Commands>, latency: LatencyModel) {
    let status = loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        match Fleet::global().command(&sent.command_id) {
            Some(c) if !matches!(c.status.as_str(), "Pending" | "InProgress") => break c.status,
            Some(_) => {}
            None => return,
        }
    };
    let ended = bench::now_ms();
    if let (Some(job), "Success") = (&sent.job, status.as_str()) {
        commands
            .success_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.clone(), ended);
    }
    let queue = commands
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(queue) = queue {
        let delay = latency.draw("events", "delivery");
        tokio::time::sleep(delay).await;
        let envelope = serde_json::json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": workflows::events::COMMAND_STATUS_CHANGE,
            "source": workflows::events::SSM_SOURCE,
            "account": "123456789012",
            "time": engine::clock::rfc3339(ended),
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "command-id": sent.command_id,
                "document-name": sent.document,
                "expire-after": engine::clock::rfc3339(ended + 3_600_000),
                "parameters": sent.parameters,
                "requested-date-time": engine::clock::rfc3339(ended),
                "status": status,
            }
        });
        if queue
            .send(&envelope.to_string(), Duration::ZERO, &[])
            .await
            .is_ok()
        {
            if let Some(job) = &sent.job {
                commands
                    .event_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(job.clone(), bench::now_ms());
            }
        }
    }
}

/// How a job ended: status, updated_at, created_at, last error.
type Ended = (JobStatus, i64, i64, Option<String>);

/// One storm: fresh backends, `jobs` requests over `window`, until every job ended (or a
/// generous deadline).
#[allow(clippy::too_many_arguments)]
async fn storm_run(
    args: &Args,
    sdk: &aws_config::SdkConfig,
    fake: &FakeAws,
    commands: &Arc<Commands>,
    workers_rt: &tokio::runtime::Handle,
    jobs: usize,
    window: Duration,
    events: bool,
    run: &str,
) -> RunResult {
    fake.reset();
    commands
        .success_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let latency = fake.latency().clone();
    let counts = Counts::default();
    let clock = Arc::new(SystemClock);
    let raw_store = Arc::new(MemoryJobStore::new());
    let raw_tasks = MemoryTaskQueue::new(clock.clone(), 1, QueueChaos::default());
    let raw_intake = MemoryTaskQueue::new(clock.clone(), 2, QueueChaos::default());
    let raw_events = MemoryTaskQueue::new(clock.clone(), 3, QueueChaos::default());
    *commands.events.lock().unwrap_or_else(|e| e.into_inner()) = events.then(|| raw_events.clone());
    let slow_q = |q: &MemoryTaskQueue| -> Arc<dyn TaskQueue> {
        Arc::new(SlowQueue::new(
            Arc::new(q.clone()),
            latency.clone(),
            counts.clone(),
        ))
    };
    let store: Arc<dyn JobStore> = Arc::new(SlowStore::new(
        raw_store.clone(),
        latency.clone(),
        counts.clone(),
    ));

    let mut config = ExportConfig::new("us-east-1");
    config.secret_prefix = format!("certflow/{run}/");
    config.inventory_table = "certflow-inventory".into();
    config.document_name = "Install-ACMCertificate".into();
    // With events the looks are only the fallback: the production ceiling (a minute).
    config.wait_poll_max = export_certificate::DEFAULT_WAIT_POLL_MAX;
    let deps = Deps {
        clients: workflows::aws::Clients::new(sdk),
        config,
    };
    let jobs_api = Jobs::new(
        store,
        slow_q(&raw_tasks),
        workflows::registry(deps),
        clock.clone(),
    );

    // The requests: one certificate and one server per request.
    let tag_value = |i: usize| format!("{run}-{i}");
    let arn =
        |i: usize| format!("arn:aws:acm:us-east-1:123456789012:certificate/0f1ee7a0-{run}-{i:08}");
    let mut servers = Vec::with_capacity(jobs);
    for i in 0..jobs {
        fake.add_certificate(&arn(i), &format!("Tier={}", tag_value(i)), i as u64 + 1);
        servers.extend(Fleet::global().add(1, &[("Tier", &tag_value(i))], Kind::Ec2));
    }
    let ids: Vec<JobId> = (0..jobs)
        .map(|i| JobId::from_key(export_certificate::NAME, &format!("{run}-request-{i}")))
        .collect();

    // The workers.
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for w in 0..args.workers {
        let mut cfg = WorkerConfig {
            id: format!("storm-{run}-w{w}"),
            ..WorkerConfig::default()
        };
        if let Some(c) = args.concurrency {
            cfg.concurrency = c;
        }
        if let Some(h) = args.hold_waits {
            cfg.hold_waits = h;
        }
        let worker = Worker::new(jobs_api.clone(), cfg);
        let intakes = vec![
            Intake {
                queue: slow_q(&raw_intake),
                parse: workflows::intake::IntakeConfig::requests().parser(),
            },
            Intake {
                queue: slow_q(&raw_events),
                parse: workflows::intake::IntakeConfig::events(vec!["aws.acm".into()]).parser(),
            },
        ];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        handles.push(workers_rt.spawn(async move {
            worker
                .run_with_intakes(intakes, async {
                    let _ = stopped.await;
                })
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    counts.clear();
    fake.reset_calls();

    let cpu0 = bench::threads_cpu_ms(WORKER_THREADS);
    let started = Instant::now();
    let interval = window.as_secs_f64() / jobs as f64;
    let mut requested_at: Vec<i64> = Vec::with_capacity(jobs);
    let mut done: Vec<Option<Ended>> = vec![None; jobs];
    let mut remaining = jobs;
    let mut next = 0;
    let deadline = started + window + Duration::from_secs(180);
    let mut last_check = Instant::now();
    while remaining > 0 && Instant::now() < deadline {
        // Send what is due.
        while next < jobs && started.elapsed().as_secs_f64() >= next as f64 * interval {
            let body = serde_json::json!({
                "CertificateArn": arn(next),
                "CertName": format!("cert-{next}"),
                "TargetTagKey": "Tier",
                "TargetTagValue": tag_value(next),
                "RequestId": format!("{run}-request-{next}"),
            });
            requested_at.push(bench::now_ms());
            raw_intake
                .send(&body.to_string(), Duration::ZERO, &[])
                .await
                .expect("send to the in-memory intake queue");
            next += 1;
        }
        if last_check.elapsed() >= Duration::from_millis(250) || next == jobs {
            last_check = Instant::now();
            for i in 0..next {
                if done[i].is_some() {
                    continue;
                }
                if let Ok(Some(rec)) = raw_store.get(&ids[i]).await {
                    if rec.status.is_terminal() {
                        done[i] = Some((
                            rec.status,
                            rec.updated_at,
                            rec.created_at,
                            rec.last_error.clone(),
                        ));
                        remaining -= 1;
                    }
                }
            }
        }
        let until_next = if next < jobs {
            Duration::from_secs_f64(
                (next as f64 * interval - started.elapsed().as_secs_f64()).max(0.0),
            )
        } else {
            Duration::from_millis(250)
        };
        tokio::time::sleep(until_next.min(Duration::from_millis(250))).await;
    }
    let wall = started.elapsed();
    let cpu = bench::threads_cpu_ms(WORKER_THREADS) - cpu0;
    for stop in stops {
        let _ = stop.send(());
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
    }
    for id in &servers {
        Fleet::global().remove(id);
    }

    let mut r = RunResult {
        offered_per_min: jobs as f64 / window.as_secs_f64().max(1e-3) * 60.0,
        jobs,
        wall_s: wall.as_secs_f64(),
        ..RunResult::default()
    };
    let success_at = commands
        .success_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let event_at = commands
        .event_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut latencies = Vec::new();
    let mut ends = Vec::new();
    for (i, d) in done.iter().enumerate() {
        match d {
            Some((JobStatus::Succeeded, at, created, _)) => {
                r.succeeded += 1;
                r.intake_lag.push((created - requested_at[i]) as f64);
                if let Ok(h) = raw_store.history(&ids[i]).await {
                    if h.iter().any(|e| e.kind == engine::EventKind::Woken) {
                        r.woken += 1;
                    }
                }
                latencies.push((at - requested_at[i]) as f64);
                ends.push(*at);
                if let Some(ok) = success_at.get(ids[i].as_str()) {
                    r.after_success.push((at - ok).max(0) as f64);
                }
                if let Some(arrived) = event_at.get(ids[i].as_str()) {
                    r.after_event.push((at - arrived).max(0) as f64);
                }
            }
            Some((_, _, _, err)) => {
                r.failed += 1;
                if r.first_failure.is_none() {
                    r.first_failure = err.clone();
                }
            }
            None => r.unfinished += 1,
        }
    }
    ends.sort_unstable();
    r.completed_per_s = match (ends.first(), ends.last()) {
        (Some(a), Some(b)) if b > a => (ends.len() - 1) as f64 / ((b - a) as f64 / 1e3),
        _ => 0.0,
    };
    r.p50_ms = bench::percentile(&latencies, 50.0);
    r.p99_ms = bench::percentile(&latencies, 99.0);
    // Per job that ended: in a saturated run the unfinished jobs' work so far is in the
    // CPU and the counts too, so these are upper bounds there.
    r.cpu_ms_per_job = cpu / r.succeeded.max(1) as f64;
    r.jobs_per_s_per_vcpu = if cpu > 0.0 {
        r.succeeded as f64 / (cpu / 1e3)
    } else {
        0.0
    };
    r.vcpus = cpu / 1e3 / wall.as_secs_f64();
    let mut calls = fake.calls();
    r.engine_calls = counts.get();
    for (k, v) in &r.engine_calls {
        *calls.entry(k.clone()).or_insert(0) += v;
    }
    r.calls = calls;
    r
}

fn print_run(r: &RunResult, args: &Args) {
    println!(
        "jobs                 {} ({} SUCCEEDED, {} failed, {} unfinished) in {:.1} s{}",
        r.jobs,
        r.succeeded,
        r.failed,
        r.unfinished,
        r.wall_s,
        r.first_failure
            .as_ref()
            .map(|f| format!("; first failure: {f}"))
            .unwrap_or_default()
    );
    println!(
        "request -> SUCCEEDED p50 {:.0} ms, p99 {:.0} ms",
        r.p50_ms, r.p99_ms
    );
    println!(
        "request -> created   p50 {:.0} ms, p99 {:.0} ms (the intake's lag); {} job(s) woken by a command status event",
        bench::percentile(&r.intake_lag, 50.0),
        bench::percentile(&r.intake_lag, 99.0),
        r.woken
    );
    println!(
        "completed            {:.1} jobs/s ({:.1} per worker; offered {:.1}/s)",
        r.completed_per_s,
        r.completed_per_s / args.workers as f64,
        r.offered_per_min / 60.0
    );
    println!(
        "worker CPU           {:.2} ms per job; {:.2} vCPU busy on average; {:.0} jobs per vCPU-second",
        r.cpu_ms_per_job, r.vcpus, r.jobs_per_s_per_vcpu
    );
}

fn print_calls(r: &RunResult) {
    println!(
        "AWS calls per job (the workflow's through the SDK to the fake AWS, and the engine's jobs table and queues, in memory):"
    );
    println!("  {:<36} {:>7} {:>8}", "", "all", "engine");
    let mut total = 0.0;
    let mut engine_total = 0.0;
    for (k, n) in &r.calls {
        let per = *n as f64 / r.succeeded.max(1) as f64;
        let engine = r.engine_calls.get(k).copied().unwrap_or(0) as f64 / r.succeeded.max(1) as f64;
        total += per;
        engine_total += engine;
        println!("  {k:<36} {per:>7.2} {engine:>8.2}");
    }
    let receives =
        r.calls.get("sqs ReceiveMessage").copied().unwrap_or(0) as f64 / r.succeeded.max(1) as f64;
    println!(
        "  total {total:.2} per job ({:.2} without ReceiveMessage, whose empty long polls are idle cost); the engine's {engine_total:.2}",
        total - receives
    );
    println!(
        "  note: the engine's calls here cost no SDK work (in-memory backends, only their latency is simulated); the worker CPU above is the engine's own plus the workflow's {:.2} SDK calls per job. export_bench measures the SDK's cost per call.",
        total - engine_total
    );
}

/// The engine's own path: demo jobs (four steps fused in one task), no latency, submitted
/// up front; the workers' CPU per job.
async fn engine_path(args: &Args, workers_rt: &tokio::runtime::Handle) -> f64 {
    let jobs = args.demo_jobs;
    println!(
        "\n== engine path: {jobs} demo jobs (polls 0, failures 0), in-memory backends, no latency =="
    );
    let clock = Arc::new(SystemClock);
    let store = Arc::new(MemoryJobStore::new());
    let tasks = MemoryTaskQueue::new(clock.clone(), 9, QueueChaos::default());
    let jobs_api = Jobs::new(
        store.clone(),
        Arc::new(tasks),
        engine::Registry::new().register(demo::workflow()),
        clock,
    );
    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let state = DemoState {
            label: format!("demo-{i}"),
            polls: 0,
            failures: 0,
            fail: false,
        };
        let new = NewJob::new(demo::NAME, Some(&format!("demo-{i}")), &state).expect("a demo job");
        ids.push(
            jobs_api
                .create(new)
                .await
                .expect("create a demo job")
                .record
                .job_id,
        );
    }
    let cpu0 = bench::threads_cpu_ms(WORKER_THREADS);
    let started = Instant::now();
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for w in 0..args.workers {
        let mut cfg = WorkerConfig {
            id: format!("storm-demo-w{w}"),
            ..WorkerConfig::default()
        };
        if let Some(c) = args.concurrency {
            cfg.concurrency = c;
        }
        let worker = Worker::new(jobs_api.clone(), cfg);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        handles.push(workers_rt.spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }));
    }
    let mut left: Vec<JobId> = ids;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut still = Vec::new();
        for id in left {
            match store.get(&id).await {
                Ok(Some(rec)) if rec.status.is_terminal() => {}
                _ => still.push(id),
            }
        }
        left = still;
    }
    let wall = started.elapsed();
    let cpu = bench::threads_cpu_ms(WORKER_THREADS) - cpu0;
    for stop in stops {
        let _ = stop.send(());
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
    }
    let per_job = cpu / jobs as f64;
    println!(
        "{} of {jobs} jobs ended in {:.2} s ({:.0} jobs/s); worker CPU {per_job:.3} ms per job [target <= 2 ms: {}] ({cpu:.1} ms in all; no SDK: the backends are in memory)",
        jobs - left.len(),
        wall.as_secs_f64(),
        (jobs - left.len()) as f64 / wall.as_secs_f64(),
        if per_job <= 2.0 { "met" } else { "MISSED" }
    );
    per_job
}
