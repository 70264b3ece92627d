//! Shared set-up for certflow's end-to-end tests: the emulator's SDK configuration, fresh
//! uniquely named resources per test, helpers to run workers (in this process, or as
//! `certflow worker` processes: [`worker_process`]) and wait for jobs, the venv's AWS CLI,
//! the fault proxy ([`proxy`]) and the simulated SSM fleet it answers Run Command from
//! ([`fleet`]), and headless Chromium for the console's tests ([`browser`]).
//!
//! The README's test command starts the emulator and exports `AWS_ENDPOINT_URL`; these
//! helpers refuse to run without it rather than reach for a real AWS account.
//!
//! This crate is test support and benchmarks only: nothing here runs in a worker. A set-up
//! step that fails (`unwrap`/`expect` with the reason) fails the test that asked for it,
//! which is what a test should do. The one part that answers untrusted input, the fault
//! proxy and its simulated fleet, answers a malformed request with an error response and
//! never panics on it.

pub mod bench;
pub mod browser;
pub mod certflow;
pub mod command;
pub mod fake_aws;
pub mod fleet;
pub mod own_emulator;
pub mod proxy;
pub mod subscriber;
pub mod worker_process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::backend::dynamodb::{create_job_table, DynamoJobStore};
use engine::backend::sqs::{create_queue_with_dlq, SqsTaskQueue};
use engine::schema::JobTableSpec;
use engine::{JobId, JobRecord, Jobs, Registry, SystemClock, Worker, WorkerConfig};

/// The SDK configuration for the emulator the test command started.
///
/// # Panics
/// When `AWS_ENDPOINT_URL` is not set: the tests must never talk to a real account.
pub async fn emulator() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "AWS_ENDPOINT_URL must point at the local emulator (got {endpoint:?}); run the tests with deploy/local/test.sh"
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await
}

/// Takes (receives and deletes) every message now in the dead-letter queue at `dlq_url`:
/// its body and the reason the engine gave (`certflow-reason`; empty for a message SQS
/// moved there itself after too many receives).
pub async fn take_dead_letters(
    sdk: &aws_config::SdkConfig,
    dlq_url: &str,
) -> Vec<(String, String)> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive from a dead-letter queue");
        let msgs = got.messages.unwrap_or_default();
        if msgs.is_empty() {
            return out;
        }
        for m in msgs {
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get(engine::backend::sqs::REASON_ATTR))
                .and_then(|v| v.string_value.clone())
                .unwrap_or_default();
            if let Some(receipt) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(dlq_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("delete from a dead-letter queue");
            }
            out.push((m.body.unwrap_or_default(), reason));
        }
    }
}

/// The project venv's `bin` directory (`<repo>/.venv/bin`, made by
/// `deploy/local/emulator.sh setup`): the AWS CLI the tests run is there.
pub fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin")
}

/// Runs the project venv's AWS CLI against the emulator (`AWS_ENDPOINT_URL`, us-east-1) and
/// returns its JSON answer (`null` for a command that prints nothing).
///
/// # Panics
/// When the CLI cannot run or fails, with its error output.
pub fn aws_cli(args: &[&str]) -> serde_json::Value {
    aws_cli_in("us-east-1", args)
}

/// [`aws_cli`] in `region`.
///
/// # Panics
/// When the CLI cannot run or fails, with its error output.
pub fn aws_cli_in(region: &str, args: &[&str]) -> serde_json::Value {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let out = std::process::Command::new(venv_bin().join("aws"))
        .args(args)
        .args([
            "--endpoint-url",
            &endpoint,
            "--region",
            region,
            "--output",
            "json",
        ])
        // Never a pager between the CLI and the test.
        .env("AWS_PAGER", "")
        .output()
        .expect("run the AWS CLI from the venv");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("the AWS CLI's JSON answer")
}

/// A name nobody else in this emulator run uses.
pub fn unique(prefix: &str) -> String {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &tag[..10])
}

/// A jobs table and task queue of their own for one test, and the engine over them.
#[derive(Clone)]
pub struct Stack {
    /// The SDK configuration.
    pub sdk: aws_config::SdkConfig,
    /// The jobs table's name.
    pub table: String,
    /// The task queue.
    pub queue: SqsTaskQueue,
    /// Operations over them.
    pub jobs: Jobs,
}

impl Stack {
    /// Creates a fresh table and queue (with DLQ) and the engine over them.
    pub async fn new(prefix: &str, registry: Registry) -> Stack {
        let sdk = emulator().await;
        let table = unique(&format!("{prefix}-jobs"));
        let queue_name = unique(&format!("{prefix}-tasks"));
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        create_job_table(&ddb, &JobTableSpec::new(&table, workflows::JOB_LABELS))
            .await
            .expect("create jobs table");
        create_queue_with_dlq(&sqs, &queue_name, Duration::from_secs(30), 5)
            .await
            .expect("create task queue");
        let queue = SqsTaskQueue::connect(sqs, &queue_name)
            .await
            .expect("connect task queue");
        let jobs = Jobs::new(
            Arc::new(DynamoJobStore::new(ddb, &table)),
            Arc::new(queue.clone()),
            registry,
            Arc::new(SystemClock),
        );
        Stack {
            sdk,
            table,
            queue,
            jobs,
        }
    }

    /// A worker configuration fit for tests: short polls, leases and visibility.
    pub fn worker_config(id: &str) -> WorkerConfig {
        WorkerConfig {
            id: id.to_string(),
            concurrency: 8,
            poll_wait: Duration::from_secs(1),
            lease: Duration::from_secs(6),
            visibility: Duration::from_secs(6),
            shutdown_budget: Duration::from_secs(5),
            sweep_every: Duration::ZERO,
            ..WorkerConfig::default()
        }
    }

    /// Starts a worker in this process; stop it with [`RunningWorker::stop`].
    pub fn spawn_worker(&self, id: &str) -> RunningWorker {
        self.spawn_worker_with(Self::worker_config(id))
    }

    /// Starts a worker with its own configuration.
    pub fn spawn_worker_with(&self, config: WorkerConfig) -> RunningWorker {
        let worker = Worker::new(self.jobs.clone(), config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let w = worker.clone();
        let handle = tokio::spawn(async move {
            w.run(async {
                let _ = rx.await;
            })
            .await
        });
        RunningWorker {
            worker,
            stop: Some(tx),
            handle,
        }
    }

    /// Waits until the job is terminal (or `timeout` passes) and returns its record.
    pub async fn wait_terminal(&self, id: &JobId, timeout: Duration) -> JobRecord {
        self.wait_for(id, timeout, |r| r.status.is_terminal()).await
    }

    /// Waits until `done` holds for the job's record.
    ///
    /// # Panics
    /// When it does not hold within `timeout`.
    pub async fn wait_for(
        &self,
        id: &JobId,
        timeout: Duration,
        done: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.jobs.get(id).await.expect("read job");
            if done(&rec) {
                return rec;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "job {id} not there after {timeout:?}: {} at {} (attempt {}, last error {:?})",
                rec.status,
                rec.step,
                rec.attempt,
                rec.last_error
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes every message now in the task queue's DLQ: body and reason attribute.
    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        match self.queue.dlq_url() {
            Some(url) => take_dead_letters(&self.sdk, url).await,
            None => Vec::new(),
        }
    }
}

/// A worker running in this process.
pub struct RunningWorker {
    /// The worker (its id, its job operations).
    pub worker: Worker,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The task running it; abort it to simulate a crash.
    pub handle: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Wraps a worker task started elsewhere, with the sender that stops it.
    pub fn new(
        worker: Worker,
        stop: tokio::sync::oneshot::Sender<()>,
        handle: tokio::task::JoinHandle<()>,
    ) -> Self {
        RunningWorker {
            worker,
            stop: Some(stop),
            handle,
        }
    }

    /// Asks the worker to shut down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.handle.await;
    }

    /// Kills the worker where it stands (every in-flight handler is dropped mid-await).
    pub fn kill(self) {
        self.handle.abort();
    }
}
