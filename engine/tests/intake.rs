//! A worker that consumes an intake queue beside its task queue, on the in-memory backend
//! and tokio's paused clock: intake messages wait for a free slot in the queue (where their
//! visibility cannot run out), not inside the worker; an idle long poll of one queue
//! never holds up the other; and a request that comes back while its job is held by a dead
//! worker wakes the job once that worker's lease lapses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::backend::memory::{MemoryJobStore, MemoryTaskQueue, QueueChaos};
use engine::backend::TaskQueue;
use engine::clock::{SharedClock, TokioClock};
use engine::{Intake, JobStatus, Jobs, NewJob, Outcome, Registry, Worker, WorkerConfig, Workflow};

/// Virtual time each of a job's two steps takes: three times the visibility timeout, so a
/// message left waiting in the worker for a slot would be redelivered.
const STEP: Duration = Duration::from_secs(30);
const VISIBILITY: Duration = Duration::from_secs(10);

struct Rig {
    clock: SharedClock,
    store: MemoryJobStore,
    intake: MemoryTaskQueue,
    jobs: Jobs,
    parse: Intake,
    /// Highest receive count the intake parser has seen (1 = never redelivered).
    most_receives: Arc<AtomicU32>,
}

impl Rig {
    fn new() -> Rig {
        let clock: SharedClock = Arc::new(TokioClock::starting_at(1_700_000_000_000));
        // The timer between the steps sends a task message, so that the task queue and the
        // intake queue compete for the worker's slots.
        let workflow = Workflow::<u32>::new("slow")
            .step("work", |_ctx, n| async move {
                tokio::time::sleep(STEP).await;
                Ok(Outcome::next_after("finish", n, Duration::from_secs(1)))
            })
            .step("finish", |_ctx, n| async move {
                tokio::time::sleep(STEP).await;
                Ok(Outcome::succeed(n))
            });
        let store = MemoryJobStore::new();
        let tasks = MemoryTaskQueue::new(clock.clone(), 1, QueueChaos::default());
        let intake = MemoryTaskQueue::new(clock.clone(), 2, QueueChaos::default());
        let jobs = Jobs::new(
            Arc::new(store.clone()),
            Arc::new(tasks),
            Registry::new().register(workflow),
            clock.clone(),
        );
        let most_receives = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&most_receives);
        let parse = Intake {
            queue: Arc::new(intake.clone()),
            parse: Arc::new(move |d| {
                seen.fetch_max(d.receive_count, Ordering::SeqCst);
                NewJob::new("slow", Some(&d.body), &0u32)
                    .map(Into::into)
                    .map_err(|e| e.to_string())
            }),
        };
        Rig {
            clock,
            store,
            intake,
            jobs,
            parse,
            most_receives,
        }
    }

    /// Starts a worker on both queues, running for `runs_for`.
    fn start(
        &self,
        id: &str,
        concurrency: usize,
        poll_wait: Duration,
        lease: Duration,
        runs_for: Duration,
    ) -> tokio::task::JoinHandle<()> {
        self.start_on(
            vec![self.parse.clone()],
            id,
            concurrency,
            poll_wait,
            lease,
            runs_for,
        )
    }

    /// Starts a worker on the task queue and every queue of `intakes`.
    fn start_on(
        &self,
        intakes: Vec<Intake>,
        id: &str,
        concurrency: usize,
        poll_wait: Duration,
        lease: Duration,
        runs_for: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let worker = Worker::new(
            self.jobs.clone(),
            WorkerConfig {
                id: id.into(),
                concurrency,
                batch: 10,
                poll_wait,
                lease,
                visibility: VISIBILITY,
                sweep_every: Duration::ZERO,
                ..WorkerConfig::default()
            },
        );
        tokio::spawn(async move {
            worker
                .run_with_intakes(intakes, tokio::time::sleep(runs_for))
                .await
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    }
}

#[test]
fn a_burst_of_intake_messages_is_taken_only_as_fast_as_slots_free_up() {
    runtime().block_on(async {
        let rig = Rig::new();
        for i in 0..12 {
            rig.intake
                .send(&format!("request-{i}"), Duration::ZERO, &[])
                .await
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        let run = rig.start(
            "w",
            2,
            Duration::from_secs(5),
            VISIBILITY,
            Duration::from_secs(900),
        );
        // 12 jobs of 60 s on 2 slots: about 360 s of virtual time.
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(890) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            waited += Duration::from_secs(5);
            let jobs = rig.store.snapshot();
            if jobs.len() == 12 && jobs.iter().all(|(r, _)| r.status.is_terminal()) {
                break;
            }
        }
        run.abort();

        let jobs = rig.store.snapshot();
        let succeeded = jobs
            .iter()
            .filter(|(r, _)| r.status == JobStatus::Succeeded)
            .count();
        assert_eq!(succeeded, 12, "every request becomes a successful job");
        assert_eq!(
            rig.most_receives.load(Ordering::SeqCst),
            1,
            "no intake message was received twice: none waited for a slot inside the worker"
        );
        assert!(
            rig.intake.dead_letters().is_empty(),
            "{:?}",
            rig.intake.dead_letters()
        );
        assert!(rig.intake.is_empty(), "every intake message was deleted");
    });
}

#[test]
fn an_idle_task_queue_does_not_hold_up_intake() {
    runtime().block_on(async {
        let rig = Rig::new();
        let run = rig.start("w", 2, Duration::from_secs(20), VISIBILITY, Duration::from_secs(600));
        // Both pumps are now in a long poll of an empty queue.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent_at = rig.clock.now();
        rig.intake
            .send("late-request", Duration::ZERO, &[])
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let jobs = rig.store.snapshot();
        run.abort();

        let Some((job, _)) = jobs.first() else {
            panic!("the request sent at the 3rd second had no job 2 s later: the task queue's long poll held every slot");
        };
        assert!(
            job.created_at - sent_at < 1_000,
            "job created {} ms after the request",
            job.created_at - sent_at
        );
    });
}

#[test]
fn two_intake_queues_and_the_task_queue_share_the_slots_and_none_holds_up_another() {
    runtime().block_on(async {
        let rig = Rig::new();
        // A second intake queue with the same parser (as the events queue beside the
        // request queue): three pumps on three slots, one slot each.
        let second = MemoryTaskQueue::new(rig.clock.clone(), 3, QueueChaos::default());
        let intakes = vec![
            rig.parse.clone(),
            Intake {
                queue: Arc::new(second.clone()),
                parse: Arc::clone(&rig.parse.parse),
            },
        ];
        let run = rig.start_on(
            intakes,
            "w",
            3,
            Duration::from_secs(20),
            VISIBILITY,
            Duration::from_secs(1800),
        );
        // All three pumps are in a long poll of an empty queue; a message on the second
        // intake queue is taken at once.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent_at = rig.clock.now();
        second
            .send("late-event", Duration::ZERO, &[])
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some((job, _)) = rig.store.snapshot().into_iter().next() else {
            panic!("the message on the second intake queue had no job 2 s later");
        };
        assert!(job.created_at - sent_at < 1_000);
        // Then a burst on both intake queues: every message becomes a job, and none waits
        // for a slot inside the worker (none is received twice).
        for i in 0..6 {
            let body = format!("request-{i}");
            rig.intake
                .send(&body, Duration::ZERO, &[])
                .await
                .unwrap_or_else(|e| panic!("send: {e}"));
            second
                .send(&format!("event-{i}"), Duration::ZERO, &[])
                .await
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(1700) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            waited += Duration::from_secs(5);
            let jobs = rig.store.snapshot();
            if jobs.len() == 13 && jobs.iter().all(|(r, _)| r.status.is_terminal()) {
                break;
            }
        }
        run.abort();
        let jobs = rig.store.snapshot();
        let succeeded = jobs
            .iter()
            .filter(|(r, _)| r.status == JobStatus::Succeeded)
            .count();
        assert_eq!(succeeded, 13, "every message on either queue became a job");
        assert_eq!(rig.most_receives.load(Ordering::SeqCst), 1);
        assert!(rig.intake.is_empty() && second.is_empty());
        assert!(rig.intake.dead_letters().is_empty() && second.dead_letters().is_empty());
    });
}

#[test]
fn a_request_received_again_wakes_its_job_once_the_dead_workers_lease_lapses() {
    runtime().block_on(async {
        let rig = Rig::new();
        // A lease three times the visibility: when the request comes back, the lease of
        // the worker that died holding it is still live.
        let lease = VISIBILITY * 3;
        rig.intake
            .send("request", Duration::ZERO, &[])
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        let first = rig.start(
            "a",
            2,
            Duration::from_secs(5),
            lease,
            Duration::from_secs(900),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rig.store.snapshot().len(), 1, "worker a started the job");
        first.abort();
        let second = rig.start(
            "b",
            2,
            Duration::from_secs(5),
            lease,
            Duration::from_secs(900),
        );

        // The request comes back when its visibility lapses (10 s), while a's lease (30 s)
        // still holds. It is the job's only wake-up (no task was sent yet), so b keeps it,
        // hidden until the lease lapses, rather than deleting it.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(rig.most_receives.load(Ordering::SeqCst), 2);
        assert_eq!(
            rig.intake.len(),
            1,
            "the request is kept as the job's wake-up"
        );
        assert!(
            rig.store
                .snapshot()
                .iter()
                .all(|(r, _)| !r.status.is_terminal()),
            "the job waits for a's lease"
        );

        // b takes the job over once a's lease lapses, and finishes it.
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            waited += Duration::from_secs(5);
            if rig
                .store
                .snapshot()
                .iter()
                .all(|(r, _)| r.status.is_terminal())
            {
                break;
            }
        }
        second.abort();
        let jobs = rig.store.snapshot();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0.status, JobStatus::Succeeded, "{:?}", jobs[0].0);
        assert!(
            rig.intake.is_empty(),
            "the request was deleted once it had done its job"
        );
        assert_eq!(
            rig.most_receives.load(Ordering::SeqCst),
            3,
            "received by a, by b while a's lease held, by b once it lapsed"
        );
        assert!(rig.intake.dead_letters().is_empty());
    });
}
