//! The AWS SDK settings a `certflow worker` process runs with (issue 7: retries and
//! timeouts chosen deliberately, README "AWS calls: retries and timeouts"), through the
//! fault proxy:
//!
//! - a long poll outlives the per-attempt timeout (it gets its wait on top);
//! - a call that hangs is abandoned after the attempt timeout and retried by the SDK,
//!   inside the step: the step does not fail and the job's history shows no retry;
//! - throttling is retried by the SDK, and the throttled calls never reached AWS;
//! - what the SDK gives up on (every attempt answered 503) becomes one durable step retry
//!   in the job's history, and the job still succeeds.
//!
//! Run with the emulator and the binary built: `cargo build --workspace --bins`,
//! `deploy/local/emulator.sh start && source .local/emulator.env`, then
//! `cargo test -p certflow-tests --test aws_calls -- --nocapture`.

mod chaos_support;

use std::time::Duration;

use certflow_tests::certflow::Env;
use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
use certflow_tests::unique;
use certflow_tests::worker_process::WorkerProcess;
use chaos_support::{
    commands_by_comment, issued_certificates, log_dir, not_succeeded, payload, store,
    tagged_instances, wait_all, worker,
};
use engine::{EventKind, HistoryEvent, JobId, JobStore};

/// Waits for job `id` to succeed; returns its history and the retries in it.
async fn succeeded(
    env: &Env,
    worker: &WorkerProcess,
    id: &JobId,
) -> (Vec<HistoryEvent>, Vec<HistoryEvent>) {
    let records = wait_all(
        env,
        std::slice::from_ref(id),
        Duration::from_secs(120),
        "aws-calls",
    )
    .await;
    assert!(
        not_succeeded(std::slice::from_ref(id), &records).is_empty(),
        "{:?}\nworker log ends:\n{}",
        records.get(id),
        worker.log_tail(40)
    );
    let history = store(env).history(id).await.expect("history");
    let retries = history
        .iter()
        .filter(|e| e.kind == EventKind::RetryScheduled)
        .cloned()
        .collect();
    (history, retries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_absorbs_hangs_and_throttling_and_the_engine_retries_what_it_gives_up_on() {
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let proxy = FaultProxy::start(&emulator, 11).await;
    let env = Env::new().await;
    let tag = unique("sdk");
    tagged_instances(&env, 1, "Environment", &tag);
    let arns = issued_certificates(&env, 2).await;
    for arn in &arns {
        env.allow(arn, "Environment", &tag).await;
    }
    let logs = log_dir("aws-calls");
    // A 4 s attempt timeout and 8 s long polls: without the long-poll allowance every
    // receive would time out.
    let worker = worker(&env, &proxy.url(), "sdk-a", &logs)
        .args(["--poll-wait-secs", "8", "--sweep-every-secs", "0"])
        .env("CERTFLOW_AWS_ATTEMPT_TIMEOUT_SECS", "4")
        .spawn();
    let receives = || -> Vec<_> {
        proxy
            .calls()
            .into_iter()
            .filter(|c| c.operation == "ReceiveMessage")
            .collect()
    };
    let started = std::time::Instant::now();
    while receives().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never polled; its log ends:\n{}",
            worker.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Idle: both queues long-polled for 18 s, each poll twice the attempt timeout.
    tokio::time::sleep(Duration::from_secs(18)).await;
    let answered: Vec<_> = receives()
        .into_iter()
        .filter(|c| c.status.is_some())
        .collect();
    assert!(
        answered.len() >= 4,
        "both queues long-polled at least twice: {answered:?}"
    );
    assert!(
        answered.iter().all(|c| c.status == Some(200)),
        "{answered:?}"
    );
    let log = worker.log();
    assert!(
        !log.contains("receive failed"),
        "a long poll was cut short by the attempt timeout:\n{log}"
    );

    // Job 1: its first DescribeCertificate hangs for a minute, its first two SendCommand
    // calls are throttled.
    proxy.add_rule(Rule::new(
        "acm",
        Some("DescribeCertificate"),
        Trigger::Nth(1),
        Action::Delay(Duration::from_secs(60)),
    ));
    let throttled = proxy.add_rule(Rule::new(
        "ssm",
        Some("SendCommand"),
        Trigger::FirstN(2),
        Action::Throttle,
    ));
    let first = env
        .submit(&payload(&arns[0], "sdk-hang", "Environment", &tag))
        .await;
    let (_, retries) = succeeded(&env, &worker, &first).await;
    assert!(
        retries.is_empty(),
        "the SDK, not the engine, should have retried the hung and throttled calls: {retries:?}"
    );
    let describes: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "DescribeCertificate")
        .collect();
    assert!(
        describes.len() >= 2 && matches!(describes[0].fault(), Some(Action::Delay(_))),
        "the hung DescribeCertificate was abandoned and tried again: {describes:?}"
    );
    let sends: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "SendCommand")
        .collect();
    assert_eq!(
        sends.len(),
        3,
        "two throttled attempts and one that went through: {sends:?}"
    );
    assert_eq!(sends.iter().filter(|c| c.forwarded).count(), 1, "{sends:?}");
    let commands = commands_by_comment(&env).await;
    let mine: Vec<_> = commands
        .iter()
        .filter(|(comment, _)| comment.contains(first.as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "one SSM command for the job: {commands:?}");
    // One server: its only batch is the canary.
    assert_eq!(
        mine[0].0,
        &format!("certflow job {first} batch 0"),
        "{commands:?}"
    );
    assert_eq!(mine[0].1.len(), 1, "{commands:?}");
    proxy.remove_rule(throttled);

    // Job 2: every attempt of its first DescribeCertificate call answers 503. The SDK gives
    // up after its 3 attempts; the engine schedules one retry of the step, which succeeds.
    let before = proxy.count("acm", "DescribeCertificate");
    proxy.add_rule(Rule::new(
        "acm",
        Some("DescribeCertificate"),
        Trigger::FirstN(3),
        Action::Status(503),
    ));
    let second = env
        .submit(&payload(&arns[1], "sdk-gives-up", "Environment", &tag))
        .await;
    let (history, retries) = succeeded(&env, &worker, &second).await;
    assert_eq!(
        retries.len(),
        1,
        "one durable retry once the SDK gave up: {history:?}"
    );
    assert_eq!(retries[0].step, "check", "{retries:?}");
    assert!(
        proxy.count("acm", "DescribeCertificate") - before >= 4,
        "3 attempts answered 503, then the step's retry"
    );
    println!(
        "[aws-calls] hung call and 2 throttles absorbed by the SDK; 3 × 503 → 1 step retry: {}",
        retries[0].error.as_deref().unwrap_or("")
    );
}
