//! The engine against the AWS emulator, through the real SDK on loopback: multi-step jobs
//! with timers and retries, terminal errors, duplicate tasks, two workers sharing work, a
//! worker killed mid-step, cancel and retry, bad task messages, and a long poll that
//! outlasts the client's attempt timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use certflow_tests::Stack;
use engine::{
    EventKind, JobId, JobStatus, NewJob, Outcome, Registry, StepError, StepPolicy, TaskQueue,
    Workflow,
};
use serde::{Deserialize, Serialize};

const WF: &str = "itest";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Polls of `wait` left.
    polls: u32,
    /// Failing attempts of `flaky` before one succeeds.
    flaky: u32,
    /// `end` aborts with this message.
    abort: Option<String>,
    /// `slow` sleeps this long (ms) before moving on.
    slow_ms: u64,
}

/// A switch the `end` step consults, so a test can make it fail and then remove the cause.
#[derive(Default)]
struct Switches {
    end_broken: AtomicBool,
}

fn registry(switches: Arc<Switches>) -> Registry {
    let quick = StepPolicy::default()
        .max_attempts(4)
        .timeout(Duration::from_secs(20))
        .backoff(Duration::from_millis(200), Duration::from_millis(400));
    let wf = Workflow::new(WF)
        .deadline(Duration::from_secs(300))
        .step_with("start", quick, |_ctx, s: State| async move {
            Ok(Outcome::next("slow", s).with_note("started"))
        })
        .step_with("slow", quick, |_ctx, s: State| async move {
            tokio::time::sleep(Duration::from_millis(s.slow_ms)).await;
            Ok(Outcome::next("wait", s))
        })
        .step_with("wait", quick, |_ctx, mut s: State| async move {
            if s.polls > 0 {
                s.polls -= 1;
                return Ok(Outcome::poll(s, Duration::from_secs(1)));
            }
            Ok(Outcome::next("flaky", s))
        })
        .step_with("flaky", quick, |ctx, s: State| async move {
            if ctx.attempt() <= s.flaky {
                return Err(StepError::retry(format!("transient {}", ctx.attempt())));
            }
            Ok(Outcome::next("end", s))
        })
        .step_with("end", quick, move |_ctx, s: State| {
            let switches = switches.clone();
            async move {
                if let Some(msg) = &s.abort {
                    return Err(StepError::abort(msg.clone()));
                }
                if switches.end_broken.load(Ordering::SeqCst) {
                    return Err(StepError::abort("the end is broken"));
                }
                Ok(Outcome::succeed(s))
            }
        });
    Registry::new().register(wf)
}

async fn stack(prefix: &str) -> (Stack, Arc<Switches>) {
    let switches = Arc::new(Switches::default());
    (
        Stack::new(prefix, registry(switches.clone())).await,
        switches,
    )
}

fn new_job(state: &State) -> NewJob {
    NewJob::new(WF, None, state).expect("new job")
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_step_job_with_wait_and_retries_succeeds() {
    let (stack, _) = stack("multi").await;
    let worker = stack.spawn_worker("w1");
    let state = State {
        polls: 1,
        flaky: 2,
        ..State::default()
    };
    let id = stack
        .jobs
        .create(new_job(&state))
        .await
        .unwrap()
        .record
        .job_id;
    let rec = stack.wait_terminal(&id, WAIT).await;
    worker.stop().await;

    assert_eq!(rec.status, JobStatus::Succeeded, "{rec:?}");
    let history = stack.jobs.history(&id).await.unwrap();
    let timeline: Vec<(String, u32, &str)> = history
        .iter()
        .map(|e| (e.step.clone(), e.attempt, e.kind.as_str()))
        .collect();
    let expected: Vec<(String, u32, &str)> = vec![
        ("start".into(), 0, "created"),
        ("start".into(), 1, "step-completed"),
        ("slow".into(), 1, "step-completed"),
        ("wait".into(), 1, "polled"),
        ("wait".into(), 1, "step-completed"),
        ("flaky".into(), 1, "retry-scheduled"),
        ("flaky".into(), 2, "retry-scheduled"),
        ("flaky".into(), 3, "step-completed"),
        ("end".into(), 1, "succeeded"),
    ];
    assert_eq!(timeline, expected);
    assert_eq!(history[5].error.as_deref(), Some("transient 1"));
    assert_eq!(history[1].note.as_deref(), Some("started"));
    // The poll waited for its timer rather than running again at once.
    assert!(history[4].at - history[3].at >= 900, "{history:?}");

    // The table reads well in the console: readable attribute names, a record item and
    // one item per history event.
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let item = ddb
        .get_item()
        .table_name(&stack.table)
        .key(
            "JobId",
            aws_sdk_dynamodb::types::AttributeValue::S(id.to_string()),
        )
        .key(
            "Item",
            aws_sdk_dynamodb::types::AttributeValue::S("JOB".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("record item");
    for attr in [
        "JobId",
        "Workflow",
        "Status",
        "Step",
        "Attempt",
        "CreatedAt",
        "UpdatedAt",
        "Version",
        "ExpiresAt",
    ] {
        assert!(item.contains_key(attr), "record lacks {attr}: {item:?}");
    }
    assert_eq!(item["Status"].as_s().unwrap(), "SUCCEEDED");
    assert!(item["CreatedAt"].as_s().unwrap().ends_with('Z'));
    assert!(
        !item.contains_key("LeaseOwner"),
        "a finished job holds no lease"
    );
    let listed = stack
        .jobs
        .list(JobStatus::Succeeded, 10, None)
        .await
        .unwrap();
    assert!(listed.jobs.iter().any(|j| j.job_id == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_error_fails_the_job_with_its_message() {
    let (stack, _) = stack("abort").await;
    let worker = stack.spawn_worker("w1");
    let state = State {
        abort: Some("certificate arn:aws:acm:… is not exportable".into()),
        ..State::default()
    };
    let id = stack
        .jobs
        .create(new_job(&state))
        .await
        .unwrap()
        .record
        .job_id;
    let rec = stack.wait_terminal(&id, WAIT).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    assert_eq!(rec.step, "end");
    assert_eq!(
        rec.last_error.as_deref(),
        Some("certificate arn:aws:acm:… is not exportable")
    );
    let history = stack.jobs.history(&id).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.kind, EventKind::Failed);
    assert_eq!(last.attempt, 1, "a terminal error is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_task_messages_change_nothing() {
    let (stack, _) = stack("dups").await;
    let state = State {
        polls: 1,
        ..State::default()
    };
    let id = stack
        .jobs
        .create(new_job(&state))
        .await
        .unwrap()
        .record
        .job_id;
    // Before any worker runs: five copies of the first task, and tasks for versions the
    // job has not reached yet.
    let queue: Arc<dyn TaskQueue> = Arc::new(stack.queue.clone());
    for v in [1, 1, 1, 1, 1, 2, 3, 7, 40] {
        let body = format!(r#"{{"JobId":"{id}","Version":{v}}}"#);
        queue.send(&body, Duration::ZERO, &[]).await.unwrap();
    }
    let worker = stack.spawn_worker("w1");
    let rec = stack.wait_terminal(&id, WAIT).await;
    assert_eq!(rec.status, JobStatus::Succeeded);
    let history = stack.jobs.history(&id).await.unwrap();

    // After the end: a task for every version it went through.
    for v in 1..=rec.version {
        let body = format!(r#"{{"JobId":"{id}","Version":{v}}}"#);
        queue.send(&body, Duration::ZERO, &[]).await.unwrap();
    }
    // Give the worker time to see them all, then check it acknowledged them.
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(stack.queue.url())
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let count = |k: aws_sdk_sqs::types::QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let left = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{left} task messages never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await;

    let after = stack.jobs.get(&id).await.unwrap();
    assert_eq!(after, rec, "duplicates changed the record");
    assert_eq!(stack.jobs.history(&id).await.unwrap(), history);
    let steps_run = history
        .iter()
        .filter(|e| e.kind == EventKind::StepCompleted)
        .count();
    assert_eq!(steps_run, 4, "each step completed once: {history:?}");
    assert!(stack.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_work() {
    let (stack, _) = stack("share").await;
    let a = stack.spawn_worker("worker-a");
    let b = stack.spawn_worker("worker-b");
    let mut ids = Vec::new();
    for _ in 0..16 {
        let state = State {
            slow_ms: 150,
            ..State::default()
        };
        ids.push(
            stack
                .jobs
                .create(new_job(&state))
                .await
                .unwrap()
                .record
                .job_id,
        );
    }
    let mut by_worker = std::collections::HashMap::<String, usize>::new();
    for id in &ids {
        let rec = stack.wait_terminal(id, WAIT).await;
        assert_eq!(rec.status, JobStatus::Succeeded);
        for e in stack.jobs.history(id).await.unwrap() {
            if e.kind != EventKind::Created {
                *by_worker.entry(e.worker).or_default() += 1;
            }
        }
    }
    a.stop().await;
    b.stop().await;
    assert!(
        by_worker.get("worker-a").copied().unwrap_or(0) > 0
            && by_worker.get("worker-b").copied().unwrap_or(0) > 0,
        "both workers should have committed steps: {by_worker:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_leaves_the_job_to_another() {
    let (stack, _) = stack("kill").await;
    let doomed = stack.spawn_worker("doomed");
    let state = State {
        slow_ms: 4_000,
        ..State::default()
    };
    let id = stack
        .jobs
        .create(new_job(&state))
        .await
        .unwrap()
        .record
        .job_id;
    // Wait until the doomed worker holds the job, then until it is inside the slow step:
    // `start` is fused into `slow`, and a task commits once, when the job leaves it, so the
    // record shows the job at `start`, leased, for the whole task.
    stack
        .wait_for(&id, WAIT, |r| {
            r.lease_owner
                .as_deref()
                .is_some_and(|o| o.starts_with("doomed#"))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    doomed.kill();
    let survivor = stack.spawn_worker("survivor");
    let rec = stack.wait_terminal(&id, WAIT).await;
    survivor.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded);
    let history = stack.jobs.history(&id).await.unwrap();
    let slow: Vec<_> = history.iter().filter(|e| e.step == "slow").collect();
    assert_eq!(slow.len(), 1, "the slow step committed once: {history:?}");
    assert_eq!(slow[0].worker, "survivor");
    let start = history
        .iter()
        .find(|e| e.step == "start" && e.kind == EventKind::StepCompleted)
        .unwrap();
    assert_eq!(
        (start.worker.as_str(), start.attempt),
        ("survivor", 2),
        "the killed task left nothing but its attempt: {history:?}"
    );
    assert!(history.iter().all(|e| e.worker != "doomed"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_waiting_job() {
    let (stack, _) = stack("cancel").await;
    let worker = stack.spawn_worker("w1");
    let state = State {
        polls: 1_000,
        ..State::default()
    };
    let id = stack
        .jobs
        .create(new_job(&state))
        .await
        .unwrap()
        .record
        .job_id;
    stack
        .wait_for(&id, WAIT, |r| r.status == JobStatus::Waiting)
        .await;
    stack.jobs.cancel(&id).await.unwrap();
    let rec = stack.wait_terminal(&id, WAIT).await;
    assert_eq!(rec.status, JobStatus::Cancelled);
    assert_eq!(rec.step, "wait");
    let again = stack.jobs.cancel(&id).await.unwrap_err();
    assert!(again.to_string().contains("already CANCELLED"), "{again}");
    worker.stop().await;
    let last = stack.jobs.history(&id).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resumes_a_failed_job_at_the_failed_step() {
    let (stack, switches) = stack("retry").await;
    switches.end_broken.store(true, Ordering::SeqCst);
    let worker = stack.spawn_worker("w1");
    let id = stack
        .jobs
        .create(new_job(&State::default()))
        .await
        .unwrap()
        .record
        .job_id;
    let failed = stack.wait_terminal(&id, WAIT).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.step, "end");

    let refused = stack
        .jobs
        .retry(&JobId::new("no-such-job"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not found"), "{refused}");

    switches.end_broken.store(false, Ordering::SeqCst);
    stack.jobs.retry(&id).await.unwrap();
    let rec = stack.wait_terminal(&id, WAIT).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded);
    let history = stack.jobs.history(&id).await.unwrap();
    let retried = history
        .iter()
        .position(|e| e.kind == EventKind::Retried)
        .expect("a retried event");
    assert!(
        history[retried + 1..].iter().all(|e| e.step == "end"),
        "only the failed step ran after the retry: {history:?}"
    );
    let not_failed = stack.jobs.retry(&id).await.unwrap_err();
    assert!(
        not_failed.to_string().contains("only FAILED jobs"),
        "{not_failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_messages_are_dead_lettered_and_the_worker_goes_on() {
    let (stack, _) = stack("bad").await;
    let queue: Arc<dyn TaskQueue> = Arc::new(stack.queue.clone());
    queue
        .send("this is not json", Duration::ZERO, &[])
        .await
        .unwrap();
    queue
        .send(
            r#"{"JobId":"does-not-exist","Version":1}"#,
            Duration::ZERO,
            &[],
        )
        .await
        .unwrap();
    queue.send(r#"[1,2,3]"#, Duration::ZERO, &[]).await.unwrap();
    let worker = stack.spawn_worker("w1");
    let id = stack
        .jobs
        .create(new_job(&State::default()))
        .await
        .unwrap()
        .record
        .job_id;
    let rec = stack.wait_terminal(&id, WAIT).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "good work carries on");
    let mut dead = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while dead.len() < 3 && tokio::time::Instant::now() < until {
        dead.extend(stack.dead_letters().await);
    }
    worker.stop().await;
    dead.sort();
    assert_eq!(dead.len(), 3, "{dead:?}");
    let reasons: Vec<&str> = dead.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("job does-not-exist does not exist")),
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.starts_with("not a task message"))
            .count(),
        2,
        "{reasons:?}"
    );
}

/// A receive that waits longer than its client's attempt timeout is not cut short: it
/// returns nothing once the wait is over on an empty queue, and the message that arrives
/// during the wait — not a timeout error. A receive that does not wait answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_outlasts_the_clients_attempt_timeout() {
    use engine::backend::sqs::{create_queue_with_dlq, SqsTaskQueue};
    use std::time::Instant;

    let sdk = certflow_tests::emulator().await;
    let name = certflow_tests::unique("long-poll");
    create_queue_with_dlq(
        &aws_sdk_sqs::Client::new(&sdk),
        &name,
        Duration::from_secs(30),
        5,
    )
    .await
    .expect("queue created");
    // Timeouts for ordinary calls, far shorter than the waits below.
    let conf = aws_sdk_sqs::config::Builder::from(&sdk)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(2))
                .build(),
        )
        .build();
    let queue = SqsTaskQueue::connect(aws_sdk_sqs::Client::from_conf(conf), &name)
        .await
        .expect("queue found");
    let visibility = Duration::from_secs(30);

    let got = queue.receive(1, Duration::ZERO, visibility).await;
    assert!(matches!(&got, Ok(v) if v.is_empty()), "{got:?}");

    let started_wait = Instant::now();
    let got = queue.receive(1, Duration::from_secs(3), visibility).await;
    assert!(
        matches!(&got, Ok(v) if v.is_empty()),
        "a 3 s long poll on an empty queue, 1 s attempt timeout: {got:?}"
    );
    assert!(
        started_wait.elapsed() >= Duration::from_millis(2500),
        "the receive waited: {:?}",
        started_wait.elapsed()
    );

    // A message sent 1.5 s into a 4 s wait: past the attempt timeout, it still arrives.
    let sender = queue.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sender.send("late", Duration::ZERO, &[]).await
    });
    let got = queue
        .receive(1, Duration::from_secs(4), visibility)
        .await
        .expect("the long poll answers, not a timeout");
    send.await.expect("sender").expect("message sent");
    assert_eq!(
        got.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
        ["late"]
    );
}
