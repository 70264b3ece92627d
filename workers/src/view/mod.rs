//! How things are shown: aligned text for people (here) and JSON with stable field names
//! (the tables' attribute names) for scripts (in [`json`]). Everything here is pure: the
//! same input renders the same output, which the snapshot tests rely on. Text from a
//! request or a server goes through [`safe`] on its way into any text view: tables escape
//! every cell, the detail views every value.

mod json;
mod safe;

use std::collections::BTreeMap;

use engine::clock::rfc3339;
use engine::{EventKind, HistoryEvent, JobRecord, JobStatus, Millis};
use serde::Serialize;
use serde_json::Value;
use workflows::export_certificate::InstanceResult;

pub(crate) use json::{job_detail_json, job_json, job_list_json};
pub(crate) use safe::{one_line, printable};

/// Widest last error in a `jobs list` row: enough for the gist of an AWS error while the
/// row still fits a wide terminal.
const LIST_ERROR_CHARS: usize = 70;
/// Widest last error of a child job under `jobs show`, which has fewer columns beside it.
const CHILD_ERROR_CHARS: usize = 60;

/// A renewal's child job, with its status as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ChildView {
    pub(crate) job_id: String,
    pub(crate) target: String,
    pub(crate) cert_name: String,
    /// The child's current status (`NOT FOUND` if its record is gone).
    pub(crate) status: String,
    pub(crate) step: Option<String>,
    pub(crate) last_error: Option<String>,
}

/// When the step an event describes started (the event is written when it ends).
fn started(e: &HistoryEvent) -> Millis {
    e.at - e.duration_ms.map_or(0, |d| d as Millis)
}

/// Per-server install results an export job recorded (`Data.instances`).
pub(crate) fn instances(rec: &JobRecord) -> BTreeMap<String, InstanceResult> {
    rec.data
        .get("instances")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// The children a renewal job started (`Data.children`): id, target, name.
pub(crate) fn children_of(rec: &JobRecord) -> Vec<workflows::renew_certificate::Child> {
    rec.data
        .get("children")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// A duration for people: `840ms`, `3.2s`, `4m05s`, `2h03m`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// What an event means, in a few words.
pub(crate) fn outcome(e: &HistoryEvent) -> String {
    match e.kind {
        EventKind::Created => "created".into(),
        EventKind::StepCompleted => format!("done → {}", e.to_step),
        EventKind::Polled => "not ready, polls again".into(),
        EventKind::RetryScheduled => "error, will retry".into(),
        EventKind::Succeeded => "SUCCEEDED".into(),
        EventKind::Failed => "FAILED".into(),
        EventKind::Cancelled => "CANCELLED".into(),
        EventKind::Retried => format!("retried by {} → {}", e.worker, e.to_step),
        EventKind::Woken => "woken: runs now".into(),
    }
}

fn detail(e: &HistoryEvent) -> String {
    match (&e.error, &e.note) {
        (Some(err), Some(note)) => format!("{err} ({note})"),
        (Some(err), None) => err.clone(),
        (None, Some(note)) => note.clone(),
        (None, None) => String::new(),
    }
}

/// One history event as one line (what `submit --wait` and `jobs watch` print).
pub(crate) fn event_line(e: &HistoryEvent) -> String {
    let attempt = if e.attempt == 0 {
        "     ".to_string()
    } else {
        format!("try {:<2}", e.attempt)
    };
    let took = e.duration_ms.map(duration).unwrap_or_default();
    let line = format!(
        "{}  {:<10} {attempt} {:<26} {:>7}  {}",
        rfc3339(e.at),
        e.step,
        outcome(e),
        took,
        detail(e)
    );
    one_line(line.trim_end())
}

/// The record, timeline, install results and children of one job, for people.
pub(crate) fn job_text(
    rec: &JobRecord,
    history: &[HistoryEvent],
    children: &[ChildView],
) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| {
        out.push_str(&format!("{:<15} {}\n", printable(k), printable(v)))
    };
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
    if rec.status.is_terminal() {
        let took = (rec.updated_at - rec.created_at).max(0) as u64;
        line(&mut out, "Took", &duration(took));
    } else {
        line(&mut out, "Next wake", &rfc3339(rec.next_wake_at));
        line(&mut out, "Deadline", &rfc3339(rec.deadline_at));
    }
    if let Some(owner) = &rec.lease_owner {
        if !rec.status.is_terminal() {
            line(&mut out, "Leased by", owner);
        }
    }
    if rec.cancel_requested && !rec.status.is_terminal() {
        line(&mut out, "Cancel", "requested");
    }
    for (field, name) in [
        ("not_after", "Cert expires"),
        ("serial", "Serial"),
        ("command_id", "SSM command"),
    ] {
        if let Some(v) = rec.data.get(field).and_then(Value::as_str) {
            line(&mut out, name, v);
        }
    }
    if let Some(e) = &rec.last_error {
        line(&mut out, "Last error", e);
    }
    out.push_str("\nTimeline\n");
    out.push_str(&timeline(history));
    if let Some(t) = instances_table(rec) {
        out.push_str("\nInstall results\n");
        out.push_str(&t);
    }
    if !children.is_empty() {
        out.push_str("\nChild jobs\n");
        let rows: Vec<Vec<String>> = children
            .iter()
            .map(|c| {
                vec![
                    c.job_id.clone(),
                    c.target.clone(),
                    c.cert_name.clone(),
                    c.status.clone(),
                    c.step.clone().unwrap_or_default(),
                    c.last_error
                        .clone()
                        .map(|e| clip(&e, CHILD_ERROR_CHARS))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["JOB", "TARGET", "CERT NAME", "STATUS", "STEP", "LAST ERROR"],
            &rows,
        ));
    }
    if let Some(hint) = next_step_hint(rec) {
        out.push('\n');
        out.push_str(&hint);
        out.push('\n');
    }
    out
}

/// The per-server install results as a table, if the job has any.
pub(crate) fn instances_table(rec: &JobRecord) -> Option<String> {
    let inst = instances(rec);
    if inst.is_empty() {
        return None;
    }
    let rows: Vec<Vec<String>> = inst
        .iter()
        .map(|(id, r)| {
            vec![
                id.clone(),
                r.status.to_string(),
                r.serial.clone().unwrap_or_else(|| "-".into()),
                r.detail
                    .clone()
                    .filter(|d| d != r.status.as_str())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    Some(table(&["INSTANCE", "STATUS", "SERIAL", "DETAIL"], &rows))
}

/// What an operator can do next with this job.
pub(crate) fn next_step_hint(rec: &JobRecord) -> Option<String> {
    let id = &rec.job_id;
    match rec.status {
        JobStatus::Failed => Some(format!(
            "Fix the cause above, then resume it at step {}: certflow jobs retry {id} --wait",
            rec.step
        )),
        JobStatus::Pending | JobStatus::Running | JobStatus::Waiting => Some(format!(
            "Follow it: certflow jobs watch {id}    Stop it: certflow jobs cancel {id}"
        )),
        JobStatus::Succeeded | JobStatus::Cancelled => None,
    }
}

/// The history as an aligned timeline: step, attempt, start, duration, outcome, error.
pub(crate) fn timeline(history: &[HistoryEvent]) -> String {
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.step.clone(),
                if e.attempt == 0 {
                    "-".into()
                } else {
                    e.attempt.to_string()
                },
                rfc3339(started(e)),
                e.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
                outcome(e),
                detail(e),
            ]
        })
        .collect();
    table(
        &[
            "#",
            "STEP",
            "TRY",
            "STARTED",
            "TOOK",
            "OUTCOME",
            "ERROR / NOTE",
        ],
        &rows,
    )
}

/// Jobs as an aligned list.
pub(crate) fn jobs_table(jobs: &[JobRecord]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|r| {
            let label = |k: &str| r.labels.get(k).cloned().unwrap_or_default();
            vec![
                r.job_id.to_string(),
                r.status.to_string(),
                r.workflow.clone(),
                format!("{} ({})", r.step, r.attempt),
                label("Target"),
                label("CertName"),
                rfc3339(r.updated_at),
                r.last_error
                    .as_deref()
                    .map(|e| clip(e, LIST_ERROR_CHARS))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "JOB",
            "STATUS",
            "WORKFLOW",
            "STEP (TRY)",
            "TARGET",
            "CERT NAME",
            "UPDATED",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// A page of `jobs list` for people: the jobs, or a line that says none matched, then how
/// to go on when there are more.
pub(crate) fn job_list_text(
    jobs: &[JobRecord],
    next_cursor: Option<&str>,
    statuses: &[JobStatus],
    certificate_arn: Option<&str>,
) -> String {
    let mut out = String::new();
    if jobs.is_empty() {
        let which: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        out.push_str(&format!(
            "no {} jobs{}\n",
            which.join("/"),
            match certificate_arn {
                Some(a) => format!(" for {}", printable(a)),
                None => String::new(),
            }
        ));
    } else {
        out.push_str(&jobs_table(jobs));
    }
    if let Some(c) = next_cursor {
        out.push_str(&format!(
            "more: repeat the command with --cursor {}\n",
            printable(c)
        ));
    }
    out
}

/// Widest serial in a table: enough to tell two certificates apart (serials are random
/// from their first bytes), short enough to leave room for the columns beside it.
const SERIAL_CHARS: usize = 12;
/// Widest certificate id in a table (the id part of the ARN, like a short commit hash);
/// the whole ARN is in the details and the JSON.
const CERTIFICATE_ID_CHARS: usize = 9;

/// A serial for a table cell: clipped to [`SERIAL_CHARS`], `-` when there is none.
pub(crate) fn serial_cell(serial: Option<&str>) -> String {
    serial.map_or_else(|| "-".into(), |s| clip(s, SERIAL_CHARS))
}

/// The id part of a certificate's ARN (after `certificate/`), clipped for a table cell.
pub(crate) fn certificate_id(arn: &str) -> String {
    clip(arn.rsplit('/').next().unwrap_or(arn), CERTIFICATE_ID_CHARS)
}

/// At most `max` characters, with an ellipsis when cut; on one line, control characters
/// escaped ([`one_line`]).
pub(crate) fn clip(s: &str, max: usize) -> String {
    let one_line = one_line(s);
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// An aligned table: columns as wide as their widest cell, two spaces apart. Every cell
/// is shown on one line with its control characters escaped ([`one_line`]).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| one_line(cell)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let n = header.len();
    let mut out = String::new();
    let mut push = |cells: &[&str]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate().take(n) {
            if i + 1 == n {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(header);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push(&cells);
    }
    out
}

#[cfg(test)]
mod tests;
