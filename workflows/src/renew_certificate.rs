//! `renew-certificate`: one ACM renewal event → one export job per inventory row of that
//! certificate, found through the inventory's `ByCertificateArn` index (never a Scan).
//!
//! Child job ids are derived from the event id and the row key, so the same event
//! delivered twice starts each child once. The parent records its children and succeeds
//! when all of them are terminal, saying how many succeeded and failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use engine::{JobId, JobStatus, Outcome, StepContext, StepError, StepPolicy, Workflow};
use serde::{Deserialize, Serialize};

use crate::aws::classify;
use crate::export_certificate::{self, ExportRequest};
use crate::inventory;

/// The workflow's name.
pub const NAME: &str = "renew-certificate";

/// What the parent needs.
#[derive(Debug, Clone)]
pub struct Deps {
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
    pub status: Option<String>,
}

/// State of a renewal job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewState {
    /// The renewed certificate.
    pub certificate_arn: String,
    /// The EventBridge event id.
    pub event_id: String,
    /// When ACM sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// The export jobs started.
    #[serde(default)]
    pub children: Vec<Child>,
    /// Status polls so far.
    #[serde(default)]
    pub polls: u32,
}

/// A renewal job for an event.
pub fn new_job(state: RenewState) -> Result<engine::NewJob, engine::JobsError> {
    let arn = state.certificate_arn.clone();
    let key = state.event_id.clone();
    Ok(engine::NewJob::new(NAME, Some(&key), &state)?.label("CertificateArn", arn))
}

fn s(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
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
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let page = deps
            .dynamodb
            .query()
            .table_name(&deps.inventory_table)
            .index_name(inventory::BY_CERTIFICATE)
            .key_condition_expression("CertificateArn = :a")
            .expression_attribute_values(":a", AttributeValue::S(st.certificate_arn.clone()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("Query (inventory by certificate)", &e))?;
        rows.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    if rows.is_empty() {
        return Err(StepError::abort(format!(
            "certificate not in inventory: {} has never been exported by certflow, so there is nothing to renew",
            st.certificate_arn
        )));
    }
    let mut children = Vec::new();
    for row in rows {
        let (Some(name), Some(key), Some(value), Some(tkv), Some(sk)) = (
            s(&row, "CertName"),
            s(&row, "TargetTagKey"),
            s(&row, "TargetTagValue"),
            s(&row, inventory::PK),
            s(&row, inventory::SK),
        ) else {
            continue;
        };
        let request = ExportRequest {
            certificate_arn: st.certificate_arn.clone(),
            cert_name: name.clone(),
            target_tag_key: key,
            target_tag_value: value,
            request_id: None,
        };
        let target = request.target();
        // One child per (event, row), whoever starts it and however often.
        let key = format!("renewal\u{1f}{}\u{1f}{tkv}\u{1f}{sk}", st.event_id);
        let new = export_certificate::new_job(request, &key)
            .map_err(|e| StepError::abort(e.to_string()))?;
        let created = jobs
            .create(new)
            .await
            .map_err(|e| StepError::retry(format!("starting export job: {e}")))?;
        children.push(Child {
            job_id: created.record.job_id.to_string(),
            target,
            cert_name: name,
            status: None,
        });
    }
    let note = format!("started {} export job(s)", children.len());
    st.children = children;
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
    for child in st.children.iter_mut().filter(|c| c.status.is_none()) {
        let rec = jobs
            .get(&JobId::new(child.job_id.clone()))
            .await
            .map_err(|e| StepError::retry(format!("reading child job: {e}")))?;
        if rec.status.is_terminal() {
            child.status = Some(rec.status.to_string());
        }
    }
    if st.children.iter().any(|c| c.status.is_none()) {
        let delay =
            Duration::from_secs(5u64 * 2u64.pow(st.polls.min(4))).min(Duration::from_secs(60));
        st.polls += 1;
        return Ok(Outcome::poll(st, delay));
    }
    let ok = st
        .children
        .iter()
        .filter(|c| c.status.as_deref() == Some(JobStatus::Succeeded.as_str()))
        .count();
    let failed: Vec<String> = st
        .children
        .iter()
        .filter(|c| c.status.as_deref() != Some(JobStatus::Succeeded.as_str()))
        .map(|c| {
            format!(
                "{} {} ({})",
                c.target,
                c.status.as_deref().unwrap_or("?"),
                c.job_id
            )
        })
        .collect();
    let mut note = format!("{ok} of {} export job(s) succeeded", st.children.len());
    if !failed.is_empty() {
        note.push_str(&format!("; failed: {}", failed.join(", ")));
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
