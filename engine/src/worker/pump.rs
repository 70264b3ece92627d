//! Slots and receives: a pump reads one queue (the task queue or an intake queue) and hands
//! each message to a handler, never receiving a message it has no slot for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

use super::config::{RECEIVE_BACKOFF_BASE, RECEIVE_BACKOFF_MAX_DOUBLINGS};
use super::run::report_panic;
use super::{Intake, Intent, Worker};

/// Slots an idle queue's long poll holds (see `idle` in [`Worker::pump`]).
const IDLE_SLOTS: usize = 2;

impl Worker {
    /// Receives from one queue (the task queue, or an intake queue) until told to stop,
    /// and returns the handlers still running.
    pub(super) async fn pump(
        &self,
        intake: Option<Intake>,
        mut stop: watch::Receiver<bool>,
        permits: Arc<Semaphore>,
        share: usize,
    ) -> JoinSet<()> {
        let cfg = self.config();
        let queue = match &intake {
            Some(i) => Arc::clone(&i.queue),
            None => Arc::clone(self.inner.jobs.queue()),
        };
        let mut handlers = JoinSet::new();
        let mut failures: u32 = 0;
        // Whether the last receive drained the queue (fewer messages than asked for). An
        // idle queue is long-polled holding two slots, not its whole share, so that it does
        // not keep the share from the other queues for the length of every poll; and two,
        // not one, so that the single message of a quiet moment comes back as "fewer than
        // asked for" and the next receive waits again, instead of a receive that does not
        // wait and finds nothing. While full batches come back, it takes a batch at a time
        // with receives that do not wait.
        let mut idle = true;
        loop {
            if *stop.borrow() {
                break;
            }
            while let Some(done) = handlers.try_join_next() {
                report_panic(done);
            }
            // Reserve the slots before receiving, and ask for no more messages than that: a
            // message fetched without a slot would wait with nothing extending its
            // visibility (it would come back, be received again, and could end in the DLQ).
            let first = tokio::select! {
                _ = stop.changed() => break,
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut reserved = vec![first];
            let want = if idle { IDLE_SLOTS.min(share) } else { share };
            while reserved.len() < want {
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(p) => reserved.push(p),
                    Err(_) => break,
                }
            }
            let room = reserved.len();
            let wait = if idle { cfg.poll_wait } else { Duration::ZERO };
            // Only shutdown may interrupt a receive: an interrupted receive hides whatever
            // it fetched for a whole visibility timeout.
            let received = tokio::select! {
                _ = stop.changed() => break,
                r = queue.receive(room, wait, cfg.visibility) => r,
            };
            match received {
                Ok(deliveries) => {
                    failures = 0;
                    // Fewer messages than asked for: the queue is drained for now.
                    idle = deliveries.len() < room;
                    for d in deliveries {
                        // The queue never returns more than asked; should it, the extra
                        // message is left to come back rather than run without a slot.
                        let Some(permit) = reserved.pop() else {
                            warn!(message_id = %d.message_id, "received more messages than asked for");
                            continue;
                        };
                        let me = self.clone();
                        let q = Arc::clone(&queue);
                        let parse = intake.as_ref().map(|i| Arc::clone(&i.parse));
                        handlers.spawn(async move {
                            match parse {
                                None => me.handle(q, d).await,
                                Some(parse) => match parse(&d) {
                                    Ok(Intent::Start(new)) => me.start(q, d, new).await,
                                    Ok(Intent::Wake(signal)) => me.signal(q, d, signal).await,
                                    Err(reason) => {
                                        warn!(message_id = %d.message_id, %reason, "intake message refused; dead-lettering it");
                                        me.dead_letter(&q, &d, &reason).await;
                                    }
                                },
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    // The slots go back while this queue backs off: the other queues may use them.
                    drop(reserved);
                    failures = failures.saturating_add(1);
                    let pause =
                        RECEIVE_BACKOFF_BASE * (1 << failures.min(RECEIVE_BACKOFF_MAX_DOUBLINGS));
                    warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        handlers
    }
}
