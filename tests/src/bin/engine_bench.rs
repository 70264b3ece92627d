//! `engine-bench`: pushes N jobs of the demo workflow through in-process engine workers on
//! the emulator and prints throughput, the AWS API calls the engine made (counted on the wire
//! by an SDK interceptor, one per attempt, retries included) by service and operation, worker
//! CPU per job and peak RSS, next to the targets of issue 2. It asserts nothing.
//!
//! ```sh
//! deploy/local/emulator.sh start && source .local/emulator.env
//! cargo run --release -p certflow-tests --bin engine-bench -- --jobs 256 --workers 2 --concurrency 64
//! ```
//!
//! Flags (and the environment variables that set their defaults): `--jobs N` (`BENCH_JOBS`,
//! 256), `--workers W` (`BENCH_WORKERS`, 2), `--concurrency C` (`BENCH_CONCURRENCY`, 64),
//! `--lease-secs L` (`BENCH_LEASE_SECS`, 6, the tests' setting: lease and message visibility;
//! heartbeats come every third of it), `--phase P` (`BENCH_PHASE`: `fused`, `timers` or
//! `all`), `--timeout-secs S` (`BENCH_TIMEOUT_SECS`, 600: a phase that takes longer is
//! reported as unfinished), `--sdk-default-retries` (`BENCH_SDK_DEFAULT_RETRIES=1`: see below).
//!
//! Two phases, each on fresh resources: `fused` (polls=0, failures=0: four steps run back to
//! back in one task, the pure engine path) and `timers` (polls=1, failures=1: a durable timer
//! and a retry with backoff, so three task hand-offs through the queue).
//!
//! How it measures:
//! - The workers run on a runtime of their own; the bench (job submission, polling for
//!   completion) runs on the main thread. Each side has its own SDK clients (and so its own
//!   connection pool), so the worker threads' CPU time is the workers' own.
//! - Engine calls are the workers' calls plus `Jobs::create` (a producer's cost per job);
//!   the bench's own polling is counted apart and left out of the per-job figures.
//! - Resource set-up is counted apart too.
//! - moto answers some concurrent `TransactWriteItems` with a 500 (its transaction code
//!   deep-copies the table while other requests change it). The bench's clients therefore
//!   retry up to 10 attempts without a retry quota, so that emulator faults do not turn into
//!   engine recovery (a message waiting out its visibility); the 5xx attempts are reported in
//!   their own column. `--sdk-default-retries` keeps the SDK's default retry policy instead.
//! - moto closes every connection after one response, so each call also pays for a new TCP
//!   connection; its transactions copy the whole table, so it slows down (and grows: several
//!   GB) as the table fills. Run one phase per fresh emulator for 256 jobs, and a lower
//!   `--concurrency` with `--lease-secs 60` to keep slow emulator answers from lapsing leases
//!   (see docs/benchmarks.md).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::RetryConfig;
use certflow_tests::{bench, emulator, unique, Stack};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::Parser;
use engine::backend::dynamodb::{create_job_table, DynamoJobStore};
use engine::backend::sqs::{create_queue_with_dlq, SqsTaskQueue};
use engine::schema::JobTableSpec;
use engine::{EventKind, JobId, JobStatus, Jobs, JobsError, NewJob, Registry, SystemClock, Worker};
use workflows::demo::{self, DemoState};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Engine API calls per step, on average, at most.
const TARGET_CALLS_PER_STEP: f64 = 4.0;
/// Worker CPU per job, at most.
const TARGET_CPU_MS_PER_JOB: f64 = 2.0;
/// Peak resident memory with 256 jobs in flight, at most.
const TARGET_RSS_MB: f64 = 64.0;
/// How often the bench looks whether every job is finished.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often progress goes to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Jobs submitted at once.
const SUBMIT_PARALLEL: usize = 16;
/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on every Linux we run on).
const USER_HZ: f64 = 100.0;

// ------------------------------------------------------------------------ arguments ----

struct Args {
    jobs: usize,
    workers: usize,
    concurrency: usize,
    lease: Duration,
    phase: String,
    timeout: Duration,
    sdk_default_retries: bool,
}

/// Pushes jobs of the demo workflow through in-process engine workers on the emulator and
/// prints throughput, the AWS calls the engine made, worker CPU per job and peak RSS, next
/// to the targets of issue 2.
///
/// Needs AWS_ENDPOINT_URL pointing at the local emulator (deploy/local/emulator.sh start).
/// Each flag not given is taken from the environment variable named beside it.
#[derive(Parser)]
#[command(name = "engine-bench", args_override_self = true)]
struct Cli {
    /// Jobs per phase
    #[arg(long, env = "BENCH_JOBS", value_name = "N", default_value_t = 256, value_parser = bench::at_least_one::<u64>)]
    jobs: u64,
    /// Worker runtimes in this process
    #[arg(long, env = "BENCH_WORKERS", value_name = "W", default_value_t = 2, value_parser = bench::at_least_one::<u64>)]
    workers: u64,
    /// Step tasks handled at once per worker
    #[arg(long, env = "BENCH_CONCURRENCY", value_name = "C", default_value_t = 64, value_parser = bench::at_least_one::<u64>)]
    concurrency: u64,
    /// Lease and message visibility, heartbeat every L/3: 6 as in the tests (a worker's
    /// default is 60, which keeps slow emulator answers from lapsing leases)
    #[arg(long = "lease-secs", env = "BENCH_LEASE_SECS", value_name = "L", default_value_t = 6, value_parser = bench::at_least_one::<u64>)]
    lease_secs: u64,
    /// Which phases to run, each on fresh resources
    #[arg(long, env = "BENCH_PHASE", value_name = "P", default_value = "all", value_parser = phases())]
    phase: String,
    /// Give up on a phase after S seconds and report it as unfinished
    #[arg(long = "timeout-secs", env = "BENCH_TIMEOUT_SECS", value_name = "S", default_value_t = 600, value_parser = bench::at_least_one::<u64>)]
    timeout_secs: u64,
    /// Keep the SDK's default retry policy (BENCH_SDK_DEFAULT_RETRIES=1 also does); by
    /// default the bench retries the emulator's spurious 500s up to 10 attempts, so that
    /// emulator faults do not turn into engine recovery
    #[arg(long = "sdk-default-retries", env = "BENCH_SDK_DEFAULT_RETRIES", value_parser = clap::builder::FalseyValueParser::new())]
    sdk_default_retries: bool,
}

/// `--phase`'s values come from [`PHASES`], so that a phase added there is accepted and
/// described in `--help` too.
fn phases() -> PossibleValuesParser {
    PossibleValuesParser::new(
        PHASES
            .iter()
            .map(|p| PossibleValue::new(p.name).help(p.what))
            .chain([PossibleValue::new("all").help("each phase in turn")]),
    )
}

/// The command line (and environment); a bad value ends the run with clap's error (exit
/// code 2).
fn parse_args() -> Args {
    let cli = Cli::parse();
    Args {
        jobs: cli.jobs as usize,
        workers: cli.workers as usize,
        concurrency: cli.concurrency as usize,
        lease: Duration::from_secs(cli.lease_secs),
        phase: cli.phase,
        timeout: Duration::from_secs(cli.timeout_secs),
        sdk_default_retries: cli.sdk_default_retries,
    }
}

// --------------------------------------------------------------- counting AWS calls ----

/// Attempts made on the wire for one operation; how many of them got a 4xx (a failed
/// condition check is a 400) or a 5xx or no response at all (an emulator fault, retried);
/// and how many finished at all: an attempt whose future was dropped while the request was
/// in flight (a `select!` that went another way) never does.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    attempts: u64,
    finished: u64,
    client_errors: u64,
    server_errors: u64,
}

impl Tally {
    fn dropped(&self) -> u64 {
        self.attempts.saturating_sub(self.finished)
    }
}

/// `(service, operation)` to its tally.
#[derive(Debug, Clone, Default)]
struct Calls(BTreeMap<(String, String), Tally>);

impl Calls {
    fn total(&self) -> u64 {
        self.0.values().map(|t| t.attempts).sum()
    }

    fn merge(&mut self, other: Calls) {
        for (key, t) in other.0 {
            let mine = self.0.entry(key).or_default();
            mine.attempts += t.attempts;
            mine.finished += t.finished;
            mine.client_errors += t.client_errors;
            mine.server_errors += t.server_errors;
        }
    }

    fn server_errors(&self) -> u64 {
        self.0.values().map(|t| t.server_errors).sum()
    }

    fn client_errors(&self) -> u64 {
        self.0.values().map(|t| t.client_errors).sum()
    }

    fn dropped(&self) -> u64 {
        self.0.values().map(Tally::dropped).sum()
    }

    fn of(&self, operation: &str) -> u64 {
        self.0
            .iter()
            .filter(|((_, op), _)| op == operation)
            .map(|(_, t)| t.attempts)
            .sum()
    }

    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|((_, op), t)| format!("{op} {}", t.attempts))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An SDK interceptor that counts every attempt a client transmits, by operation.
#[derive(Debug, Clone, Default)]
struct CallCounter {
    calls: Arc<Mutex<Calls>>,
}

impl CallCounter {
    /// The calls counted so far; the counter starts again from zero.
    fn take(&self) -> Calls {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn bump(&self, cfg: &ConfigBag, f: impl FnOnce(&mut Tally)) {
        let key = match cfg.load::<Metadata>() {
            Some(m) => (m.service().to_string(), m.name().to_string()),
            None => ("?".to_string(), "?".to_string()),
        };
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        f(calls.0.entry(key).or_default());
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "engine-bench-call-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, |t| t.attempts += 1);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let status = context.response().map(|r| r.status().as_u16());
        self.bump(cfg, |t| {
            t.finished += 1;
            match status {
                Some(200..=399) => {}
                Some(400..=499) => t.client_errors += 1,
                _ => t.server_errors += 1,
            }
        });
        Ok(())
    }
}

/// How the bench's clients retry: the SDK's default, or patient with the emulator.
#[derive(Debug, Clone, Copy)]
struct Retries {
    sdk_default: bool,
}

impl Retries {
    fn config(self) -> Option<RetryConfig> {
        (!self.sdk_default).then(|| {
            RetryConfig::standard()
                .with_max_attempts(10)
                .with_max_backoff(Duration::from_secs(2))
        })
    }

    fn partition(self, service: &'static str) -> Option<RetryPartition> {
        (!self.sdk_default).then(|| {
            RetryPartition::custom(format!("engine-bench-{service}"))
                .token_bucket(TokenBucket::unlimited())
                .build()
        })
    }
}

fn dynamodb(
    sdk: &aws_config::SdkConfig,
    counter: &CallCounter,
    retries: Retries,
) -> aws_sdk_dynamodb::Client {
    let mut conf = aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(counter.clone());
    if let (Some(config), Some(partition)) = (retries.config(), retries.partition("dynamodb")) {
        conf = conf.retry_config(config).retry_partition(partition);
    }
    aws_sdk_dynamodb::Client::from_conf(conf.build())
}

fn sqs(
    sdk: &aws_config::SdkConfig,
    counter: &CallCounter,
    retries: Retries,
) -> aws_sdk_sqs::Client {
    let mut conf = aws_sdk_sqs::config::Builder::from(sdk).interceptor(counter.clone());
    if let (Some(config), Some(partition)) = (retries.config(), retries.partition("sqs")) {
        conf = conf.retry_config(config).retry_partition(partition);
    }
    aws_sdk_sqs::Client::from_conf(conf.build())
}

// ------------------------------------------------------------------ CPU and memory ----

/// utime + stime of a `/proc/.../stat` line, in ms.
fn stat_cpu_ms(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name: state is the 3rd field of the line,
    // utime the 14th and stime the 15th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 * 1000.0 / USER_HZ)
}

fn process_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_ms(&s))
        .unwrap_or(0.0)
}

/// CPU time of the given threads of this process, in ms.
fn threads_cpu_ms(tids: &[u32]) -> f64 {
    tids.iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok())
        .filter_map(|s| stat_cpu_ms(&s))
        .sum()
}

/// The calling thread's id.
fn current_tid() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// A `kB` line of `/proc/self/status` (`VmHWM`, `VmRSS`), in MB.
fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ------------------------------------------------------------------------- phases ----

struct PhaseSpec {
    name: &'static str,
    polls: u32,
    failures: u32,
    what: &'static str,
}

const PHASES: [PhaseSpec; 2] = [
    PhaseSpec {
        name: "fused",
        polls: 0,
        failures: 0,
        what: "polls=0, failures=0: 4 steps fused in one task, the pure engine path",
    },
    PhaseSpec {
        name: "timers",
        polls: 1,
        failures: 1,
        what: "polls=1, failures=1: a 1 s durable timer and a retry with backoff",
    },
];

/// Fresh resources and the three views of them the bench uses.
struct Rig {
    set_up: Calls,
    /// Used only by the workers, only on the worker runtime.
    engine: Jobs,
    /// Used to submit jobs, on the bench's thread; counted as engine calls.
    producer: Jobs,
    /// Used to watch the jobs; counted apart.
    observer: Jobs,
}

struct Counters {
    /// The workers' calls.
    engine: CallCounter,
    /// `Jobs::create`'s calls (engine calls too, made on the bench's thread).
    producer: CallCounter,
    /// The bench's own polling.
    bench: CallCounter,
    retries: Retries,
}

fn registry() -> Registry {
    Registry::new().register(demo::workflow())
}

fn jobs_over(ddb: aws_sdk_dynamodb::Client, table: &str, queue: SqsTaskQueue) -> Jobs {
    Jobs::new(
        Arc::new(DynamoJobStore::new(ddb, table)),
        Arc::new(queue),
        registry(),
        Arc::new(SystemClock),
    )
}

async fn rig(phase: &str, counters: &Counters) -> BenchResult<Rig> {
    // Two SDK configurations, so that the workers' connections are opened (and driven) on
    // the worker runtime and the bench's on its own thread.
    let worker_sdk = emulator().await;
    let bench_sdk = emulator().await;
    let table = unique(&format!("bench-{phase}-jobs"));
    let queue_name = unique(&format!("bench-{phase}-tasks"));
    let retries = counters.retries;
    let setup_ddb = dynamodb(&bench_sdk, &counters.engine, retries);
    let setup_sqs = sqs(&bench_sdk, &counters.engine, retries);
    create_job_table(
        &setup_ddb,
        &JobTableSpec::new(&table, workflows::JOB_LABELS),
    )
    .await?;
    create_queue_with_dlq(&setup_sqs, &queue_name, Duration::from_secs(30), 5).await?;
    let queue = SqsTaskQueue::connect(setup_sqs, &queue_name).await?;
    let set_up = counters.engine.take();
    counters.producer.take();
    counters.bench.take();
    let (url, dlq) = (queue.url().to_string(), queue.dlq_url().map(str::to_string));
    let on = |sdk: &aws_config::SdkConfig, counter: &CallCounter| {
        jobs_over(
            dynamodb(sdk, counter, retries),
            &table,
            SqsTaskQueue::from_urls(sqs(sdk, counter, retries), url.clone(), dlq.clone()),
        )
    };
    Ok(Rig {
        engine: on(&worker_sdk, &counters.engine),
        producer: on(&bench_sdk, &counters.producer),
        observer: on(&bench_sdk, &counters.bench),
        set_up,
    })
}

/// Whether any job is not finished yet.
async fn any_active(observer: &Jobs) -> BenchResult<bool> {
    for status in JobStatus::ACTIVE {
        if !observer.list(status, 1, None).await?.jobs.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How many jobs are not finished (each counted once, though it may change status while
/// the statuses are listed one after the other).
async fn active_jobs(observer: &Jobs) -> BenchResult<usize> {
    let mut ids = std::collections::HashSet::new();
    for status in JobStatus::ACTIVE {
        let mut cursor = None;
        loop {
            let page = observer.list(status, 100, cursor).await?;
            ids.extend(page.jobs.into_iter().map(|j| j.job_id));
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    Ok(ids.len())
}

/// Creates a job; a failed create is tried again (the key makes that safe), as a producer
/// would.
async fn submit(producer: Jobs, new: NewJob) -> BenchResult<JobId> {
    let mut tries = 1;
    loop {
        match producer.create(new.clone()).await {
            Ok(created) => return Ok(created.record.job_id),
            Err(e) if tries < 5 => {
                eprintln!("engine-bench: create {} failed, trying again: {e}", new.id);
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

struct Outcome {
    jobs: usize,
    finished: bool,
    wall: Duration,
    submit: Duration,
    in_flight_after_submit: usize,
    statuses: BTreeMap<&'static str, usize>,
    events: BTreeMap<&'static str, usize>,
    steps: usize,
    set_up: Calls,
    engine: Calls,
    producer_calls: u64,
    bench_polls: Calls,
    worker_cpu_ms: f64,
    process_cpu_ms: f64,
    rss_before_mb: f64,
    peak_rss_mb: Option<f64>,
    peak_reset: bool,
}

async fn run_phase(
    spec: &PhaseSpec,
    args: &Args,
    counters: &Counters,
    workers_rt: &tokio::runtime::Handle,
    worker_tids: &Arc<Mutex<Vec<u32>>>,
) -> BenchResult<Outcome> {
    let rig = rig(spec.name, counters).await?;
    let tids = || {
        worker_tids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };

    let peak_reset = reset_peak_rss();
    let rss_before_mb = status_mb("VmRSS:").unwrap_or(0.0);
    let started = Instant::now();
    let cpu0 = process_cpu_ms();
    let wcpu0 = threads_cpu_ms(&tids());

    let mut workers = Vec::new();
    for i in 0..args.workers {
        let mut config = Stack::worker_config(&format!("bench-{}-w{i}", spec.name));
        config.concurrency = args.concurrency;
        config.poll_wait = Duration::from_secs(1);
        config.lease = args.lease;
        config.visibility = args.lease;
        config.sweep_every = Duration::ZERO;
        let worker = Worker::new(rig.engine.clone(), config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = workers_rt.spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        workers.push((stop, handle));
    }

    let run = unique(&format!("bench-{}", spec.name));
    let mut ids: Vec<JobId> = Vec::with_capacity(args.jobs);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..args.jobs {
        if pending.len() >= SUBMIT_PARALLEL {
            if let Some(done) = pending.join_next().await {
                ids.push(done??);
            }
        }
        let label = format!("{run}-{i}");
        let state = DemoState {
            label: label.clone(),
            polls: spec.polls,
            failures: spec.failures,
            fail: false,
        };
        let new = NewJob::new(demo::NAME, Some(&label), &state)?;
        pending.spawn(submit(rig.producer.clone(), new));
    }
    while let Some(done) = pending.join_next().await {
        ids.push(done??);
    }
    let submit = started.elapsed();
    let in_flight_after_submit = active_jobs(&rig.observer).await?;

    let mut progress = Instant::now();
    let finished = loop {
        if !any_active(&rig.observer).await? {
            break true;
        }
        if started.elapsed() >= args.timeout {
            break false;
        }
        if progress.elapsed() >= PROGRESS_EVERY {
            progress = Instant::now();
            eprintln!(
                "engine-bench: {}: {} of {} jobs active after {:.0} s",
                spec.name,
                active_jobs(&rig.observer).await?,
                ids.len(),
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    let wall = started.elapsed();
    let process_cpu_ms = process_cpu_ms() - cpu0;
    let worker_cpu_ms = threads_cpu_ms(&tids()) - wcpu0;
    let peak_rss_mb = status_mb("VmHWM:");

    for (stop, handle) in workers {
        let _ = stop.send(());
        handle.await?;
    }
    let mut engine = counters.engine.take();
    let producer = counters.producer.take();
    let producer_calls = producer.total();
    engine.merge(producer);
    let bench_polls = counters.bench.take();

    let mut statuses = BTreeMap::new();
    let mut events = BTreeMap::new();
    let mut steps = 0;
    for id in &ids {
        let status = match rig.observer.get(id).await {
            Ok(record) => record.status.as_str(),
            // Only the emulator loses records: a transaction it cancels restores a copy of
            // the whole table taken when it started, undoing every write made meanwhile.
            Err(JobsError::NotFound(_)) => "MISSING",
            Err(e) => return Err(e.into()),
        };
        *statuses.entry(status).or_insert(0) += 1;
        for event in rig.observer.history(id).await? {
            *events.entry(event.kind.as_str()).or_insert(0) += 1;
            if event.kind != EventKind::Created {
                steps += 1;
            }
        }
    }
    counters.bench.take();

    Ok(Outcome {
        jobs: ids.len(),
        finished,
        wall,
        submit,
        in_flight_after_submit,
        statuses,
        events,
        steps,
        set_up: rig.set_up,
        engine,
        producer_calls,
        bench_polls,
        worker_cpu_ms,
        process_cpu_ms,
        rss_before_mb,
        peak_rss_mb,
        peak_reset,
    })
}

// ------------------------------------------------------------------------ output ----

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn per(n: f64, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n / d as f64
    }
}

fn print_phase(spec: &PhaseSpec, o: &Outcome) {
    let jobs = o.jobs;
    let steps = o.steps;
    let total = o.engine.total();
    let receives = o.engine.of("ReceiveMessage");
    let faults = o.engine.server_errors();
    let calls_per_step = per(total as f64, steps);
    let worker_ms = per(o.worker_cpu_ms, jobs);
    let process_ms = per(o.process_cpu_ms, jobs);
    let secs = o.wall.as_secs_f64();
    let joined = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let calls = |label: &str, n: u64, note: &str| {
        println!(
            "  {label:<30} {n:>6} = {:>6.2} per job, {:>5.2} per step{note}",
            per(n as f64, jobs),
            per(n as f64, steps)
        );
    };

    println!();
    println!("== phase {}: {} ==", spec.name, spec.what);
    if !o.finished {
        println!("!! NOT FINISHED: jobs were still active at the timeout; the figures are partial");
    }
    println!(
        "set-up (not counted below)  {} calls ({})",
        o.set_up.total(),
        o.set_up.summary()
    );
    println!(
        "jobs                        {jobs} ({})",
        joined(&o.statuses)
    );
    println!(
        "steps                       {steps} = {:.2} per job (history events other than `created`: {})",
        per(steps as f64, jobs),
        joined(&o.events)
    );
    println!(
        "wall                        {secs:.2} s (submission {:.2} s; completion seen by polling every {} ms)",
        o.submit.as_secs_f64(),
        POLL_EVERY.as_millis()
    );
    println!(
        "throughput                  {:.1} jobs/s",
        jobs as f64 / secs
    );
    println!(
        "engine AWS calls            {calls_per_step:.2} per step   [target <= {TARGET_CALLS_PER_STEP:.0}: {}]",
        verdict(calls_per_step <= TARGET_CALLS_PER_STEP)
    );
    calls("all attempts", total, "");
    calls(
        "ReceiveMessage",
        receives,
        "  (long polls, empty ones included: idle cost)",
    );
    calls(
        "emulator 5xx, retried",
        faults,
        "  (moto faults, not engine work)",
    );
    calls("without both", total - receives - faults, "");
    println!(
        "worker CPU                  {worker_ms:.2} ms per job   [target <= {TARGET_CPU_MS_PER_JOB:.0} ms: {}] (worker runtime threads)",
        verdict(worker_ms <= TARGET_CPU_MS_PER_JOB)
    );
    let worker_calls = total - o.producer_calls;
    println!(
        "                            = {:.2} ms per worker call ({worker_calls} calls; Jobs::create's {} are made on the bench's thread)",
        per(o.worker_cpu_ms, worker_calls as usize),
        o.producer_calls
    );
    println!(
        "process CPU                 {process_ms:.2} ms per job (includes the bench's own job submission and polling)"
    );
    match o.peak_rss_mb {
        Some(peak) => {
            println!(
                "peak RSS                    {peak:.1} MB   [target <= {TARGET_RSS_MB:.0} MB with 256 jobs in flight: {}]",
                verdict(peak <= TARGET_RSS_MB)
            );
            println!(
                "                            (VmHWM{}; {:.1} MB before the workers started; {} jobs in flight after submission)",
                if o.peak_reset {
                    ", reset at phase start"
                } else {
                    " since process start"
                },
                o.rss_before_mb,
                o.in_flight_after_submit
            );
        }
        None => println!("peak RSS                    unknown (no /proc/self/status)"),
    }
    println!(
        "bench polling               {} calls (not counted above)",
        o.bench_polls.total()
    );
    println!();
    println!(
        "  {:<9} {:<24} {:>7} {:>9} {:>9} {:>6} {:>6} {:>8}",
        "service", "operation", "calls", "per job", "per step", "4xx", "5xx", "dropped"
    );
    for ((service, op), t) in &o.engine.0 {
        println!(
            "  {:<9} {:<24} {:>7} {:>9.2} {:>9.2} {:>6} {:>6} {:>8}",
            service,
            op,
            t.attempts,
            per(t.attempts as f64, jobs),
            per(t.attempts as f64, steps),
            t.client_errors,
            t.server_errors,
            t.dropped()
        );
    }
    println!(
        "  {:<9} {:<24} {:>7} {:>9.2} {:>9.2} {:>6} {:>6} {:>8}",
        "",
        "total",
        total,
        per(total as f64, jobs),
        calls_per_step,
        o.engine.client_errors(),
        faults,
        o.engine.dropped()
    );
    println!(
        "  (4xx: failed conditions; 5xx: emulator faults, retried; dropped: requests abandoned in flight)"
    );
}

fn main() {
    let args = parse_args();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let worker_tids = Arc::new(Mutex::new(Vec::new()));
    let tids = Arc::clone(&worker_tids);
    let workers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("engine-worker")
        // Blocking threads that exit would take their CPU time with them.
        .thread_keep_alive(Duration::from_secs(3_600))
        .on_thread_start(move || {
            if let Some(tid) = current_tid() {
                tids.lock().unwrap_or_else(|e| e.into_inner()).push(tid);
            }
        })
        .enable_all()
        .build()
        .expect("worker runtime");
    let bench_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("bench runtime");

    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    println!(
        "certflow engine bench, {}: {} jobs per phase, {} workers x concurrency {}, poll wait 1 s, lease and visibility {} s, sweeper off",
        certflow_tests::bench::today(),
        args.jobs,
        args.workers,
        args.concurrency,
        args.lease.as_secs()
    );
    println!(
        "SDK retries: {}",
        if args.sdk_default_retries {
            "the SDK's defaults"
        } else {
            "up to 10 attempts, no retry quota (the emulator answers some concurrent transactions with a 500)"
        }
    );
    println!(
        "machine: {cores} cores; emulator: moto at {endpoint}; worker runtime: {cores} threads; bench: main thread"
    );

    let counters = Counters {
        engine: CallCounter::default(),
        producer: CallCounter::default(),
        bench: CallCounter::default(),
        retries: Retries {
            sdk_default: args.sdk_default_retries,
        },
    };
    let mut failed = false;
    for spec in PHASES
        .iter()
        .filter(|p| args.phase == "all" || args.phase == p.name)
    {
        let outcome = bench_rt.block_on(run_phase(
            spec,
            &args,
            &counters,
            workers_rt.handle(),
            &worker_tids,
        ));
        match outcome {
            Ok(o) => {
                failed |= !o.finished;
                print_phase(spec, &o);
            }
            Err(e) => {
                eprintln!("engine-bench: phase {} failed: {e}", spec.name);
                failed = true;
            }
        }
    }
    println!();
    println!("CPU from /proc (utime+stime, {USER_HZ} Hz ticks); calls counted per attempt by an SDK interceptor; no log subscriber installed.");
    println!("moto answers every request with `Connection: close`, so each call here also opens a TCP connection.");
    workers_rt.shutdown_background();
    if failed {
        std::process::exit(1);
    }
}
