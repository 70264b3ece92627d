//! The SQS [`TaskQueue`]: a standard queue and its dead-letter queue
//! ([`schema::dlq_name`]).
//!
//! SQS bounds what one call can ask for; this backend clamps instead of failing: a delay
//! is rounded up to whole seconds and capped at 15 minutes (the engine chains longer
//! waits), a receive asks for at most 10 messages and long-polls for at most 20 s, and a
//! visibility timeout is at least 1 s and at most 12 hours.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

use super::{Delivery, TaskQueue};
use crate::error::QueueError;
use crate::schema;

/// Longest delay SQS accepts on one message, in seconds.
const MAX_DELAY_SECS: u64 = 900;
/// Most messages one ReceiveMessage returns.
const MAX_BATCH: usize = 10;
/// Longest long poll SQS accepts, in seconds.
const MAX_WAIT_SECS: u64 = 20;
/// Time a long poll's attempt gets beyond its wait, for the request and answer themselves.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);
/// Longest visibility timeout SQS accepts, in seconds.
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// How long the dead-letter queue keeps messages (the SQS maximum, 14 days).
const DLQ_RETENTION_SECS: u32 = 1_209_600;
/// Most message attributes SQS accepts on one message.
const MAX_ATTRIBUTES: usize = 10;
/// Longest `certflow-reason` kept on a dead letter, in characters.
const MAX_REASON_CHARS: usize = 1024;

/// Attribute of a dead letter: why it was dead-lettered.
pub const REASON_ATTR: &str = "certflow-reason";
/// Attribute of a dead letter: the name of the queue it came from.
pub const SOURCE_QUEUE_ATTR: &str = "certflow-source-queue";

/// The data type of the message attributes this backend reads and writes.
const STRING: &str = "String";

/// A [`TaskQueue`] on an SQS standard queue, with an optional dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsTaskQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    dlq_url: Option<String>,
    name: String,
}

impl SqsTaskQueue {
    /// Timeouts for a receive that long-polls for `wait`: the client's per-attempt and
    /// per-operation timeouts are sized for ordinary calls (seconds), and would cut every
    /// long poll short into an error. Only the time the poll is allowed to wait is added.
    fn long_poll_timeouts(&self, wait: Duration) -> aws_sdk_sqs::config::Builder {
        let overrides = aws_sdk_sqs::config::Builder::default();
        let Some(current) = self.client.config().timeout_config() else {
            return overrides;
        };
        let (attempt, operation) = (
            current.operation_attempt_timeout(),
            current.operation_timeout(),
        );
        if attempt.is_none() && operation.is_none() {
            // Nothing that could cut a long poll short; an empty override would instead
            // switch off the connect timeout too.
            return overrides;
        }
        let mut timeouts = current.to_builder();
        if let Some(attempt) = attempt {
            timeouts = timeouts.operation_attempt_timeout(attempt.max(wait + LONG_POLL_MARGIN));
        }
        if let Some(operation) = operation {
            timeouts = timeouts.operation_timeout(operation + wait + LONG_POLL_MARGIN);
        }
        overrides.timeout_config(timeouts.build())
    }

    /// Looks up the queue `name` and its dead-letter queue ([`schema::dlq_name`]). A missing
    /// queue is [`QueueError::QueueNotFound`]; a missing dead-letter queue is allowed
    /// ([`TaskQueue::dead_letter`] then fails).
    pub async fn connect(
        client: aws_sdk_sqs::Client,
        name: impl Into<String>,
    ) -> Result<Self, QueueError> {
        let name = name.into();
        let url = queue_url(&client, &name).await?;
        let dlq_url = match queue_url(&client, &schema::dlq_name(&name)).await {
            Ok(url) => Some(url),
            Err(QueueError::QueueNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(SqsTaskQueue {
            client,
            url,
            dlq_url,
            name,
        })
    }

    /// A queue known by its URL (and its dead-letter queue's, if any). Its name is the
    /// last segment of the URL.
    pub fn from_urls(
        client: aws_sdk_sqs::Client,
        url: impl Into<String>,
        dlq_url: Option<String>,
    ) -> Self {
        let url = url.into();
        let name = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        SqsTaskQueue {
            client,
            url,
            dlq_url,
            name,
        }
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue URL, if there is one.
    pub fn dlq_url(&self) -> Option<&str> {
        self.dlq_url.as_deref()
    }

    /// The queue name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn error<E, R>(&self, op: &str, e: &SdkError<E, R>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        map_error(op, &self.name, e)
    }

    async fn send_to(
        &self,
        op: &str,
        url: &str,
        body: &str,
        delay_secs: i32,
        attributes: HashMap<String, MessageAttributeValue>,
    ) -> Result<(), QueueError> {
        let mut req = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(delay_secs);
        if !attributes.is_empty() {
            req = req.set_message_attributes(Some(attributes));
        }
        req.send().await.map_err(|e| self.error(op, &e))?;
        Ok(())
    }
}

#[async_trait]
impl TaskQueue for SqsTaskQueue {
    async fn send(
        &self,
        body: &str,
        delay: Duration,
        attributes: &[(String, String)],
    ) -> Result<(), QueueError> {
        let delay = ceil_secs(delay).min(MAX_DELAY_SECS);
        let attributes = string_attributes(attributes.iter(), MAX_ATTRIBUTES)?;
        self.send_to("send", &self.url, body, secs_i32(delay), attributes)
            .await
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let wait = Duration::from_secs(wait.as_secs().min(MAX_WAIT_SECS));
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(secs_i32(wait.as_secs()))
            .visibility_timeout(secs_i32(visibility_secs(visibility)))
            // The receive count drives the DLQ bookkeeping; the sender id is recorded on the
            // jobs intake messages create (who asked for it, as SQS saw it).
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .message_attribute_names("All")
            .customize()
            .config_override(self.long_poll_timeouts(wait))
            .send()
            .await
            .map_err(|e| self.error("receive", &e))?;
        let deliveries = out
            .messages()
            .iter()
            .filter_map(|m| {
                // SQS always sends both; a message without them could not be deleted.
                let (Some(message_id), Some(receipt)) = (m.message_id(), m.receipt_handle())
                else {
                    tracing::warn!(queue = %self.name, "received a message without id or receipt handle");
                    return None;
                };
                let system = |name: &MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(name)).cloned()
                };
                let receive_count = system(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                let sender_id = system(&MessageSystemAttributeName::SenderId)
                    .filter(|s| !s.is_empty());
                let mut attributes: Vec<(String, String)> = m
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.data_type() == STRING || v.data_type().starts_with("String."))
                    .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                    .collect();
                attributes.sort();
                Some(Delivery {
                    message_id: message_id.to_string(),
                    receipt: receipt.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                    attributes,
                    sender_id,
                })
            })
            .collect();
        Ok(deliveries)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.error("delete", &e))?;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        let secs = ceil_secs(visibility).min(MAX_VISIBILITY_SECS);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_i32(secs))
            .send()
            .await
            .map_err(|e| self.error("set_visibility", &e))?;
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let Some(dlq) = &self.dlq_url else {
            return Err(QueueError::Service(format!(
                "queue {} has no dead-letter queue",
                self.name
            )));
        };
        let reason = if reason.is_empty() {
            "(no reason given)"
        } else {
            truncate_chars(reason, MAX_REASON_CHARS)
        };
        let kept = delivery
            .attributes
            .iter()
            .filter(|(k, _)| k != REASON_ATTR && k != SOURCE_QUEUE_ATTR);
        let mut attributes = string_attributes(kept, MAX_ATTRIBUTES - 2)?;
        attributes.insert(REASON_ATTR.to_string(), string_value(reason)?);
        attributes.insert(SOURCE_QUEUE_ATTR.to_string(), string_value(&self.name)?);
        self.send_to("dead_letter", dlq, &delivery.body, 0, attributes)
            .await?;
        self.delete(&delivery.receipt).await
    }

    fn max_delay(&self) -> Duration {
        Duration::from_secs(MAX_DELAY_SECS)
    }
}

/// Creates the queue `name` and its dead-letter queue (which receives a message after
/// `max_receive` receives), or brings existing ones to these settings. Returns the queue's
/// URL. Safe to run again and again.
pub async fn create_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    name: &str,
    visibility: Duration,
    max_receive: u32,
) -> Result<String, QueueError> {
    let dlq = schema::dlq_name(name);
    let dlq_attrs = HashMap::from([(
        QueueAttributeName::MessageRetentionPeriod,
        DLQ_RETENTION_SECS.to_string(),
    )]);
    let dlq_url = create_or_update(client, &dlq, dlq_attrs).await?;
    let arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| map_error("get_queue_attributes", &dlq, &e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| QueueError::Service(format!("queue {dlq} has no QueueArn attribute")))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": max_receive.max(1),
    })
    .to_string();
    let attrs = HashMap::from([
        (QueueAttributeName::RedrivePolicy, redrive),
        (
            QueueAttributeName::VisibilityTimeout,
            visibility_secs(visibility).to_string(),
        ),
        (
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            MAX_WAIT_SECS.to_string(),
        ),
    ]);
    create_or_update(client, name, attrs).await
}

/// Creates a queue with `attrs`, or sets them on the queue if it exists with others.
async fn create_or_update(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attrs: HashMap<QueueAttributeName, String>,
) -> Result<String, QueueError> {
    let created = client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs.clone()))
        .send()
        .await;
    match created {
        Ok(out) => {
            let url = out.queue_url.ok_or_else(|| {
                QueueError::Service(format!("create_queue {name}: no URL returned"))
            })?;
            // CreateQueue succeeds on an existing queue whose attributes already match.
            tracing::info!(queue = name, url = %url, "queue ready");
            Ok(url)
        }
        Err(e) if matches!(e.code(), Some("QueueNameExists" | "QueueAlreadyExists")) => {
            let url = queue_url(client, name).await?;
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attrs))
                .send()
                .await
                .map_err(|e| map_error("set_queue_attributes", name, &e))?;
            tracing::info!(queue = name, url = %url, "queue existed; attributes updated");
            Ok(url)
        }
        Err(e) => Err(map_error("create_queue", name, &e)),
    }
}

async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, QueueError> {
    client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| map_error("get_queue_url", name, &e))?
        .queue_url
        .ok_or_else(|| QueueError::Service(format!("get_queue_url {name}: no URL returned")))
}

/// A missing queue is [`QueueError::QueueNotFound`]; anything else a
/// [`QueueError::Service`] naming the operation.
fn map_error<E, R>(op: &str, queue: &str, e: &SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match e.code() {
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue") => {
            QueueError::QueueNotFound {
                queue: queue.to_string(),
            }
        }
        _ => QueueError::Service(format!("{op}: {}", DisplayErrorContext(e))),
    }
}

fn string_value(v: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type(STRING)
        .string_value(v)
        .build()
        .map_err(|e| QueueError::Service(format!("message attribute: {e}")))
}

/// String message attributes, at most `max` of them. SQS refuses empty values, so those
/// are left out.
fn string_attributes<'a>(
    attrs: impl Iterator<Item = &'a (String, String)>,
    max: usize,
) -> Result<HashMap<String, MessageAttributeValue>, QueueError> {
    let mut out = HashMap::new();
    for (k, v) in attrs.filter(|(_, v)| !v.is_empty()) {
        if out.len() >= max {
            tracing::warn!(attribute = %k, "more than {max} message attributes: dropped");
            continue;
        }
        out.insert(k.clone(), string_value(v)?);
    }
    Ok(out)
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A visibility timeout in seconds, as SQS accepts it (1 s to 12 h).
fn visibility_secs(d: Duration) -> u64 {
    ceil_secs(d).clamp(1, MAX_VISIBILITY_SECS)
}

fn secs_i32(secs: u64) -> i32 {
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// At most `max` characters of `s`, cut on a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_millis(3001)), 4);
        assert_eq!(visibility_secs(Duration::ZERO), 1);
        assert_eq!(
            visibility_secs(Duration::from_secs(100_000)),
            MAX_VISIBILITY_SECS
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        let long = "é".repeat(2000);
        assert_eq!(
            truncate_chars(&long, MAX_REASON_CHARS).chars().count(),
            1024
        );
    }

    #[test]
    fn name_from_url() {
        let client = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .build(),
        );
        let q = SqsTaskQueue::from_urls(
            client,
            "https://sqs.us-east-1.amazonaws.com/123456789012/certflow-tasks",
            None,
        );
        assert_eq!(q.name(), "certflow-tasks");
        assert_eq!(q.dlq_url(), None);
    }
}
