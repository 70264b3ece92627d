//! Jobs as JSON for scripts: the jobs table's attribute names as field names, which stay
//! stable from one release to the next (`jq` filters rely on them).

use engine::clock::rfc3339;
use engine::{HistoryEvent, JobRecord};
use serde::Serialize;
use serde_json::{json, Value};

use super::{instances, started, ChildView};

/// The labels shown as top-level fields (the jobs table's attribute names).
const LABELS: [&str; 4] = [
    "CertificateArn",
    "CertName",
    "Target",
    engine::schema::SENDER_ID_LABEL,
];

/// A job as JSON, with the attribute names of the jobs table.
pub(crate) fn job_json(rec: &JobRecord) -> Value {
    let mut v = json!({
        "JobId": rec.job_id.as_str(),
        "Workflow": rec.workflow,
        "Status": rec.status.as_str(),
        "Step": rec.step,
        "Attempt": rec.attempt,
        "Version": rec.version,
        "CreatedAt": rfc3339(rec.created_at),
        "UpdatedAt": rfc3339(rec.updated_at),
        "NextWakeAt": rfc3339(rec.next_wake_at),
        "DeadlineAt": rfc3339(rec.deadline_at),
        "LeaseOwner": rec.lease_owner,
        "LeaseUntil": rec.lease_until.map(rfc3339),
        "LastError": rec.last_error,
        "CancelRequested": rec.cancel_requested,
        "Labels": rec.labels,
        "Data": rec.data,
    });
    if let Some(obj) = v.as_object_mut() {
        for label in LABELS {
            obj.insert(
                label.into(),
                rec.labels
                    .get(label)
                    .map_or(Value::Null, |s| Value::String(s.clone())),
            );
        }
    }
    v
}

/// A job with everything `jobs show` knows: history, install results, children.
pub(crate) fn job_detail_json(
    rec: &JobRecord,
    history: &[HistoryEvent],
    children: &[ChildView],
) -> Value {
    let mut v = job_json(rec);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "History".into(),
            Value::Array(history.iter().map(event_json).collect()),
        );
        let instances: Vec<Value> = instances(rec)
            .into_iter()
            .map(|(id, r)| {
                json!({
                    "InstanceId": id,
                    "Status": r.status,
                    "Detail": r.detail,
                    "Serial": r.serial,
                })
            })
            .collect();
        obj.insert("Instances".into(), Value::Array(instances));
        obj.insert(
            "Children".into(),
            serde_json::to_value(children).unwrap_or(Value::Null),
        );
    }
    v
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EventView<'a> {
    seq: u32,
    at: String,
    started_at: String,
    event: &'a str,
    step: &'a str,
    attempt: u32,
    duration_ms: Option<u64>,
    to_step: &'a str,
    to_status: &'a str,
    error: Option<&'a str>,
    note: Option<&'a str>,
    worker: &'a str,
}

fn event_json(e: &HistoryEvent) -> Value {
    serde_json::to_value(EventView {
        seq: e.seq,
        at: rfc3339(e.at),
        started_at: rfc3339(started(e)),
        event: e.kind.as_str(),
        step: &e.step,
        attempt: e.attempt,
        duration_ms: e.duration_ms,
        to_step: &e.to_step,
        to_status: e.to_status.as_str(),
        error: e.error.as_deref(),
        note: e.note.as_deref(),
        worker: &e.worker,
    })
    .unwrap_or(Value::Null)
}

/// A page of `jobs list`: the jobs, and the cursor of the next page (`null` on the last).
pub(crate) fn job_list_json(jobs: &[JobRecord], next_cursor: Option<&str>) -> Value {
    let jobs: Vec<Value> = jobs.iter().map(job_json).collect();
    json!({ "Jobs": jobs, "NextCursor": next_cursor })
}
