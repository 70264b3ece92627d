//! The run-a-task path, one message at a time, on the in-memory backends and tokio's paused
//! clock: what a worker does with a stale, early, held, unknown or unreadable message, and
//! how far one message carries a job.

use std::sync::Arc;
use std::time::Duration;

use super::{Worker, WorkerConfig};
use crate::backend::memory::{MemoryJobStore, MemoryTaskQueue, QueueChaos};
use crate::backend::{Delivery, JobStore, LeaseRequest, TaskQueue};
use crate::clock::{SharedClock, TokioClock};
use crate::job::{EventKind, JobId, JobStatus};
use crate::ops::{task_body, Jobs, NewJob};
use crate::workflow::{Outcome, Registry, Workflow};

const LEASE: Duration = Duration::from_secs(60);
const VISIBILITY: Duration = Duration::from_secs(30);

struct Rig {
    store: MemoryJobStore,
    queue: MemoryTaskQueue,
    jobs: Jobs,
    worker: Worker,
}

fn rig() -> Rig {
    let clock: SharedClock = Arc::new(TokioClock::starting_at(1_700_000_000_000));
    let three = Workflow::<u32>::new("three")
        .step("a", |_ctx, n| async move { Ok(Outcome::next("b", n + 1)) })
        .step("b", |_ctx, n| async move { Ok(Outcome::next("c", n + 1)) })
        .step("c", |_ctx, n| async move { Ok(Outcome::succeed(n + 1)) });
    let timer = Workflow::<u32>::new("timer")
        .step("a", |_ctx, n| async move {
            Ok(Outcome::next_after("b", n, Duration::from_secs(600)))
        })
        .step("b", |_ctx, n| async move { Ok(Outcome::succeed(n)) });
    // A short look after starting something: held in the task (rule 13).
    let look = Workflow::<u32>::new("look")
        .step("a", |_ctx, n| async move {
            Ok(Outcome::next_after("b", n, Duration::from_secs(3)))
        })
        .step("b", |_ctx, n| async move { Ok(Outcome::succeed(n + 1)) });
    let store = MemoryJobStore::new();
    let queue = MemoryTaskQueue::new(clock.clone(), 1, QueueChaos::default());
    let jobs = Jobs::new(
        Arc::new(store.clone()),
        Arc::new(queue.clone()),
        Registry::new()
            .register(three)
            .register(timer)
            .register(look),
        clock,
    );
    let worker = Worker::new(
        jobs.clone(),
        WorkerConfig {
            id: "w".into(),
            lease: LEASE,
            visibility: VISIBILITY,
            sweep_every: Duration::ZERO,
            ..WorkerConfig::default()
        },
    );
    Rig {
        store,
        queue,
        jobs,
        worker,
    }
}

impl Rig {
    async fn create(&self, workflow: &str) -> JobId {
        let new = NewJob::new(workflow, Some("k"), &0u32).unwrap();
        self.jobs.create(new).await.unwrap().record.job_id
    }

    async fn receive(&self) -> Option<Delivery> {
        let got = self.queue.receive(1, Duration::ZERO, VISIBILITY).await;
        got.unwrap().pop()
    }

    async fn handle_next(&self) {
        let d = self.receive().await.expect("a visible message");
        self.worker.handle(Arc::new(self.queue.clone()), d).await;
    }

    async fn kinds(&self, id: &JobId) -> Vec<EventKind> {
        let history = self.jobs.history(id).await.unwrap();
        history.iter().map(|e| e.kind).collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn one_message_carries_a_job_through_every_step_that_needs_no_wait() {
    runtime().block_on(async {
        let rig = rig();
        let id = rig.create("three").await;
        rig.handle_next().await;
        let rec = rig.jobs.get(&id).await.unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded);
        assert_eq!(rec.data, serde_json::json!(3));
        assert_eq!(
            rig.queue.sent().len(),
            1,
            "only the first task was ever sent"
        );
        assert!(rig.queue.is_empty(), "the message was deleted");
        use EventKind::*;
        let kinds = rig.kinds(&id).await;
        assert_eq!(kinds, [Created, StepCompleted, StepCompleted, Succeeded]);
    });
}

#[test]
fn a_stale_message_is_deleted_and_changes_nothing() {
    runtime().block_on(async {
        let rig = rig();
        let id = rig.create("three").await;
        rig.handle_next().await;
        let before = rig.jobs.get(&id).await.unwrap();
        // A duplicate of the first task, delivered after the job moved on.
        rig.queue
            .send(&task_body(&id, 1), Duration::ZERO, &[])
            .await
            .unwrap();
        rig.handle_next().await;
        assert_eq!(rig.jobs.get(&id).await.unwrap(), before);
        assert!(rig.queue.is_empty());
    });
}

#[test]
fn an_early_message_is_sent_again_for_the_time_still_owed() {
    runtime().block_on(async {
        let rig = rig();
        let id = rig.create("timer").await;
        rig.handle_next().await;
        let waiting = rig.jobs.get(&id).await.unwrap();
        assert_eq!(waiting.status, JobStatus::Waiting);
        // The timer's task is on the queue, hidden for ten minutes; a copy arrives now.
        rig.queue
            .send(&task_body(&id, waiting.version), Duration::ZERO, &[])
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(100)).await;
        rig.handle_next().await;
        assert_eq!(
            rig.jobs.get(&id).await.unwrap(),
            waiting,
            "no attempt counted"
        );
        assert_eq!(rig.queue.len(), 2, "the timer's task and the re-sent copy");
        assert!(rig.receive().await.is_none(), "both still hidden");
        tokio::time::advance(Duration::from_secs(501)).await;
        rig.handle_next().await;
        rig.handle_next().await;
        let rec = rig.jobs.get(&id).await.unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded);
        assert!(rig.queue.is_empty(), "the second copy was judged stale");
    });
}

#[test]
fn a_message_for_a_job_leased_elsewhere_is_kept_hidden_until_that_lease_lapses() {
    runtime().block_on(async {
        let rig = rig();
        let id = rig.create("three").await;
        let d = rig.receive().await.unwrap();
        let now = rig.jobs.clock().now();
        let other = LeaseRequest {
            job_id: &id,
            version: 1,
            message_id: "another-copy",
            owner: "other#0",
            now,
            until: now + 60_000,
            due_by: now,
        };
        rig.store.acquire(&other).await.unwrap();
        rig.worker.handle(Arc::new(rig.queue.clone()), d).await;
        assert_eq!(rig.queue.len(), 1, "kept, to take over if the holder dies");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(rig.receive().await.is_none(), "hidden past the lease");
        tokio::time::advance(Duration::from_secs(2)).await;
        rig.handle_next().await;
        let rec = rig.jobs.get(&id).await.unwrap();
        assert_eq!(
            rec.status,
            JobStatus::Succeeded,
            "taken over once the lease lapsed"
        );
    });
}

#[test]
fn unreadable_messages_and_unknown_jobs_are_dead_lettered_with_the_reason() {
    runtime().block_on(async {
        let rig = rig();
        rig.queue
            .send("not json", Duration::ZERO, &[])
            .await
            .unwrap();
        rig.handle_next().await;
        let missing = JobId::new("no-such-job");
        rig.queue
            .send(&task_body(&missing, 1), Duration::ZERO, &[])
            .await
            .unwrap();
        rig.handle_next().await;
        let dead = rig.queue.dead_letters();
        assert_eq!(dead.len(), 2);
        assert!(dead[0].1.starts_with("not a task message"), "{}", dead[0].1);
        assert_eq!(dead[1].1, "job no-such-job does not exist");
        assert!(rig.queue.is_empty());
    });
}

#[test]
fn each_pump_gets_an_equal_share_of_the_slots_capped_by_the_batch() {
    use super::run::pump_share;
    // The task queue and two intake queues on 9 slots: 3 each.
    assert_eq!(pump_share(10, 9, 3), 3);
    // Two queues: half each, as before there was more than one intake queue.
    assert_eq!(pump_share(10, 8, 2), 4);
    // A receive never asks for more than a batch.
    assert_eq!(pump_share(10, 100, 2), 10);
    // Fewer slots than queues: each still reserves one (they take turns).
    assert_eq!(pump_share(10, 2, 3), 1);
}

#[test]
fn the_end_hook_hears_each_ending_once_after_its_commit_with_the_reason() {
    runtime().block_on(async {
        let clock: SharedClock = Arc::new(TokioClock::starting_at(1_700_000_000_000));
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = MemoryJobStore::new();
        let (h, s) = (heard.clone(), store.clone());
        let failing = Workflow::<u32>::new("failing")
            .step("a", |_ctx, n| async move { Ok(Outcome::next("b", n + 1)) })
            .step(
                "b",
                |_ctx, n| async move { Ok(Outcome::fail(n, "disk full")) },
            )
            .on_end(move |ended, n| {
                let (h, s) = (h.clone(), s.clone());
                async move {
                    // The hook runs after the commit: the store already says FAILED.
                    let stored = s.get(&ended.job_id).await.unwrap().unwrap().status;
                    h.lock()
                        .unwrap()
                        .push((ended.status, ended.step, ended.error, n, stored));
                }
            });
        let queue = MemoryTaskQueue::new(clock.clone(), 1, QueueChaos::default());
        let jobs = Jobs::new(
            Arc::new(store.clone()),
            Arc::new(queue.clone()),
            Registry::new().register(failing),
            clock,
        );
        let worker = Worker::new(
            jobs.clone(),
            WorkerConfig {
                id: "w".into(),
                sweep_every: Duration::ZERO,
                ..WorkerConfig::default()
            },
        );
        let new = NewJob::new("failing", Some("k"), &0u32).unwrap();
        let id = jobs.create(new).await.unwrap().record.job_id;
        let d = queue
            .receive(1, Duration::ZERO, VISIBILITY)
            .await
            .unwrap()
            .pop()
            .unwrap();
        worker.handle(Arc::new(queue.clone()), d.clone()).await;
        // The same message again (a duplicate delivery) finds the job ended: no second call.
        worker.handle(Arc::new(queue.clone()), d).await;
        let heard = heard.lock().unwrap().clone();
        assert_eq!(
            heard,
            [(
                JobStatus::Failed,
                "b".to_string(),
                Some("disk full".to_string()),
                1,
                JobStatus::Failed
            )]
        );
        assert_eq!(jobs.get(&id).await.unwrap().status, JobStatus::Failed);
    });
}

#[test]
fn a_short_wait_is_held_in_the_task_and_committed_with_the_rest() {
    runtime().block_on(async {
        let rig = rig();
        let id = rig.create("look").await;
        let started = tokio::time::Instant::now();
        rig.handle_next().await;
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "the wait was slept"
        );
        let rec = rig.jobs.get(&id).await.unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded);
        assert_eq!(rig.queue.sent().len(), 1, "no task was sent for the wait");
        use EventKind::*;
        assert_eq!(rig.kinds(&id).await, [Created, StepCompleted, Succeeded]);
        let history = rig.jobs.history(&id).await.unwrap();
        assert_eq!(
            history[1].to_status,
            JobStatus::Waiting,
            "recorded as a wait"
        );
        assert_eq!(history[2].attempt, 1, "taken again as a lease takes a job");
    });
}

#[test]
fn a_wake_up_received_by_the_worker_that_holds_the_wait_ends_it_at_once() {
    runtime().block_on(async {
        let rig = rig();
        let id = rig.create("look").await;
        let d = rig.receive().await.unwrap();
        let (worker, queue) = (rig.worker.clone(), Arc::new(rig.queue.clone()));
        let run = tokio::spawn(async move { worker.handle(queue, d).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let events = MemoryTaskQueue::new(
            Arc::new(TokioClock::starting_at(1_700_000_000_000)),
            2,
            QueueChaos::default(),
        );
        events.send("{}", Duration::ZERO, &[]).await.unwrap();
        let signal = events.receive(1, Duration::ZERO, VISIBILITY).await.unwrap();
        let wrong = super::Signal {
            job: id.clone(),
            step: "a".into(),
            reason: "for another step".into(),
        };
        let source: Arc<dyn TaskQueue> = Arc::new(events.clone());
        rig.worker
            .signal(Arc::clone(&source), signal[0].clone(), wrong)
            .await;
        assert!(
            !run.is_finished(),
            "a wake-up for another step changes nothing"
        );
        let woken_at = tokio::time::Instant::now();
        let s = super::Signal {
            job: id.clone(),
            step: "b".into(),
            reason: "it happened".into(),
        };
        events.send("{}", Duration::ZERO, &[]).await.unwrap();
        let signal = events.receive(1, Duration::ZERO, VISIBILITY).await.unwrap();
        rig.worker.signal(source, signal[0].clone(), s).await;
        run.await.unwrap();
        assert!(
            woken_at.elapsed() < Duration::from_millis(100),
            "ended at once"
        );
        let rec = rig.jobs.get(&id).await.unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded);
        use EventKind::*;
        assert_eq!(
            rig.kinds(&id).await,
            [Created, StepCompleted, Woken, Succeeded]
        );
        let history = rig.jobs.history(&id).await.unwrap();
        assert_eq!(history[2].note.as_deref(), Some("it happened"));
        assert!(events.is_empty(), "the wake-ups were deleted");
        assert_eq!(rig.queue.sent().len(), 1, "no task was sent for the wait");
    });
}
