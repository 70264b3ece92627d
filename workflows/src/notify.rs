//! certflow's outcome events on EventBridge: what went wrong (a job failed, a renewal was
//! not installed, drift, a certificate near expiry) and what each reconcile found, so that
//! people and other systems learn it without polling `certflow jobs list`.
//!
//! Each [`Notice`] becomes one event with source [`SOURCE`], one of the detail types below,
//! its struct as the `detail` (PascalCase field names, every field always present, `null`
//! when unknown), and the certificate's ARN in `resources` when there is one. The events
//! and their fields are documented for subscribers in `docs/events.md`; the names here are
//! that contract, so a change to them is a breaking change for every subscriber.
//!
//! What is never in an event: a certificate, a key, a passphrase, a secret's value. The
//! fields hold ARNs, names, serials, dates, counts, server ids and the reasons jobs give,
//! which never hold secret material either.
//!
//! Publishing is best effort by design: [`Notifier::publish`] reports what EventBridge did
//! not take as an error, and the caller decides what a lost notice costs (the job's own
//! record stays the source of truth).

use std::time::Duration;

use aws_sdk_eventbridge::types::{PutEventsRequestEntry, PutEventsResultEntry};
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

/// The `source` of every certflow event (a rule matches certflow's events with
/// `"source": ["certflow"]`).
pub const SOURCE: &str = "certflow";
/// `detail-type` of [`JobFailed`].
pub const JOB_FAILED: &str = "certflow Job Failed";
/// `detail-type` of [`RenewalFailed`].
pub const RENEWAL_FAILED: &str = "certflow Renewal Failed";
/// `detail-type` of [`DriftFound`].
pub const DRIFT_FOUND: &str = "certflow Drift Found";
/// `detail-type` of [`CertificateExpiring`].
pub const CERTIFICATE_EXPIRING: &str = "certflow Certificate Expiring";
/// `detail-type` of [`ReconcileSummary`].
pub const RECONCILE_SUMMARY: &str = "certflow Reconcile Summary";

/// What ACM does when an exportable certificate's renewal was not exported (put in
/// [`RenewalFailed::consequence`]): the reason a failed renewal needs a person soon, not
/// at the next renewal.
pub const RENEWAL_BLOCKED: &str = "ACM renews an exportable certificate automatically only if it was exported since it was issued or last renewed: until an export of this certificate succeeds, ACM will not renew it again, and it will expire";

/// EventBridge takes at most this many entries per `PutEvents`.
const MAX_ENTRIES_PER_CALL: usize = 10;
/// Tries of the entries EventBridge reports failed, the first send excluded: a failed
/// entry is usually throttling or a passing internal error, gone within a second.
const RETRIES: usize = 3;
/// The first pause before entries are sent again; it doubles (with jitter) each time.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause: publishing runs inside a step, which must not stall on it.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Error codes of an entry that sending again cannot fix.
const PERMANENT: &[&str] = &["InvalidArgument", "MalformedDetail"];

/// A job ended FAILED: what failed, where, and the two commands that show and resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobFailed {
    /// The job's id.
    pub job_id: String,
    /// The workflow it ran (`export-certificate`, `renew-certificate`, …).
    pub workflow: String,
    /// The certificate it was about, when it had one.
    pub certificate_arn: Option<String>,
    /// Its target, `<TagKey>=<TagValue>`, when it had one.
    pub target: Option<String>,
    /// The certificate's name on the servers, when it had one.
    pub cert_name: Option<String>,
    /// Why it failed: the job's last error.
    pub reason: String,
    /// The command that shows the job: `certflow jobs show <id>`.
    pub show: String,
    /// The command that resumes it where it failed: `certflow jobs retry <id>`.
    pub retry: String,
}

/// An export that a renewal started did not install the renewed certificate on its target:
/// besides the servers running the old certificate, ACM will not renew again
/// ([`RENEWAL_BLOCKED`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewalFailed {
    /// The export job that failed.
    pub job_id: String,
    /// The renewed certificate.
    pub certificate_arn: String,
    /// The target, `<TagKey>=<TagValue>`.
    pub target: String,
    /// The certificate's name on the servers.
    pub cert_name: String,
    /// The renewed serial that did not get installed, when ACM had reported it.
    pub serial: Option<String>,
    /// Why the export failed: the job's last error.
    pub reason: String,
    /// What follows if nobody acts: [`RENEWAL_BLOCKED`].
    pub consequence: String,
    /// The command that resumes the export: `certflow jobs retry <id>`.
    pub retry: String,
}

/// The reconcile found a row whose servers, or whose export, lag behind ACM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DriftFound {
    /// The certificate.
    pub certificate_arn: String,
    /// The target, `<TagKey>=<TagValue>`.
    pub target: String,
    /// The certificate's name on the servers.
    pub cert_name: String,
    /// The serial ACM holds now, when it could be read.
    pub acm_serial: Option<String>,
    /// The serial last exported for this row (the inventory's), if any.
    pub exported_serial: Option<String>,
    /// Servers of the target not at the exported serial.
    pub lagging: u32,
    /// The first 20 of those servers' ids (`lagging` counts them all).
    pub servers: Vec<String>,
    /// What the reconcile did about it: `export` (ACM holds a newer serial than was
    /// exported), `install` (servers lag behind the export), or `none`.
    pub action: String,
    /// The job it started, when it started one.
    pub job_id: Option<String>,
    /// Why it acted, or why it did not.
    pub why: String,
    /// The reconcile job that found it.
    pub reconcile_job_id: String,
}

/// A certificate certflow installs is close to expiry, or past it, and nothing in
/// certflow will replace it: it needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateExpiring {
    /// The certificate.
    pub certificate_arn: String,
    /// Its ACM status (`ISSUED`, `EXPIRED`, …), when it could be read.
    pub status: Option<String>,
    /// Its expiry, RFC 3339, when known.
    pub not_after: Option<String>,
    /// Whole days until then (negative once past), when known.
    pub days_to_expiry: Option<i64>,
    /// The targets it is installed on, `<TagKey>=<TagValue>` each.
    pub targets: Vec<String>,
    /// Why it will not be renewed in time, and what to do.
    pub why: String,
    /// The job that found it.
    pub job_id: String,
}

/// What one reconcile run found and did, sent once at its end whatever it found (so that
/// a missing summary itself says the reconcile did not run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReconcileSummary {
    /// The reconcile job.
    pub job_id: String,
    /// Inventory rows it read.
    pub rows: u32,
    /// Rows found in sync.
    pub in_sync: u32,
    /// Export jobs it started.
    pub exports: u32,
    /// Install jobs it started.
    pub installs: u32,
    /// Notices it sent for a person (drift left alone, certificates expiring).
    pub alerts: u32,
    /// Rows still out of sync after this run.
    pub unfixed: u32,
    /// The first few problems, one line each.
    pub first_problems: Vec<String>,
}

/// One certflow event, before it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// [`JOB_FAILED`].
    JobFailed(JobFailed),
    /// [`RENEWAL_FAILED`].
    RenewalFailed(RenewalFailed),
    /// [`DRIFT_FOUND`].
    DriftFound(DriftFound),
    /// [`CERTIFICATE_EXPIRING`].
    CertificateExpiring(CertificateExpiring),
    /// [`RECONCILE_SUMMARY`].
    ReconcileSummary(ReconcileSummary),
}

impl Notice {
    /// The event's `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            Notice::JobFailed(_) => JOB_FAILED,
            Notice::RenewalFailed(_) => RENEWAL_FAILED,
            Notice::DriftFound(_) => DRIFT_FOUND,
            Notice::CertificateExpiring(_) => CERTIFICATE_EXPIRING,
            Notice::ReconcileSummary(_) => RECONCILE_SUMMARY,
        }
    }

    /// The event's `detail`: the struct's fields, PascalCase.
    pub fn detail(&self) -> serde_json::Value {
        // Strings, numbers, options and lists of strings always serialise; the Null
        // fallback only keeps this total.
        let v = match self {
            Notice::JobFailed(d) => serde_json::to_value(d),
            Notice::RenewalFailed(d) => serde_json::to_value(d),
            Notice::DriftFound(d) => serde_json::to_value(d),
            Notice::CertificateExpiring(d) => serde_json::to_value(d),
            Notice::ReconcileSummary(d) => serde_json::to_value(d),
        };
        v.unwrap_or_default()
    }

    /// The event's `resources`: the certificate's ARN when there is one, so that a rule
    /// (or an IAM condition) can pick one certificate's events.
    pub fn resources(&self) -> Vec<String> {
        let arn = match self {
            Notice::JobFailed(d) => d.certificate_arn.as_deref(),
            Notice::RenewalFailed(d) => Some(d.certificate_arn.as_str()),
            Notice::DriftFound(d) => Some(d.certificate_arn.as_str()),
            Notice::CertificateExpiring(d) => Some(d.certificate_arn.as_str()),
            Notice::ReconcileSummary(_) => None,
        };
        arn.filter(|a| !a.is_empty())
            .map(str::to_string)
            .into_iter()
            .collect()
    }
}

/// Why publishing did not (entirely) succeed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A `PutEvents` call failed as a whole (after the SDK's own retries): access denied, no
    /// such bus, the network.
    #[error("EventBridge PutEvents on bus {bus} failed, {unpublished} of {total} event(s) not published: {message}")]
    Refused {
        /// The bus.
        bus: String,
        /// Events not published (those of the failed calls, and any entry refused).
        unpublished: usize,
        /// Events asked for.
        total: usize,
        /// The SDK's error, with its whole context (code, message, cause).
        message: String,
    },
    /// EventBridge took the calls but refused some entries, also when sent again.
    #[error("EventBridge did not take {unpublished} of {total} event(s) on bus {bus}; the first, sent {attempts} time(s), failed with {code}: {message}")]
    Failed {
        /// The bus.
        bus: String,
        /// Events not published.
        unpublished: usize,
        /// Events asked for.
        total: usize,
        /// How many times the first of them was sent.
        attempts: usize,
        /// The first failed entry's `ErrorCode`.
        code: String,
        /// The first failed entry's `ErrorMessage`.
        message: String,
    },
}

/// Publishes [`Notice`]s on one event bus, or nowhere when notifications are off.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<Bus>,
}

/// Where a notifier publishes.
#[derive(Debug, Clone)]
struct Bus {
    client: aws_sdk_eventbridge::Client,
    name: String,
}

/// One entry's failure, as EventBridge reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryError {
    code: String,
    message: String,
}

impl Notifier {
    /// Publishes on `bus` ("default" for the default bus; a name or an ARN).
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Notifier {
            target: Some(Bus {
                client,
                name: bus.into(),
            }),
        }
    }

    /// Publishes nothing (notifications off).
    pub fn off() -> Self {
        Notifier { target: None }
    }

    /// Whether [`Notifier::publish`] sends anything: a caller may skip building notices
    /// nobody will see.
    pub fn is_on(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `notices`, 10 per `PutEvents` (the API's limit). Entries EventBridge
    /// reports failed are sent again a few times after a short, growing pause; what still
    /// failed, or a call that failed as a whole, is reported as an error once every chunk
    /// was tried. `Ok(())` at once when off or when `notices` is empty.
    pub async fn publish(&self, notices: &[Notice]) -> Result<(), NotifyError> {
        let Some(bus) = &self.target else {
            return Ok(());
        };
        if notices.is_empty() {
            return Ok(());
        }
        let mut refused: Option<String> = None;
        let mut failed: Option<(EntryError, usize)> = None;
        let mut unpublished = 0;
        for chunk in notices.chunks(MAX_ENTRIES_PER_CALL) {
            let entries: Vec<PutEventsRequestEntry> =
                chunk.iter().map(|n| entry(n, &bus.name)).collect();
            let outcome = bus.send_with_retries(entries).await;
            unpublished += outcome.unpublished;
            if let Some(message) = outcome.call_failed {
                refused.get_or_insert(message);
            }
            if let Some(first) = outcome.entry_error {
                failed.get_or_insert(first);
            }
        }
        let total = notices.len();
        if let Some(message) = refused {
            return Err(NotifyError::Refused {
                bus: bus.name.clone(),
                unpublished,
                total,
                message,
            });
        }
        if let Some((first, attempts)) = failed {
            return Err(NotifyError::Failed {
                bus: bus.name.clone(),
                unpublished,
                total,
                attempts,
                code: first.code,
                message: first.message,
            });
        }
        Ok(())
    }
}

/// What became of one chunk of entries.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Entries EventBridge never took.
    unpublished: usize,
    /// The error of the first entry never taken, and how many sends it had.
    entry_error: Option<(EntryError, usize)>,
    /// A call that failed as a whole (its entries are counted in `unpublished`).
    call_failed: Option<String>,
}

impl Bus {
    /// Sends one chunk, then the entries EventBridge refused again while the pauses last
    /// (except those no new send can fix); says what was never taken.
    async fn send_with_retries(&self, entries: Vec<PutEventsRequestEntry>) -> Outcome {
        let mut pending = entries;
        // Each entry given up on, with how many times it was sent.
        let mut given_up: Vec<(EntryError, usize)> = Vec::new();
        let mut pauses = pauses();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = self
                .client
                .put_events()
                .set_entries(Some(pending.clone()))
                .send()
                .await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    return Outcome {
                        unpublished: pending.len() + given_up.len(),
                        entry_error: given_up.into_iter().next(),
                        call_failed: Some(
                            aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string(),
                        ),
                    }
                }
            };
            let mut again = Vec::new();
            let mut errors = Vec::new();
            for (entry, error) in failed_entries(pending, answer.entries()) {
                if PERMANENT.contains(&error.code.as_str()) {
                    given_up.push((error, attempts));
                } else {
                    again.push(entry);
                    errors.push(error);
                }
            }
            pending = again;
            let pause = if pending.is_empty() {
                None
            } else {
                pauses.next()
            };
            let Some(pause) = pause else {
                given_up.extend(errors.into_iter().map(|e| (e, attempts)));
                return Outcome {
                    unpublished: given_up.len(),
                    entry_error: given_up.into_iter().next(),
                    call_failed: None,
                };
            };
            tracing::debug!(
                bus = %self.name,
                failed = pending.len(),
                code = %errors.first().map(|e| e.code.as_str()).unwrap_or_default(),
                "EventBridge refused some entries; sending them again"
            );
            tokio::time::sleep(pause).await;
        }
    }
}

/// The pauses before each new send of failed entries: [`FIRST_PAUSE`] doubling, jittered,
/// up to [`MAX_PAUSE`], [`RETRIES`] of them.
fn pauses() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(MAX_PAUSE)
        .with_factor(2.0)
        .with_max_times(RETRIES)
        .with_jitter()
        .build()
}

/// The `PutEvents` entry of a notice on `bus`.
fn entry(notice: &Notice, bus: &str) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(SOURCE)
        .detail_type(notice.detail_type())
        .detail(notice.detail().to_string())
        .set_resources(Some(notice.resources()))
        .build()
}

/// The entries of `sent` that `results` (one per entry, in order) reports failed, each
/// with its error. An entry without a result (a short answer), or whose result has no
/// `EventId`, counts as failed: only an `EventId` proves EventBridge took it.
fn failed_entries<T>(sent: Vec<T>, results: &[PutEventsResultEntry]) -> Vec<(T, EntryError)> {
    let mut failed = Vec::new();
    for (i, e) in sent.into_iter().enumerate() {
        let error = match results.get(i) {
            Some(r) if r.error_code().is_none() && r.event_id().is_some() => continue,
            Some(r) => EntryError {
                code: r.error_code().unwrap_or("NoEventId").to_string(),
                message: r
                    .error_message()
                    .unwrap_or("EventBridge returned no event id for this entry")
                    .to_string(),
            },
            None => EntryError {
                code: "NoResult".to_string(),
                message: "EventBridge's answer had no result for this entry".to_string(),
            },
        };
        failed.push((e, error));
    }
    failed
}

#[cfg(test)]
mod tests;
