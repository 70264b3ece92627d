//! # certflow-engine
//!
//! A durable workflow engine: job state in DynamoDB, step tasks on SQS, no workflow server.
//! It knows nothing about what the workflows do.
//!
//! (The concept map and example are filled in below as the runtime lands.)
#![warn(missing_docs, unreachable_pub)]

pub mod backend;
pub mod clock;
pub mod error;
pub mod job;
pub mod ops;
pub mod schema;
pub mod worker;
pub mod workflow;

pub use backend::{Acquired, Delivery, JobStore, Task, TaskQueue};
pub use clock::{Clock, SystemClock};
pub use error::{JobsError, QueueError, StepError, StoreError};
pub use job::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};
pub use ops::{Created, Jobs, NewJob};
pub use worker::{Intake, IntakeParser, Worker, WorkerConfig};
pub use workflow::{Outcome, Registry, StepContext, StepPolicy, StopReason, Transition, Workflow};
