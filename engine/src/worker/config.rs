//! How a worker runs: its settings, their defaults, and the fixed margins of the runtime.

use std::time::Duration;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name on leases and history (unique per process).
    pub id: String,
    /// Messages (task and intake together) handled at once.
    pub concurrency: usize,
    /// Most messages asked for per receive (SQS allows up to 10). A receive never asks for
    /// more than the free slots; an idle queue is long-polled for two messages, a busy one
    /// is read a batch at a time without waiting; with intake queues each queue's batch is
    /// at most its equal share of `concurrency` (half with one intake queue, a third with
    /// two).
    pub batch: usize,
    /// Long-poll wait of one receive.
    pub poll_wait: Duration,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// How long a received message stays hidden unless renewed.
    pub visibility: Duration,
    /// Steps run back to back in one task before handing over through the queue.
    pub max_fused_steps: u32,
    /// How long one task may hold short waits in-process (rule 13 of the state machine)
    /// instead of a round trip through the queue: a wait no longer than what is left of
    /// this budget is slept in the task, while at least a quarter of the worker's slots
    /// are free (a held wait keeps its slot). Zero: every wait goes through the queue.
    pub hold_waits: Duration,
    /// A step due within this much counts as due (absorbs early deliveries and skew).
    pub due_slack: Duration,
    /// After a shutdown request, how long in-flight steps may take before they are
    /// abandoned and their leases released.
    pub shutdown_budget: Duration,
    /// Mean interval between sweeps for lost wake-ups (jittered ±50 %); zero: no sweeper.
    pub sweep_every: Duration,
    /// A job counts as lost when its step was due this long ago and no lease covers it.
    pub sweep_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_string());
        let tag = uuid::Uuid::new_v4().simple().to_string();
        WorkerConfig {
            id: format!("{host}-{}-{}", std::process::id(), &tag[..8]),
            concurrency: 32,
            batch: 10,
            poll_wait: Duration::from_secs(20),
            lease: Duration::from_secs(60),
            visibility: Duration::from_secs(60),
            max_fused_steps: 32,
            hold_waits: DEFAULT_HOLD_WAITS,
            due_slack: Duration::from_millis(1_000),
            shutdown_budget: Duration::from_secs(25),
            sweep_every: Duration::from_secs(60),
            sweep_grace: Duration::from_secs(300),
        }
    }
}

impl WorkerConfig {
    /// How often a holder renews its lease and its message's visibility: a third of the
    /// shorter of the two, so two renewals can fail before either lapses (invariant 2 of
    /// docs/architecture.md, *Task protocol*).
    pub(crate) fn heartbeat_every(&self) -> Duration {
        (self.lease.min(self.visibility) / HEARTBEAT_FRACTION).max(MIN_HEARTBEAT)
    }
}

/// Default [`WorkerConfig::hold_waits`]: a few seconds, the wait of a step that looks
/// again at something it started (a command, an export), which costs a message, a receive,
/// a lease and a delete through the queue; longer waits go through the queue, so that the
/// job's record shows where it is and no slot is held for long.
pub const DEFAULT_HOLD_WAITS: Duration = Duration::from_secs(5);

/// A holder heartbeats when its work outlives this fraction of its lease or visibility.
pub(crate) const HEARTBEAT_FRACTION: u32 = 3;

/// Heartbeats never come closer than this, however short the lease (tests use short ones).
pub(crate) const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// A message found held by another worker is hidden until that lease lapses plus this
/// margin, so that it comes back just after a dead holder's lease can be taken over.
pub(crate) const TAKEOVER_MARGIN: Duration = Duration::from_millis(1_000);

/// A message is not deleted within this margin of its visibility running out: by the time
/// the delete arrives another worker may have received it (and an outdated SQS receipt can
/// still delete it).
pub(crate) const ACK_MARGIN: Duration = Duration::from_millis(1_000);

/// After the shutdown budget, how long steps told to let go get to release their leases.
pub(crate) const RELEASE_GRACE: Duration = Duration::from_secs(3);

/// The unit of the pause after a failed receive: the n-th failure in a row pauses this
/// times 2^n (400 ms after the first), up to 2^`RECEIVE_BACKOFF_MAX_DOUBLINGS` (25.6 s).
pub(crate) const RECEIVE_BACKOFF_BASE: Duration = Duration::from_millis(200);

/// How many times the receive backoff doubles at most.
pub(crate) const RECEIVE_BACKOFF_MAX_DOUBLINGS: u32 = 7;

/// Most lost jobs one sweep re-sends: a large backlog (after an outage, say) is worked off
/// over several sweeps of every worker instead of one long burst of sends from one.
pub(crate) const SWEEP_BATCH: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_at_a_third_of_the_shorter_window() {
        let cfg = WorkerConfig {
            lease: Duration::from_secs(60),
            visibility: Duration::from_secs(30),
            ..WorkerConfig::default()
        };
        assert_eq!(cfg.heartbeat_every(), Duration::from_secs(10));
        let tiny = WorkerConfig {
            lease: Duration::from_millis(90),
            ..cfg
        };
        assert_eq!(tiny.heartbeat_every(), MIN_HEARTBEAT);
    }

    #[test]
    fn receive_backoff_tops_out_below_half_a_minute() {
        let top = RECEIVE_BACKOFF_BASE * (1 << RECEIVE_BACKOFF_MAX_DOUBLINGS);
        assert_eq!(top, Duration::from_millis(25_600));
    }

    #[test]
    fn worker_ids_are_unique_per_config() {
        assert_ne!(WorkerConfig::default().id, WorkerConfig::default().id);
    }
}
