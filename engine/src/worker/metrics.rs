//! What the runtime tells the engine's metrics ([`crate::trace::metrics`]): how late a job
//! started, how long steps ran, retries by class, and jobs finished by status.

use crate::job::{EventKind, HistoryEvent, Millis};
use crate::trace::{attrs, metrics};

/// A job's step starts `lag_ms` after it was due.
pub(super) fn started(workflow: &str, lag_ms: Millis) {
    metrics()
        .start_lag
        .record(lag_ms.max(0) as f64 / 1000.0, &attrs(workflow, &[]));
}

/// A job was created and is about to run.
pub(super) fn job_started(workflow: &str) {
    metrics().jobs_started.add(1, &attrs(workflow, &[]));
}

/// A transition committed: `next` with its `event`.
pub(super) fn committed(wf: &str, event: &HistoryEvent) {
    let m = metrics();
    if let Some(ms) = event.duration_ms {
        let outcome = event.kind.as_str().to_string();
        m.step_duration.record(
            ms as f64 / 1000.0,
            &attrs(wf, &[("step", event.step.clone()), ("outcome", outcome)]),
        );
    }
    if event.kind == EventKind::RetryScheduled {
        m.retries.add(
            1,
            &attrs(
                wf,
                &[
                    ("step", event.step.clone()),
                    ("class", retry_class(event).to_string()),
                ],
            ),
        );
    }
    if event.to_status.is_terminal() {
        m.jobs_finished.add(
            1,
            &attrs(wf, &[("status", event.to_status.as_str().to_string())]),
        );
    }
}

/// A retry's class for the metric: a step that ran out of time, or any other retryable error.
fn retry_class(event: &HistoryEvent) -> &'static str {
    if event
        .error
        .as_deref()
        .is_some_and(|e| e.contains("timed out"))
    {
        "timeout"
    } else {
        "retryable"
    }
}
