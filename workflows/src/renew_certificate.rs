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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_acm::types::CertificateStatus;
use engine::{JobId, JobStatus, JobsError, Outcome, StepContext, StepError, StepPolicy, Workflow};
use serde::{Deserialize, Serialize};

use crate::export_certificate::{self, Cause};
use crate::inventory::{self, InventoryRow};

/// The workflow's name.
pub const NAME: &str = "renew-certificate";

/// The entry collection of a renewal's child export jobs: key the child's job id, group
/// [`RUNNING`] or the child's final status in lowercase, data a [`Child`].
pub const CHILDREN: &str = "children";
/// Group of a child that has not finished.
pub const RUNNING: &str = "running";

/// How many unsuccessful children the record names (the rest are entries).
const FIRST_FAILURES: usize = 5;

impl Child {
    /// Its entry.
    fn entry(&self) -> engine::Entry {
        let group = self
            .status
            .map_or(RUNNING.to_string(), |s| s.as_str().to_ascii_lowercase());
        engine::Entry::new(
            self.job_id.clone(),
            group,
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// What the parent needs.
#[derive(Debug, Clone)]
pub struct Deps {
    /// ACM client (the renewal is confirmed with DescribeCertificate).
    pub acm: aws_sdk_acm::Client,
    /// DynamoDB client.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The inventory table.
    pub inventory_table: String,
}

/// One child export job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// Its job id.
    pub job_id: String,
    /// `key=value` target.
    pub target: String,
    /// Certificate name on the servers.
    pub cert_name: String,
    /// Its final status, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ChildStatus>,
}

/// How a child export job ended: its terminal [`JobStatus`], by the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChildStatus {
    /// The export succeeded.
    Succeeded,
    /// The export failed.
    Failed,
    /// An operator cancelled it.
    Cancelled,
}

impl ChildStatus {
    /// The final status of a job in `status`; `None` while it can still move on.
    pub fn of(status: JobStatus) -> Option<ChildStatus> {
        match status {
            JobStatus::Succeeded => Some(ChildStatus::Succeeded),
            JobStatus::Failed => Some(ChildStatus::Failed),
            JobStatus::Cancelled => Some(ChildStatus::Cancelled),
            JobStatus::Pending | JobStatus::Running | JobStatus::Waiting => None,
        }
    }

    /// The job status it stands for.
    pub fn job_status(self) -> JobStatus {
        match self {
            ChildStatus::Succeeded => JobStatus::Succeeded,
            ChildStatus::Failed => JobStatus::Failed,
            ChildStatus::Cancelled => JobStatus::Cancelled,
        }
    }

    /// The name, as the job status's: e.g. `"SUCCEEDED"`.
    pub fn as_str(self) -> &'static str {
        self.job_status().as_str()
    }
}

impl fmt::Display for ChildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// How many export jobs were started (each one an entry in [`CHILDREN`]).
    #[serde(default)]
    pub started: u32,
    /// How many of them succeeded.
    #[serde(default)]
    pub succeeded: u32,
    /// How many of them failed or were cancelled.
    #[serde(default)]
    pub unsuccessful: u32,
    /// The first children that did not succeed, `<target> <status> (<job id>)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_failures: Vec<String>,

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
    let Some(jobs) = ctx.jobs() else {
        return Err(StepError::abort(
            "renewal needs the engine's job operations",
        ));
    };
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
        let new = export_certificate::sync_job(&row, &serial, Cause::Renewal, ctx.job_id().as_str())
            .map_err(|e| StepError::abort(e.to_string()))?;
        let created = jobs.create(new).await.map_err(|e| match e {
            // The child's key names the row and the serial, so a conflict
            // means the table holds something certflow did not write: retrying
            // cannot help.
            JobsError::RequestConflict { .. } => {
                StepError::abort(format!("starting export job: {e}"))
            }
            e => StepError::retry(format!("starting export job: {e}")),
        })?;
        children.push(Child {
            job_id: created.record.job_id.to_string(),
            target,
            cert_name: name,
            status: None,
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
    st.started = children.len() as u32;
    if st.started == 0 {
        return Ok(Outcome::succeed(st).with_note(note));
    }
    Ok(Outcome::next_after("collect", st, Duration::from_secs(5)).with_note(note))
}

async fn collect(
    _deps: Arc<Deps>,
    ctx: StepContext,
    mut st: RenewState,
) -> Result<Outcome<RenewState>, StepError> {
    let Some(jobs) = ctx.jobs() else {
        return Err(StepError::abort(
            "renewal needs the engine's job operations",
        ));
    };
    if !st.children.is_empty() {
        // A renewal from before children were entries: move them out of the record.
        let entries: Vec<engine::Entry> = st.children.iter().map(Child::entry).collect();
        ctx.put_entries(CHILDREN, &entries).await?;
        st.started = st.children.len() as u32;
        st.children.clear();
    }
    let running = ctx
        .entries(CHILDREN, &engine::Groups::Only(vec![RUNNING.to_string()]))
        .await?;
    let mut finished = Vec::new();
    let mut still_running = 0usize;
    for entry in running {
        let Ok(mut child) = serde_json::from_value::<Child>(entry.data.clone()) else {
            continue;
        };
        let rec = jobs
            .get(&JobId::new(child.job_id.clone()))
            .await
            .map_err(|e| StepError::retry(format!("reading child job: {e}")))?;
        child.status = ChildStatus::of(rec.status);
        match child.status {
            Some(_) => finished.push(child),
            None => still_running += 1,
        }
    }
    // Counted from the entries, so that a step that runs again counts nothing twice.
    let entries: Vec<engine::Entry> = finished.iter().map(Child::entry).collect();
    ctx.put_entries(CHILDREN, &entries).await?;
    if still_running > 0 {
        let delay =
            Duration::from_secs(5u64 * 2u64.pow(st.polls.min(4))).min(Duration::from_secs(60));
        st.polls += 1;
        let note = format!("{still_running} of {} export job(s) running", st.started);
        return Ok(Outcome::poll(st, delay).with_note(note));
    }
    let all = ctx.entries(CHILDREN, &engine::Groups::All).await?;
    st.started = all.len() as u32;
    st.succeeded = 0;
    st.unsuccessful = 0;
    st.first_failures.clear();
    for entry in &all {
        let Ok(child) = serde_json::from_value::<Child>(entry.data.clone()) else {
            continue;
        };
        if child.status == Some(ChildStatus::Succeeded) {
            st.succeeded += 1;
            continue;
        }
        st.unsuccessful += 1;
        if st.first_failures.len() < FIRST_FAILURES {
            st.first_failures.push(format!(
                "{} {} ({})",
                child.target,
                child.status.map_or("?", ChildStatus::as_str),
                child.job_id
            ));
        }
    }
    let mut note = format!("{} of {} export job(s) succeeded", st.succeeded, st.started);
    if st.unsuccessful > 0 {
        note.push_str(&format!(
            "; {} did not: {}{}",
            st.unsuccessful,
            st.first_failures.join(", "),
            if st.unsuccessful as usize > st.first_failures.len() {
                " …"
            } else {
                ""
            }
        ));
    }
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
    let d = deps;
    wf.step_with("collect", policy, move |ctx, st| {
        collect(d.clone(), ctx, st)
    })
}

/// `acm-alert`: an ACM event that needs a person (renewal action required, approaching
/// expiration of a certificate that should have renewed, expiry). The job records the
/// certificate, the days to expiry and the action needed, and ends FAILED so that it shows
/// among the jobs operators watch.
pub mod alert {
    use engine::{Outcome, StepError, Workflow};
    use serde::{Deserialize, Serialize};

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

    /// The workflow: one step that states the alert.
    pub fn workflow() -> Workflow<Alert> {
        Workflow::new(NAME).step("record", |_ctx, a: Alert| async move {
            let days = a
                .days_to_expiry
                .map(|d| format!(", {d} day(s) to expiry"))
                .unwrap_or_default();
            let reason = format!("{}: {}{days} — {}", a.event, a.certificate_arn, a.action);
            Ok::<_, StepError>(Outcome::fail(a, reason))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn child_statuses_are_stored_by_the_job_status_s_name() {
        for (st, wire) in [
            (ChildStatus::Succeeded, "SUCCEEDED"),
            (ChildStatus::Failed, "FAILED"),
            (ChildStatus::Cancelled, "CANCELLED"),
        ] {
            assert_eq!(serde_json::to_value(st).unwrap(), json!(wire));
            assert_eq!(st.to_string(), wire);
            assert_eq!(st.job_status().as_str(), wire);
            assert_eq!(ChildStatus::of(st.job_status()), Some(st));
            let back: ChildStatus = serde_json::from_value(json!(wire)).unwrap();
            assert_eq!(back, st);
        }
    }

    #[test]
    fn only_terminal_jobs_have_a_child_status() {
        for st in JobStatus::ALL {
            assert_eq!(ChildStatus::of(st).is_some(), st.is_terminal(), "{st}");
        }
    }

    #[test]
    fn children_read_and_write_as_before() {
        let stored = json!([
            {"job_id": "j-1", "target": "Tier=web", "cert_name": "web", "status": "SUCCEEDED"},
            {"job_id": "j-2", "target": "Tier=db", "cert_name": "db"},
        ]);
        let children: Vec<Child> = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(children[0].status, Some(ChildStatus::Succeeded));
        assert_eq!(children[1].status, None);
        assert_eq!(serde_json::to_value(&children).unwrap(), stored);
    }
}
