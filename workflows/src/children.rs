//! Child jobs: a job that starts other jobs (a renewal, a reconcile, a new server) keeps
//! each one as an entry of its collection [`CHILDREN`], polls them until they have all
//! ended, and keeps only counts and the first failures in its record ([`Tally`]), so
//! that its record stays small however many it starts.

use std::fmt;
use std::time::Duration;

use engine::{Entry, Groups, JobId, JobStatus, JobsError, NewJob, StepContext, StepError};
use serde::{Deserialize, Serialize};

/// The entry collection of a job's children: key the child's job id, group [`RUNNING`]
/// or the child's final status in lowercase, data a [`Child`].
pub const CHILDREN: &str = "children";
/// Group of a child that has not finished.
pub const RUNNING: &str = "running";

/// How many unsuccessful children the record names (the rest are entries).
const FIRST_FAILURES: usize = 5;

/// One child job.
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

impl Child {
    /// Its entry.
    pub(crate) fn entry(&self) -> Entry {
        let group = self
            .status
            .map_or(RUNNING.to_string(), |s| s.as_str().to_ascii_lowercase());
        Entry::new(
            self.job_id.clone(),
            group,
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// How a child job ended: its terminal [`JobStatus`], by the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChildStatus {
    /// It succeeded.
    Succeeded,
    /// It failed.
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

/// What a parent's record keeps about its children.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// How many were started (each one an entry in [`CHILDREN`]).
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
}

impl Tally {
    /// `"2 of 3 <what> succeeded; 1 did not: …"`.
    pub fn summary(&self, what: &str) -> String {
        let mut note = format!("{} of {} {what} succeeded", self.succeeded, self.started);
        if self.unsuccessful > 0 {
            note.push_str(&format!(
                "; {} did not: {}{}",
                self.unsuccessful,
                self.first_failures.join(", "),
                if self.unsuccessful as usize > self.first_failures.len() {
                    " …"
                } else {
                    ""
                }
            ));
        }
        note
    }
}

/// Creates the child job `new` (or finds it: child ids are derived from what they do, so
/// a step run again, or another parent that wanted the same job, finds the one job).
/// Returns the child and whether it existed already.
pub(crate) async fn start(
    ctx: &StepContext,
    new: NewJob,
    target: String,
    cert_name: String,
) -> Result<(Child, engine::JobRecord, bool), StepError> {
    let Some(jobs) = ctx.jobs() else {
        return Err(StepError::abort(
            "starting jobs needs the engine's job operations",
        ));
    };
    let created = jobs.create(new).await.map_err(|e| match e {
        // A child's key names what it does, so a conflict means the table holds something
        // certflow did not write: retrying cannot help.
        JobsError::RequestConflict { .. } => StepError::abort(format!("starting a job: {e}")),
        e => StepError::retry(format!("starting a job: {e}")),
    })?;
    let child = Child {
        job_id: created.record.job_id.to_string(),
        target,
        cert_name,
        status: ChildStatus::of(created.record.status),
    };
    Ok((child, created.record, created.existed))
}

/// Looks at every child still running and records those that have ended; returns how many
/// are still running. Counted from the entries, so a step that runs again counts nothing
/// twice.
pub(crate) async fn poll(ctx: &StepContext) -> Result<usize, StepError> {
    let Some(jobs) = ctx.jobs() else {
        return Err(StepError::abort(
            "following jobs needs the engine's job operations",
        ));
    };
    let running = ctx
        .entries(CHILDREN, &Groups::Only(vec![RUNNING.to_string()]))
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
            Some(_) => finished.push(child.entry()),
            None => still_running += 1,
        }
    }
    ctx.put_entries(CHILDREN, &finished).await?;
    Ok(still_running)
}

/// The pause before poll number `polls + 1`: 5 s, doubling, at most a minute.
pub(crate) fn poll_delay(polls: u32) -> Duration {
    Duration::from_secs(5u64 * 2u64.pow(polls.min(4))).min(Duration::from_secs(60))
}

/// The counts of every child, once all have ended.
pub(crate) async fn tally(ctx: &StepContext) -> Result<Tally, StepError> {
    let all = ctx.entries(CHILDREN, &Groups::All).await?;
    let mut t = Tally {
        started: all.len() as u32,
        ..Tally::default()
    };
    for entry in &all {
        let Ok(child) = serde_json::from_value::<Child>(entry.data.clone()) else {
            continue;
        };
        if child.status == Some(ChildStatus::Succeeded) {
            t.succeeded += 1;
            continue;
        }
        t.unsuccessful += 1;
        if t.first_failures.len() < FIRST_FAILURES {
            t.first_failures.push(format!(
                "{} {} ({})",
                child.target,
                child.status.map_or("?", ChildStatus::as_str),
                child.job_id
            ));
        }
    }
    Ok(t)
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

    #[test]
    fn a_tally_flattens_into_the_parent_s_record_as_before() {
        #[derive(Serialize, Deserialize)]
        struct Parent {
            #[serde(flatten)]
            tally: Tally,
            polls: u32,
        }
        let stored = json!({"started": 3, "succeeded": 2, "unsuccessful": 1,
            "first_failures": ["Tier=db FAILED (j-2)"], "polls": 4});
        let p: Parent = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(p.tally.started, 3);
        assert_eq!(
            p.tally.summary("export job(s)"),
            "2 of 3 export job(s) succeeded; 1 did not: Tier=db FAILED (j-2)"
        );
        assert_eq!(serde_json::to_value(&p).unwrap(), stored);
    }
}
