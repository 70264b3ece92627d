//! How jobs are shown: JSON with stable field names (the table's attribute names) and
//! aligned text for people.

use engine::clock::rfc3339;
use engine::{HistoryEvent, JobRecord};
use serde::Serialize;
use serde_json::{json, Value};

/// A job as JSON, with the attribute names of the jobs table.
pub(crate) fn job_json(rec: &JobRecord, history: Option<&[HistoryEvent]>) -> Value {
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
    if let (Some(h), Some(obj)) = (history, v.as_object_mut()) {
        obj.insert(
            "History".into(),
            Value::Array(h.iter().map(event_json).collect()),
        );
    }
    v
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EventView<'a> {
    seq: u32,
    at: String,
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

/// The record and timeline of one job, for people.
pub(crate) fn job_text(rec: &JobRecord, history: &[HistoryEvent]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<15} {v}\n"));
    line(&mut out, "Job", rec.job_id.as_str());
    line(&mut out, "Workflow", &rec.workflow);
    line(&mut out, "Status", rec.status.as_str());
    line(
        &mut out,
        "Step",
        &format!("{} (attempt {})", rec.step, rec.attempt),
    );
    for (k, v) in &rec.labels {
        line(&mut out, k, v);
    }
    line(&mut out, "Created", &rfc3339(rec.created_at));
    line(&mut out, "Updated", &rfc3339(rec.updated_at));
    if !rec.status.is_terminal() {
        line(&mut out, "Next wake", &rfc3339(rec.next_wake_at));
        line(&mut out, "Deadline", &rfc3339(rec.deadline_at));
    }
    if let Some(owner) = &rec.lease_owner {
        line(&mut out, "Leased by", owner);
    }
    if rec.cancel_requested && !rec.status.is_terminal() {
        line(&mut out, "Cancel", "requested");
    }
    if let Some(e) = &rec.last_error {
        line(&mut out, "Last error", e);
    }
    out.push_str("\nHistory\n");
    out.push_str(&history_table(history));
    out
}

/// The history as an aligned timeline.
pub(crate) fn history_table(history: &[HistoryEvent]) -> String {
    let header = ["#", "AT", "STEP", "TRY", "TOOK", "EVENT", "THEN", "DETAIL"];
    let rows: Vec<[String; 8]> = history
        .iter()
        .map(|e| {
            [
                e.seq.to_string(),
                rfc3339(e.at),
                e.step.clone(),
                if e.attempt == 0 {
                    "-".into()
                } else {
                    e.attempt.to_string()
                },
                e.duration_ms
                    .map(|d| format!("{d}ms"))
                    .unwrap_or_else(|| "-".into()),
                e.kind.as_str().to_string(),
                format!("{} {}", e.to_status, e.to_step),
                e.error
                    .clone()
                    .or_else(|| e.note.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Jobs as an aligned list.
pub(crate) fn jobs_table(jobs: &[JobRecord]) -> String {
    let header = ["JOB", "WORKFLOW", "STATUS", "STEP", "UPDATED", "LAST ERROR"];
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|r| {
            [
                r.job_id.to_string(),
                r.workflow.clone(),
                r.status.to_string(),
                r.step.clone(),
                rfc3339(r.updated_at),
                r.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&header, &rows)
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(header.to_vec());
    for row in rows {
        push(row.iter().map(String::as_str).collect());
    }
    out
}
