//! A caller's idempotency key reused with a different request is refused, on the in-memory
//! backends: `Jobs::create` returns `RequestConflict`, an intake message goes to the intake
//! DLQ with the reason, and in both cases the first job's record and history are as they
//! were. The same request again is still the same job, silently; a job stored without a
//! digest (created before digests) keeps the old rule.

use std::sync::Arc;
use std::time::Duration;

use engine::backend::memory::{MemoryJobStore, MemoryTaskQueue, QueueChaos};
use engine::backend::TaskQueue;
use engine::clock::{SharedClock, TokioClock};
use engine::{
    Intake, JobStatus, Jobs, JobsError, NewJob, Outcome, Registry, RequestKey, Worker,
    WorkerConfig, Workflow,
};
use serde_json::{json, Value};

struct Rig {
    store: MemoryJobStore,
    intake: MemoryTaskQueue,
    jobs: Jobs,
}

impl Rig {
    fn new() -> Rig {
        let clock: SharedClock = Arc::new(TokioClock::starting_at(1_700_000_000_000));
        let workflow = Workflow::<Value>::new("echo")
            .step("wait", |_ctx, v| async move {
                Ok(Outcome::next_after("done", v, Duration::from_secs(60)))
            })
            .step("done", |_ctx, v| async move { Ok(Outcome::succeed(v)) });
        let store = MemoryJobStore::new();
        let tasks = MemoryTaskQueue::new(clock.clone(), 1, QueueChaos::default());
        let intake = MemoryTaskQueue::new(clock.clone(), 2, QueueChaos::default());
        let jobs = Jobs::new(
            Arc::new(store.clone()),
            Arc::new(tasks),
            Registry::new().register(workflow),
            clock,
        );
        Rig {
            store,
            intake,
            jobs,
        }
    }
}

/// A job of `echo` keyed by the request's `Id`, fingerprinted by the whole request.
fn new_job(request: &Value) -> NewJob {
    let key = request["Id"].as_str().unwrap_or("none");
    let job = NewJob::new("echo", Some(key), request).unwrap_or_else(|e| panic!("{e}"));
    job.for_request(RequestKey::new("Id", key, request).unwrap_or_else(|e| panic!("{e}")))
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
fn create_refuses_a_key_reused_for_another_request_and_leaves_the_first_job() {
    runtime().block_on(async {
        let rig = Rig::new();
        let first = json!({"Id": "r-1", "Name": "web", "Target": "prod"});
        let made = rig.jobs.create(new_job(&first)).await.unwrap();
        assert!(!made.existed);
        let before = rig.store.snapshot();

        // The same request, keys in another order: the same job, silently.
        let again: Value = serde_json::from_str(r#"{"Target":"prod","Name":"web","Id":"r-1"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let found = rig.jobs.create(new_job(&again)).await.unwrap();
        assert!(found.existed);
        assert_eq!(found.record.job_id, made.record.job_id);

        // Another request under the same key: refused, naming the key and the job.
        let other = json!({"Id": "r-1", "Name": "web", "Target": "dev"});
        let err = rig.jobs.create(new_job(&other)).await.unwrap_err();
        assert!(matches!(err, JobsError::RequestConflict { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "Id r-1 was already used for a different request (job {}); use a new Id",
                made.record.job_id
            )
        );
        assert_eq!(rig.store.snapshot(), before, "the first job is untouched");

        // A creator that gives no digest keeps the old rule.
        let plain = NewJob::new("echo", Some("r-1"), &other).unwrap();
        assert!(rig.jobs.create(plain).await.unwrap().existed);
    });
}

#[test]
fn a_job_stored_without_a_digest_keeps_todays_rule() {
    runtime().block_on(async {
        let rig = Rig::new();
        let first = json!({"Id": "old", "Target": "prod"});
        // As created before digests existed.
        rig.jobs
            .create(NewJob::new("echo", Some("old"), &first).unwrap())
            .await
            .unwrap();
        let other = json!({"Id": "old", "Target": "dev"});
        let found = rig.jobs.create(new_job(&other)).await.unwrap();
        assert!(found.existed, "judged the same job, as before");
        assert_eq!(found.record.request_digest, None);
        assert_eq!(found.record.data, first);
    });
}

#[test]
fn an_intake_request_reusing_a_key_for_another_payload_is_dead_lettered() {
    runtime().block_on(async {
        let rig = Rig::new();
        let parse = Intake {
            queue: Arc::new(rig.intake.clone()),
            parse: Arc::new(|d| {
                let v: Value = serde_json::from_str(&d.body).map_err(|e| e.to_string())?;
                Ok(new_job(&v).into())
            }),
        };
        let worker = Worker::new(
            rig.jobs.clone(),
            WorkerConfig {
                id: "w".into(),
                poll_wait: Duration::from_secs(1),
                sweep_every: Duration::ZERO,
                ..WorkerConfig::default()
            },
        );
        let run = tokio::spawn(async move {
            worker
                .run_with_intake(Some(parse), tokio::time::sleep(Duration::from_secs(30)))
                .await
        });
        let first = r#"{"Id":"r-1","Name":"web","Target":"prod"}"#;
        rig.intake
            .send(first, Duration::ZERO, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = rig.store.snapshot();
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].0.status, JobStatus::Waiting);

        // The same request again (spaced differently) is the same job; another one is not.
        let duplicate = "{ \"Target\": \"prod\", \"Name\": \"web\", \"Id\": \"r-1\" }";
        let other = r#"{"Id":"r-1","Name":"web","Target":"dev"}"#;
        for body in [duplicate, other] {
            rig.intake
                .send(body, Duration::ZERO, &[])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = rig.store.snapshot();
        run.abort();

        assert_eq!(
            after, before,
            "the first job's record and history are untouched"
        );
        let dead = rig.intake.dead_letters();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].0, other);
        assert_eq!(
            dead[0].1,
            format!(
                "Id r-1 was already used for a different request (job {}); use a new Id",
                before[0].0.job_id
            )
        );
        assert!(rig.intake.is_empty(), "the duplicate was acknowledged");
    });
}
