//! `renew-certificate`: one ACM renewal event → one export job per inventory row of that
//! certificate, found through the inventory's `ByCertificateArn` index (never a Scan).
//!
//! Before it fans out, ACM confirms the renewal: the certificate must be ISSUED, and a row
//! gets a child only if the serial ACM reports differs from the row's `Serial` — so a
//! forged or repeated event starts no install. Each child runs the export's `check`, so a
//! target the certificate's `certflow:targets` tag no longer lists fails there.
//!
//! Child job ids are derived from the row and the renewed serial
//! ([`export_certificate::sync_job`]), so the same event delivered twice, or a reconcile
//! that saw the new serial first, starts each child once. Each child is an entry of the parent
//! ([`CHILDREN`]), so that the parent's record stays small however many rows the
//! certificate has; the record keeps counts and the first failures. The parent succeeds
//! when all of them are terminal, saying how many succeeded and failed.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_acm::types::CertificateStatus;
use engine::{Outcome, StepContext, StepError, StepPolicy, Workflow};
use serde::{Deserialize, Serialize};

pub use crate::children::{Child, ChildStatus, Tally, CHILDREN, RUNNING};
use crate::export_certificate::{self, Cause};
use crate::inventory::{self, InventoryRow};
use crate::{children, outcomes};

/// The workflow's name.
pub const NAME: &str = "renew-certificate";

/// What the parent needs.
#[derive(Debug, Clone)]
pub struct Deps {
    /// ACM client (the renewal is confirmed with DescribeCertificate).
    pub acm: aws_sdk_acm::Client,
    /// DynamoDB client.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The inventory table.
    pub inventory_table: String,
    /// Where a failed renewal is told.
    pub notifier: crate::notify::Notifier,
}

/// State of a renewal job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewState {
    /// The renewed certificate.
    pub certificate_arn: String,
    /// The EventBridge event id.
    pub event_id: String,
    /// When ACM sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// The export jobs started by renewals from before children were entries (read only;
    /// see [`CHILDREN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// How its export jobs went: counts and the first failures (each job is an entry in
    /// [`CHILDREN`]).
    #[serde(flatten)]
    pub tally: Tally,

    /// Status polls so far.
    #[serde(default)]
    pub polls: u32,
}

/// The serial of certificate `arn` as ACM reports it, which must be ISSUED: the renewal
/// is confirmed by ACM, not by whoever sent the event.
async fn issued_serial(acm: &aws_sdk_acm::Client, arn: &str) -> Result<String, StepError> {
    let out = acm
        .describe_certificate()
        .certificate_arn(arn)
        .send()
        .await
        .map_err(|e| crate::aws::classify("DescribeCertificate", &e))?;
    let cert = out
        .certificate()
        .ok_or_else(|| StepError::retry("DescribeCertificate: empty answer"))?;
    match cert.status() {
        Some(CertificateStatus::Issued) => {}
        Some(other) => {
            return Err(StepError::abort(format!(
                "renewal not confirmed by ACM: certificate {arn} is {}, not ISSUED; nothing was re-exported",
                other.as_str()
            )))
        }
        None => return Err(StepError::retry("DescribeCertificate: no status")),
    }
    cert.serial()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| StepError::retry("DescribeCertificate: no serial"))
}

/// A renewal job for an event.
pub fn new_job(state: RenewState) -> Result<engine::NewJob, engine::JobsError> {
    let arn = state.certificate_arn.clone();
    let key = state.event_id.clone();
    Ok(engine::NewJob::new(NAME, Some(&key), &state)?.label("CertificateArn", arn))
}

async fn fan_out(
    deps: Arc<Deps>,
    ctx: StepContext,
    mut st: RenewState,
) -> Result<Outcome<RenewState>, StepError> {
    let rows =
        inventory::rows_of_certificate(&deps.dynamodb, &deps.inventory_table, &st.certificate_arn)
            .await?;
    if rows.is_empty() {
        return Err(StepError::abort(format!(
            "certificate not in inventory: {} has never been exported by certflow, so there is nothing to renew",
            st.certificate_arn
        )));
    }
    let serial = issued_serial(&deps.acm, &st.certificate_arn).await?;
    let mut children = Vec::new();
    let mut skipped = 0u32;
    for row in rows {
        // A row certflow did not write (no target, no name, a key that disagrees with its
        // attributes) is not ours to renew; say so rather than skip it silently.
        let row = match InventoryRow::from_item(&row) {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(certificate_arn = %st.certificate_arn, error = %e, "inventory row not renewed: not a row certflow wrote");
                continue;
            }
        };
        // The row already holds what ACM has: nothing was renewed for it.
        if row.serial.as_deref() == Some(serial.as_str()) {
            skipped += 1;
            continue;
        }
        // One child per (row, serial), whoever starts it (this renewal, the same event
        // delivered again, a reconcile that saw the new serial first) and however often.
        let target = row.target();
        let name = row.cert_name.clone();
        let new =
            export_certificate::sync_job(&row, &serial, Cause::Renewal, ctx.job_id().as_str())
                .map_err(|e| StepError::abort(e.to_string()))?;
        let (child, _, _) = children::start(&ctx, new, target, name).await?;
        children.push(Child {
            status: None,
            ..child
        });
    }
    let mut note = format!("started {} export job(s)", children.len());
    if skipped > 0 {
        note.push_str(&format!(
            "; skipped {skipped} row(s) already at serial {serial} (ACM reports no new certificate for them)"
        ));
    }
    let entries: Vec<engine::Entry> = children.iter().map(Child::entry).collect();
    ctx.put_entries(CHILDREN, &entries).await?;
    st.tally.started = children.len() as u32;
    if st.tally.started == 0 {
        return Ok(Outcome::succeed(st).with_note(note));
    }
    Ok(Outcome::next_after("collect", st, Duration::from_secs(5)).with_note(note))
}

async fn collect(
    _deps: Arc<Deps>,
    ctx: StepContext,
    mut st: RenewState,
) -> Result<Outcome<RenewState>, StepError> {
    if !st.children.is_empty() {
        // A renewal from before children were entries: move them out of the record.
        let entries: Vec<engine::Entry> = st.children.iter().map(Child::entry).collect();
        ctx.put_entries(CHILDREN, &entries).await?;
        st.tally.started = st.children.len() as u32;
        st.children.clear();
    }
    let running = children::poll(&ctx).await?;
    if running > 0 {
        let delay = children::poll_delay(st.polls);
        st.polls += 1;
        let note = format!("{running} of {} export job(s) running", st.tally.started);
        return Ok(Outcome::poll(st, delay).with_note(note));
    }
    st.tally = children::tally(&ctx).await?;
    let note = st.tally.summary("export job(s)");
    Ok(Outcome::succeed(st).with_note(note))
}

/// The workflow.
pub fn workflow(deps: Deps) -> Workflow<RenewState> {
    let deps = Arc::new(deps);
    let policy = StepPolicy::default()
        .max_attempts(8)
        .backoff(Duration::from_secs(1), Duration::from_secs(60));
    let d = deps.clone();
    let wf = Workflow::new(NAME)
        .deadline(Duration::from_secs(24 * 3600))
        .step_with("fan-out", policy, move |ctx, st| {
            fan_out(d.clone(), ctx, st)
        });
    let notifier = deps.notifier.clone();
    let d = deps;
    wf.step_with("collect", policy, move |ctx, st| {
        collect(d.clone(), ctx, st)
    })
    // The renewal itself failing (not in the inventory, not ISSUED) is told here; its
    // export jobs tell their own failures.
    .on_end(move |ended, st: RenewState| {
        let notifier = notifier.clone();
        async move {
            if ended.status != engine::JobStatus::Failed {
                return;
            }
            let notice = outcomes::job_failed(&ended, Some(&st.certificate_arn), None, None);
            outcomes::publish(&notifier, ended.job_id.as_str(), &[notice]).await;
        }
    })
}

/// `acm-alert`: an ACM event that needs a person (renewal action required, approaching
/// expiration of a certificate that should have renewed, expiry). The job records the
/// certificate, the days to expiry and the action needed, and ends FAILED so that it shows
/// among the jobs operators watch.
pub mod alert {
    use engine::{Outcome, StepError, Workflow};
    use serde::{Deserialize, Serialize};

    use crate::notify::{CertificateExpiring, Notice};

    /// The workflow's name.
    pub const NAME: &str = "acm-alert";

    /// What the alert says.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Alert {
        /// The event's `detail-type`.
        pub event: String,
        /// The event id.
        pub event_id: String,
        /// The certificate.
        pub certificate_arn: String,
        /// Days to expiry, if the event said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub days_to_expiry: Option<u32>,
        /// What an operator should do.
        pub action: String,
    }

    /// An alert job for an event.
    pub fn new_job(alert: Alert) -> Result<engine::NewJob, engine::JobsError> {
        let arn = alert.certificate_arn.clone();
        let key = alert.event_id.clone();
        Ok(engine::NewJob::new(NAME, Some(&key), &alert)?.label("CertificateArn", arn))
    }

    /// The workflow: one step that states the alert, and the alert told as
    /// `certflow Certificate Expiring` through `notifier`.
    pub fn workflow(notifier: crate::notify::Notifier) -> Workflow<Alert> {
        let wf = Workflow::new(NAME).step("record", |_ctx, a: Alert| async move {
            let days = a
                .days_to_expiry
                .map(|d| format!(", {d} day(s) to expiry"))
                .unwrap_or_default();
            let reason = format!("{}: {}{days} — {}", a.event, a.certificate_arn, a.action);
            Ok::<_, StepError>(Outcome::fail(a, reason))
        });
        wf.on_end(move |ended, a: Alert| {
            let notifier = notifier.clone();
            async move {
                let notice = Notice::CertificateExpiring(CertificateExpiring {
                    certificate_arn: a.certificate_arn.clone(),
                    status: None,
                    not_after: None,
                    days_to_expiry: a.days_to_expiry.map(i64::from),
                    targets: Vec::new(),
                    why: format!("{}: {}", a.event, a.action),
                    job_id: ended.job_id.to_string(),
                });
                crate::outcomes::publish(&notifier, ended.job_id.as_str(), &[notice]).await;
            }
        })
    }
}
