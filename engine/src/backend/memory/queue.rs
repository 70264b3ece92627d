//! The in-memory [`TaskQueue`]: delays, visibility and receive counts like SQS, plus
//! seeded duplicates and reordering.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use super::{lock, Faults};
use crate::backend::{Delivery, TaskQueue};
use crate::clock::SharedClock;
use crate::error::QueueError;
use crate::job::Millis;

struct Message {
    message_id: String,
    body: String,
    attributes: Vec<(String, String)>,
    visible_at: Millis,
    receive_count: u32,
    receipt: u64,
}

struct QueueState {
    messages: BTreeMap<u64, Message>,
    next_key: u64,
    next_receipt: u64,
    rng: StdRng,
    sent: Vec<String>,
    dead: Vec<(String, String)>,
}

/// Chaos settings of a [`MemoryTaskQueue`].
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueChaos {
    /// Probability that a sent message is stored twice (delivered twice).
    pub duplicate: f64,
    /// Probability that a sent message is lost outright (for the sweeper's tests).
    pub lose: f64,
}

/// The in-memory [`TaskQueue`]: per-message delays and visibility on the engine's clock,
/// random (seeded) delivery order, optional duplication.
#[derive(Clone)]
pub struct MemoryTaskQueue {
    state: Arc<Mutex<QueueState>>,
    notify: Arc<Notify>,
    clock: SharedClock,
    chaos: QueueChaos,
    faults: Option<Arc<dyn Faults>>,
}

impl MemoryTaskQueue {
    /// An empty queue on `clock`, its randomness seeded by `seed`.
    pub fn new(clock: SharedClock, seed: u64, chaos: QueueChaos) -> Self {
        MemoryTaskQueue {
            state: Arc::new(Mutex::new(QueueState {
                messages: BTreeMap::new(),
                next_key: 0,
                next_receipt: 0,
                rng: StdRng::seed_from_u64(seed),
                sent: Vec::new(),
                dead: Vec::new(),
            })),
            notify: Arc::new(Notify::new()),
            clock,
            chaos,
            faults: None,
        }
    }

    /// The same queue seen through another fault hook.
    pub fn view(&self, faults: Arc<dyn Faults>) -> Self {
        MemoryTaskQueue {
            faults: Some(faults),
            ..self.clone()
        }
    }

    /// Every body ever sent, in order.
    pub fn sent(&self) -> Vec<String> {
        lock(&self.state).sent.clone()
    }

    /// Messages moved to the dead-letter queue, with their reasons.
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        lock(&self.state).dead.clone()
    }

    /// Messages still in the queue (visible or not).
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn point(&self, op: &'static str, after: bool) {
        if let Some(f) = &self.faults {
            f.point(op, after).await;
        }
    }

    fn parse_receipt(receipt: &str) -> Option<(u64, u64)> {
        let (k, r) = receipt.split_once('#')?;
        Some((k.parse().ok()?, r.parse().ok()?))
    }
}

#[async_trait]
impl TaskQueue for MemoryTaskQueue {
    async fn send(
        &self,
        body: &str,
        delay: Duration,
        attributes: &[(String, String)],
    ) -> Result<(), QueueError> {
        self.point("queue.send", false).await;
        {
            let now = self.clock.now();
            let mut s = lock(&self.state);
            s.sent.push(body.to_string());
            let lost = self.chaos.lose > 0.0 && s.rng.random_bool(self.chaos.lose);
            let copies = if lost {
                0
            } else if self.chaos.duplicate > 0.0 && s.rng.random_bool(self.chaos.duplicate) {
                2
            } else {
                1
            };
            let message_id = uuid::Builder::from_random_bytes(s.rng.random())
                .into_uuid()
                .to_string();
            for _ in 0..copies {
                let key = s.next_key;
                s.next_key += 1;
                s.messages.insert(
                    key,
                    Message {
                        message_id: message_id.clone(),
                        body: body.to_string(),
                        attributes: attributes.to_vec(),
                        visible_at: now + delay.min(self.max_delay()).as_millis() as Millis,
                        receive_count: 0,
                        receipt: 0,
                    },
                );
            }
        }
        self.notify.notify_waiters();
        self.point("queue.send", true).await;
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_visible = {
                let now = self.clock.now();
                let mut guard = lock(&self.state);
                let s = &mut *guard;
                let mut visible: Vec<u64> = s
                    .messages
                    .iter()
                    .filter(|(_, m)| m.visible_at <= now)
                    .map(|(k, _)| *k)
                    .collect();
                if !visible.is_empty() {
                    let mut out = Vec::new();
                    while out.len() < max && !visible.is_empty() {
                        let i = s.rng.random_range(0..visible.len());
                        let key = visible.swap_remove(i);
                        s.next_receipt += 1;
                        let receipt = s.next_receipt;
                        if let Some(m) = s.messages.get_mut(&key) {
                            m.receive_count += 1;
                            m.receipt = receipt;
                            m.visible_at = now + visibility.as_millis() as Millis;
                            out.push(Delivery {
                                message_id: m.message_id.clone(),
                                receipt: format!("{key}#{receipt}"),
                                body: m.body.clone(),
                                receive_count: m.receive_count,
                                attributes: m.attributes.clone(),
                                sender_id: None,
                            });
                        }
                    }
                    return Ok(out);
                }
                s.messages.values().map(|m| m.visible_at).min()
            };
            let now = self.clock.now();
            let mut until = give_up;
            if let Some(at) = next_visible {
                let d = Duration::from_millis((at - now).max(1) as u64);
                until = until.min(tokio::time::Instant::now() + d);
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.point("queue.delete", false).await;
        if let Some((key, _)) = Self::parse_receipt(receipt) {
            // Like SQS at its worst: an outdated receipt still deletes the message.
            lock(&self.state).messages.remove(&key);
        }
        self.point("queue.delete", true).await;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.point("queue.set_visibility", false).await;
        let result = {
            let now = self.clock.now();
            let mut s = lock(&self.state);
            match Self::parse_receipt(receipt)
                .and_then(|(key, r)| s.messages.get_mut(&key).filter(|m| m.receipt == r))
            {
                Some(m) => {
                    m.visible_at = now + visibility.as_millis() as Millis;
                    Ok(())
                }
                None => Err(QueueError::Service(format!(
                    "receipt handle {receipt} is no longer valid"
                ))),
            }
        };
        self.notify.notify_waiters();
        self.point("queue.set_visibility", true).await;
        result
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let mut s = lock(&self.state);
        s.dead.push((delivery.body.clone(), reason.to_string()));
        if let Some((key, _)) = Self::parse_receipt(&delivery.receipt) {
            s.messages.remove(&key);
        }
        Ok(())
    }
}
