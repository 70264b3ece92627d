//! # certflow-engine
//!
//! A durable workflow engine: job state in DynamoDB, step tasks on SQS, no workflow server.
//! It knows nothing about what the workflows do. The protocol it follows, and the
//! invariants each mechanism holds, are told in `docs/architecture.md` at the repository's
//! root.
//!
//! ## The map
//!
//! - **[Job](job)** — one run of a workflow. Its [`JobRecord`] is the single source of
//!   truth; every transition has its [`HistoryEvent`], and a task commits its transitions
//!   together in one transaction when the job leaves it.
//! - **[Workflow](workflow)** — named steps over one typed state. A step is a plain async
//!   function `(StepContext, S) -> Result<Outcome<S>, StepError>`; [`StepPolicy`] sets its
//!   timeout, attempts and backoff.
//! - **[Transition](transition)** — the state machine: the one place that decides what a
//!   job becomes after a step's outcome or error, a cancel, a deadline or a retry. Pure
//!   functions, a unit test per rule.
//! - **[Backend](backend)** — where jobs live ([`JobStore`]: DynamoDB, or in memory for the
//!   simulation) and how tasks travel ([`TaskQueue`]: SQS, or in memory).
//! - **[Worker](worker)** — the runtime: receives tasks, takes leases, runs steps,
//!   commits, sends the next task, heartbeats long steps, sweeps for lost wake-ups, drains
//!   on shutdown; one file per mechanism.
//! - **[Operations](ops)** — [`Jobs`]: create (idempotent), get, list, cancel, retry.
//! - **[Entries](entries)** — a job's per-item results ([`Entry`]: one server, one child
//!   job), kept beside its record so the record stays small whatever their number.
//! - **[Request keys](request)** — [`RequestKey`]: a caller's idempotency key with the
//!   digest of its request, so that a key reused for another request is refused.
//! - **[Errors](error)** — [`StepError`]: abort, retry, or retry after a delay.
//! - **[Schema](schema)** — table and queue names and keys, defined once.
//! - **[Tracing](trace)** — one W3C trace per job across workers, and the engine's metrics.
//!
//! ## Example
//!
//! A two-step workflow run to completion on the in-memory backends:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use engine::backend::memory::{MemoryJobStore, MemoryTaskQueue, QueueChaos};
//! use engine::clock::TokioClock;
//! use engine::{JobStatus, Jobs, NewJob, Outcome, Registry, Worker, WorkerConfig, Workflow};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let greet = Workflow::new("greet")
//!     .step("hello", |_ctx, name: String| async move {
//!         Ok(Outcome::next_after("bye", name, Duration::from_millis(10)))
//!     })
//!     .step("bye", |_ctx, name: String| async move { Ok(Outcome::succeed(name)) });
//!
//! let clock = Arc::new(TokioClock::starting_at(0));
//! let jobs = Jobs::new(
//!     Arc::new(MemoryJobStore::new()),
//!     Arc::new(MemoryTaskQueue::new(clock.clone(), 7, QueueChaos::default())),
//!     Registry::new().register(greet),
//!     clock,
//! );
//! let id = jobs.create(NewJob::new("greet", Some("hello-ada"), &"Ada").unwrap()).await.unwrap().record.job_id;
//!
//! let config = WorkerConfig { poll_wait: Duration::from_millis(50), sweep_every: Duration::ZERO, ..WorkerConfig::default() };
//! let worker = Worker::new(jobs.clone(), config);
//! let done = {
//!     let jobs = jobs.clone();
//!     let id = id.clone();
//!     async move {
//!         while !jobs.get(&id).await.unwrap().status.is_terminal() {
//!             tokio::time::sleep(Duration::from_millis(10)).await;
//!         }
//!     }
//! };
//! worker.run(done).await;
//! assert_eq!(jobs.get(&id).await.unwrap().status, JobStatus::Succeeded);
//! # }
//! ```
// A worker must not panic on what it reads or is told: every failure is an error value.
// Unit tests may unwrap (a panic there is a failed test).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs, unreachable_pub)]

pub mod backend;
pub mod clock;
pub mod entries;
pub mod error;
pub mod job;
pub mod ops;
pub mod request;
pub mod schema;
pub mod trace;
pub mod transition;
pub mod worker;
pub mod workflow;

pub use backend::{Acquired, Delivery, JobStore, Task, TaskQueue};
pub use clock::{Clock, SystemClock};
pub use entries::{Entry, EntryPage, EntryWrites, Groups};
pub use error::{JobsError, QueueError, StepError, StoreError};
pub use job::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};
pub use ops::{Created, Jobs, NewJob, Wake};
pub use request::RequestKey;
pub use worker::{Intake, IntakeParser, Intent, Signal, Worker, WorkerConfig, DEFAULT_HOLD_WAITS};
pub use workflow::{
    Ended, Outcome, Registry, StepContext, StepPolicy, StopReason, Transition, Workflow,
};
