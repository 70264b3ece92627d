//! The dead-letters page: each dead-letter queue's count and its newest messages with
//! the reason certflow dead-lettered them, read without moving or hiding any
//! (`crate::dlq::summaries`); redrive stays a CLI command, shown ready to copy.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::page::{self, PageError, Tab};
use super::Console;
use crate::cli::QueueKind;
use crate::dlq;

/// Messages shown per queue.
const NEWEST: usize = 10;
/// Characters of a message body shown (the CLI's `dlq list -o json` prints it whole).
const BODY_CHARS: usize = 240;

struct Letter {
    sent: String,
    reason: String,
    body: String,
    id: String,
}

struct Queue {
    kind: &'static str,
    dlq: String,
    count: u64,
    letters: Vec<Letter>,
    /// How to move them back (the events queue takes messages from its rules only).
    redrive: Option<String>,
}

#[derive(Template)]
#[template(path = "console/dead_letters.html")]
struct DeadLettersPage {
    tab: Tab,
    queues: Vec<Queue>,
    total: u64,
}

/// `GET /dead-letters`.
pub(crate) async fn page(State(console): State<Console>) -> Result<Response, PageError> {
    let found = dlq::summaries(&console.sdk, &console.names, NEWEST)
        .await
        .map_err(|e| console.failed(e))?;
    let total = found.iter().map(|q| q.count).sum();
    let queues = found
        .into_iter()
        .map(|q| Queue {
            kind: q.kind.as_str(),
            dlq: q.dead_letter_queue,
            count: q.count,
            redrive: (q.kind != QueueKind::Events && q.count > 0)
                .then(|| format!("certflow dlq redrive --queue {}", q.kind.as_str())),
            letters: q
                .newest
                .into_iter()
                .map(|d| Letter {
                    // The receive count is left out: the console's own looks raise it.
                    sent: d.sent_at.unwrap_or_default(),
                    reason: d
                        .reason
                        .unwrap_or_else(|| "moved by SQS after too many receives".into()),
                    body: crate::view::clip(&d.body, BODY_CHARS),
                    id: d.message_id,
                })
                .collect(),
        })
        .collect();
    page::html(&DeadLettersPage {
        tab: Tab::DeadLetters,
        queues,
        total,
    })
}
