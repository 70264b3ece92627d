//! What a run records for a row, decided once for both the `scan` step and
//! `certflow reconcile --dry-run`: its group, why it is unfixed when its fixing job had
//! already ended, and the counts.

use super::assess::{Action, Assessment};
use super::{Counts, ALERT, BUSY, FIXING, IN_SYNC, UNFIXED, WAITING};
use crate::children::ChildStatus;

/// A row's fixing job that had already ended when the run found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedJob<'a> {
    /// Its id.
    pub job_id: &'a str,
    /// How it ended.
    pub status: ChildStatus,
    /// Its last error.
    pub error: Option<&'a str>,
}

/// The group a run records for a row assessed as `a`, and, when its fixing job had already
/// ended (`ended`), why the row stays unfixed: that job is not run again.
pub fn classify(a: &Assessment, ended: Option<EndedJob<'_>>) -> (&'static str, Option<String>) {
    if let Some(j) = ended {
        let why = match j.status {
            ChildStatus::Succeeded => {
                format!(
                    "job {} succeeded, yet the row still differs; certflow does not run it again",
                    j.job_id
                )
            }
            ChildStatus::Cancelled => format!(
                "job {} was cancelled, and certflow does not run it again: export the certificate to the target with `certflow submit --certificate-arn {} --cert-name {} --target {}`",
                j.job_id, a.certificate_arn, a.cert_name, a.target
            ),
            ChildStatus::Failed => format!(
                "job {} FAILED{}; certflow does not run it again: retry it with `certflow jobs retry {}`",
                j.job_id,
                j.error.map(|e| format!(": {e}")).unwrap_or_default(),
                j.job_id
            ),
        };
        return (UNFIXED, Some(why));
    }
    let group = match (&a.action, &a.alert) {
        (Action::Busy { .. }, _) => BUSY,
        (Action::None, Some(_)) => ALERT,
        (Action::None, None) if !a.offline_lagging.is_empty() => WAITING,
        (Action::None, None) => IN_SYNC,
        _ => FIXING,
    };
    (group, None)
}

impl Counts {
    /// Counts one row recorded in `group`; `new_alert` when its alert is the first for its
    /// certificate in this run (alerts are raised once per certificate).
    pub fn count(&mut self, group: &str, a: &Assessment, new_alert: bool) {
        self.rows += 1;
        match group {
            IN_SYNC => self.in_sync += 1,
            BUSY => self.busy += 1,
            WAITING => self.waiting += 1,
            UNFIXED => self.unfixed += 1,
            FIXING => match a.action {
                Action::Export { .. } => self.exports += 1,
                Action::Install { .. } => self.installs += 1,
                Action::None | Action::Busy { .. } => {}
            },
            _ => {}
        }
        if a.alert.is_some() && new_alert {
            self.alerts += 1;
        }
    }

    /// The counts in one line: `"3 row(s): 1 in sync, 1 export(s), …"`.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} row(s): {} in sync, {} export(s), {} install(s), {} alert(s), {} unfixed",
            self.rows, self.in_sync, self.exports, self.installs, self.alerts, self.unfixed
        );
        if self.busy > 0 {
            line.push_str(&format!(", {} busy with their export", self.busy));
        }
        if self.waiting > 0 {
            line.push_str(&format!(", {} waiting for offline servers", self.waiting));
        }
        if self.unreadable > 0 {
            line.push_str(&format!(
                ", {} item(s) not rows certflow wrote",
                self.unreadable
            ));
        }
        line
    }
}
