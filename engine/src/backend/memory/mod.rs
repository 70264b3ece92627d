//! In-memory job store and task queue, for the deterministic simulation only.
//!
//! They follow the same rules as the DynamoDB and SQS backends (the lease and commit
//! conditions are the state machine's `transition::judge` and `transition::take_lease`), and add what the real
//! services do on a bad day: a [`Faults`] hook is called before and after every operation
//! (so a simulated worker can die or stall on either side of a side effect), and the queue
//! duplicates and reorders deliveries on a seeded schedule.

mod queue;
mod store;

use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

pub use queue::{MemoryTaskQueue, QueueChaos};
pub use store::MemoryJobStore;

/// A hook around every backend operation. The simulation uses it to crash (never return)
/// or stall (sleep) a worker on either side of an operation's effect.
#[async_trait]
pub trait Faults: Send + Sync + 'static {
    /// Called before (`after == false`) and after (`after == true`) the operation `op`
    /// takes effect.
    async fn point(&self, op: &'static str, after: bool);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-written: every critical
    // section below mutates only after all its checks. So a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
