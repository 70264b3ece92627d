//! `certflow dlq …`: the dead-letter queues of the intake and task queues.
//!
//! `list` reads without removing: each message is received with a short visibility timeout
//! (so one listing sees each message once) and made visible again straight after.
//! `redrive` sends each message back to the queue the DLQ belongs to, then deletes it.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use engine::backend::sqs::{REASON_ATTR, SOURCE_QUEUE_ATTR};
use engine::clock::rfc3339;
use engine::{Clock, QueueError};
use serde::Serialize;

use crate::cli::{DlqCommand, Names, Output, QueueKind};
use crate::view;

/// How long a listed message stays hidden while the listing runs (then made visible).
const LIST_VISIBILITY_SECS: i32 = 30;
/// How long a message being redriven stays hidden between its send and its delete.
const REDRIVE_VISIBILITY_SECS: i32 = 60;
/// Characters of the body shown in a table.
const PREVIEW_CHARS: usize = 80;
/// Characters of the dead-lettering reason shown in a table.
const REASON_CHARS: usize = 60;
/// The most messages one SQS receive returns.
const RECEIVE_BATCH: i32 = 10;
/// Wait of one receive: a short long poll, so that SQS asks all its servers (a short
/// poll may miss messages) while an empty queue still ends the loop within a second.
const RECEIVE_WAIT_SECS: i32 = 1;

/// A dead letter, as listed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeadLetter {
    pub(crate) queue: &'static str,
    pub(crate) dead_letter_queue: String,
    pub(crate) message_id: String,
    pub(crate) sent_at: Option<String>,
    pub(crate) receive_count: Option<u32>,
    pub(crate) reason: Option<String>,
    pub(crate) source_queue: Option<String>,
    pub(crate) body: String,
    #[serde(skip)]
    sent_ms: Option<i64>,
}

/// One dead-letter queue as the console shows it: how many messages, and the newest.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) kind: QueueKind,
    pub(crate) dead_letter_queue: String,
    /// `ApproximateNumberOfMessages` (visible) plus those being read right now.
    pub(crate) count: u64,
    /// The newest of the messages one short look found, newest first.
    pub(crate) newest: Vec<DeadLetter>,
}

/// Receives of one look at a queue: SQS returns at most 10 messages, some of them again
/// (they stay visible), so a few receives find the newest of a queue of modest size.
const PEEK_RECEIVES: usize = 3;

/// Each dead-letter queue's count and its newest `newest` messages, without moving or
/// hiding any: they are received with a visibility timeout of zero (only their receive
/// count goes up, which nothing acts on in a dead-letter queue).
pub(crate) async fn summaries(
    sdk: &aws_config::SdkConfig,
    names: &Names,
    newest: usize,
) -> anyhow::Result<Vec<Summary>> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut out = Vec::new();
    for (kind, name) in queues(names, None) {
        let dlq = engine::schema::dlq_name(&name);
        let dlq_url = url(&sqs, &dlq).await?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await
            .map_err(|e| map_error("GetQueueAttributes", &dlq, &e))?;
        let count: u64 = attrs
            .attributes()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum();
        let mut found: Vec<DeadLetter> = Vec::new();
        if count > 0 {
            for _ in 0..PEEK_RECEIVES {
                let got = receive(&sqs, &dlq_url, &dlq, 0).await?;
                if got.is_empty() {
                    break;
                }
                for m in &got {
                    let d = dead_letter(kind, &dlq, m);
                    if !found.iter().any(|f| f.message_id == d.message_id) {
                        found.push(d);
                    }
                }
            }
        }
        found.sort_by_key(|d| std::cmp::Reverse(d.sent_ms));
        found.truncate(newest);
        out.push(Summary {
            kind,
            dead_letter_queue: dlq,
            count,
            newest: found,
        });
    }
    Ok(out)
}

fn dead_letter(kind: QueueKind, dlq: &str, m: &Message) -> DeadLetter {
    let sys = m.attributes();
    let sent_ms = sys
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|t| t.parse::<i64>().ok());
    DeadLetter {
        queue: kind.as_str(),
        dead_letter_queue: dlq.to_string(),
        message_id: m.message_id().unwrap_or_default().to_string(),
        sent_at: sent_ms.map(rfc3339),
        receive_count: sys
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|c| c.parse().ok()),
        reason: attr(m, REASON_ATTR),
        source_queue: attr(m, SOURCE_QUEUE_ATTR),
        body: m.body().unwrap_or_default().to_string(),
        sent_ms,
    }
}

/// How many messages a redrive moved.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Moved {
    queue: &'static str,
    from: String,
    to: String,
    moved: usize,
}

fn map_error<E, R>(op: &str, queue: &str, e: &SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue") => {
            QueueError::QueueNotFound {
                queue: queue.to_string(),
            }
            .into()
        }
        _ => anyhow::anyhow!("{op} on queue {queue}: {}", DisplayErrorContext(e)),
    }
}

async fn url(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| map_error("GetQueueUrl", name, &e))?
        .queue_url
        .with_context(|| format!("GetQueueUrl {name}: no URL returned"))
}

fn queues(names: &Names, only: Option<QueueKind>) -> Vec<(QueueKind, String)> {
    [
        (QueueKind::Intake, names.intake_queue.clone()),
        (QueueKind::Events, names.events_queue.clone()),
        (QueueKind::Tasks, names.tasks_queue.clone()),
    ]
    .into_iter()
    .filter(|(k, _)| only.is_none_or(|o| o == *k))
    .collect()
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: &str,
    visibility: i32,
) -> anyhow::Result<Vec<Message>> {
    let got = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(RECEIVE_BATCH)
        .wait_time_seconds(RECEIVE_WAIT_SECS)
        .visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| map_error("ReceiveMessage", name, &e))?;
    Ok(got.messages.unwrap_or_default())
}

fn attr(m: &Message, name: &str) -> Option<String> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .map(str::to_string)
}

/// Runs `certflow dlq list` or `redrive`.
pub(crate) async fn run(
    sdk: &aws_config::SdkConfig,
    names: &Names,
    output: Output,
    cmd: DlqCommand,
) -> anyhow::Result<()> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    match cmd {
        DlqCommand::List { queue, max } => {
            let mut all = Vec::new();
            for (kind, name) in queues(names, queue) {
                all.extend(list(&sqs, kind, &name, max).await?);
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Output::Table if all.is_empty() => println!(
                    "no dead letters in {}",
                    queues(names, queue)
                        .iter()
                        .map(|(_, n)| engine::schema::dlq_name(n))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                Output::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|d| {
                            vec![
                                d.queue.to_string(),
                                d.message_id.clone(),
                                d.sent_at.clone().unwrap_or_else(|| "-".into()),
                                d.reason
                                    .as_deref()
                                    .map(|r| view::clip(r, REASON_CHARS))
                                    .unwrap_or_else(|| {
                                        "(moved by SQS after too many receives)".into()
                                    }),
                                view::clip(&d.body, PREVIEW_CHARS),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        view::table(&["QUEUE", "MESSAGE", "SENT", "REASON", "BODY"], &rows)
                    );
                    println!(
                        "{} message(s); after fixing the cause: certflow dlq redrive{}",
                        all.len(),
                        queue
                            .map(|q| format!(" --queue {}", q.as_str()))
                            .unwrap_or_default()
                    );
                }
            }
        }
        DlqCommand::Redrive { queue } => {
            if queue == Some(QueueKind::Events) {
                anyhow::bail!(
                    "events cannot be redriven: only certflow's EventBridge rules may send to {} (its policy denies everyone else); to act on a listed event, submit the export request it stands for",
                    names.events_queue
                );
            }
            let mut report = Vec::new();
            // The events queue takes messages from the rules only (see above).
            for (kind, name) in queues(names, queue)
                .into_iter()
                .filter(|(k, _)| *k != QueueKind::Events)
            {
                let moved = redrive(&sqs, kind, &name).await?;
                if output == Output::Table {
                    println!(
                        "moved {} message(s) from {} to {}",
                        moved.moved, moved.from, moved.to
                    );
                }
                report.push(moved);
            }
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
    }
    Ok(())
}

async fn list(
    sqs: &aws_sdk_sqs::Client,
    kind: QueueKind,
    queue: &str,
    max: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let dlq = engine::schema::dlq_name(queue);
    let dlq_url = url(sqs, &dlq).await?;
    let mut out = Vec::new();
    let mut receipts = Vec::new();
    let result = async {
        while out.len() < max {
            let got = receive(sqs, &dlq_url, &dlq, LIST_VISIBILITY_SECS).await?;
            if got.is_empty() {
                break;
            }
            for m in got {
                if let Some(r) = m.receipt_handle() {
                    receipts.push(r.to_string());
                }
                out.push(dead_letter(kind, &dlq, &m));
            }
        }
        anyhow::Ok(())
    }
    .await;
    // Whatever happened, give every message back at once.
    for r in receipts {
        if let Err(e) = sqs
            .change_message_visibility()
            .queue_url(&dlq_url)
            .receipt_handle(&r)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(queue = %dlq, error = %DisplayErrorContext(&e), "could not make a listed message visible again; it reappears after {LIST_VISIBILITY_SECS}s");
        }
    }
    result?;
    out.truncate(max);
    Ok(out)
}

async fn redrive(sqs: &aws_sdk_sqs::Client, kind: QueueKind, queue: &str) -> anyhow::Result<Moved> {
    let dlq = engine::schema::dlq_name(queue);
    let dlq_url = url(sqs, &dlq).await?;
    let target_url = url(sqs, queue).await?;
    // Messages dead-lettered after the redrive began (e.g. one that failed again at once)
    // are left for the next redrive, so that a poison message cannot loop.
    let began = engine::SystemClock.now();
    let mut moved = 0usize;
    loop {
        let got = receive(sqs, &dlq_url, &dlq, REDRIVE_VISIBILITY_SECS).await?;
        let mut moved_now = 0usize;
        for m in &got {
            let Some(receipt) = m.receipt_handle() else {
                continue;
            };
            let sent = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|t| t.parse::<i64>().ok());
            if sent.is_some_and(|t| t >= began) {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&dlq_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await;
                continue;
            }
            // The reason and source describe the dead-lettering, not the message.
            let attributes: HashMap<String, MessageAttributeValue> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != REASON_ATTR && k.as_str() != SOURCE_QUEUE_ATTR)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut send = sqs
                .send_message()
                .queue_url(&target_url)
                .message_body(m.body().unwrap_or_default());
            if !attributes.is_empty() {
                send = send.set_message_attributes(Some(attributes));
            }
            send.send().await.map_err(|e| {
                map_error("SendMessage", queue, &e).context(format!(
                    "moved {moved} message(s) before this one; run the command again to move the rest"
                ))
            })?;
            sqs.delete_message()
                .queue_url(&dlq_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|e| {
                    map_error("DeleteMessage", &dlq, &e).context(format!(
                        "message {} was sent back to {queue} but is still in {dlq} (a duplicate is harmless: jobs are idempotent)",
                        m.message_id().unwrap_or_default()
                    ))
                })?;
            moved += 1;
            moved_now += 1;
        }
        if moved_now == 0 {
            break;
        }
    }
    Ok(Moved {
        queue: kind.as_str(),
        from: dlq,
        to: queue.to_string(),
        moved,
    })
}
