//! Fixtures for the unit tests: job records and history events at fixed times, so that
//! what the views print can be compared with text written out in full.

use std::collections::BTreeMap;

use engine::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};

/// 2026-01-01T00:00:00.000Z.
pub(crate) const T0: Millis = 1_767_225_600_000;

/// A job of the export workflow at step `check`, attempt 1, created and updated at [`T0`],
/// due at once, with a day to finish and nothing else set.
pub(crate) fn job(id: &str, status: JobStatus) -> JobRecord {
    JobRecord {
        job_id: JobId::new(id),
        workflow: "export-certificate".into(),
        status,
        step: "check".into(),
        attempt: 1,
        version: 1,
        data: serde_json::json!({}),
        labels: BTreeMap::new(),
        created_at: T0,
        updated_at: T0,
        next_wake_at: T0,
        deadline_at: T0 + 86_400_000,
        lease_owner: None,
        lease_until: None,
        driven_by: None,
        last_error: None,
        cancel_requested: false,
        history_count: 1,
        expires_at: None,
        trace_parent: None,
        request_digest: None,
    }
}

/// [`job`] with its `updated_at` (and, for the certificate index, `created_at`) at
/// `T0 + offset_ms`.
pub(crate) fn job_at(id: &str, status: JobStatus, offset_ms: Millis) -> JobRecord {
    JobRecord {
        created_at: T0 + offset_ms,
        updated_at: T0 + offset_ms,
        ..job(id, status)
    }
}

/// A history event of `step` at `T0 + offset_ms` that leaves the job where it was, by
/// worker `w-1`, without duration, error or note.
pub(crate) fn event(seq: u32, offset_ms: Millis, kind: EventKind, step: &str) -> HistoryEvent {
    HistoryEvent {
        seq,
        at: T0 + offset_ms,
        kind,
        step: step.into(),
        attempt: 1,
        duration_ms: None,
        to_step: step.into(),
        to_status: JobStatus::Running,
        error: None,
        note: None,
        worker: "w-1".into(),
    }
}
