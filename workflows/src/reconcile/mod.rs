//! `reconcile`: the inventory's desired state (every server carrying a row's target runs
//! ACM's current certificate) against what is observed, fixed where certflow can and
//! reported where it cannot. It catches what events miss: a renewal whose event never
//! arrived, a server that joined the target after the install, a node that was offline.
//!
//! A run is one job, started on a schedule (the `<prefix>-reconcile` EventBridge rule's
//! `Scheduled Event` on the events queue) or by `certflow reconcile`. Its steps:
//!
//! 1. `scan` — one page of the inventory at a time ([`PAGE_ROWS`] rows, then a pause of
//!    [`ReconcileConfig::pace`]: a durable timer, so the table, ACM and SSM are read at a
//!    bounded rate however large the inventory). Each row is assessed ([`assess`]) and
//!    recorded as an entry of collection [`ROWS`]; its observation goes on the row
//!    (`TargetInstances`, departed servers out of its set); and the job that fixes it is
//!    started as a child: the row's export for ACM's serial
//!    ([`crate::export_certificate::sync_job`], the same job a renewal event starts, so the
//!    two never both run), or an install of the exported bundle on the lagging servers
//!    only ([`crate::export_certificate::install_job`]).
//! 2. `collect` — waits for those jobs to end, and says how many fixed their row.
//!
//! Child ids are derived from what they do (row, serial, servers), so a second run while
//! nothing changed finds the jobs of the first and starts nothing; a job that already
//! ended without fixing its row is not run again but reported as *unfixed*, with the
//! command to retry it.

pub mod assess;
mod look;
pub mod outcome;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use engine::clock::rfc3339;
use engine::{Outcome, StepContext, StepError, StepPolicy, Workflow};
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use assess::{assess, Action, Assessment, Certificate, Rules, Server};
pub use look::{certificate, Cursor, Page, Planner};
pub use outcome::{classify, EndedJob};

use crate::aws::Clients;
use crate::children::{self, Tally};
use crate::export_certificate::{self, Cause};
use crate::inventory::{self, InventoryRow};
use crate::notify::{CertificateExpiring, DriftFound, Notice, Notifier, ReconcileSummary};
use crate::outcomes;

/// How many lagging servers a drift event names (it counts them all).
const DRIFT_SERVERS: usize = 20;

/// The workflow's name.
pub const NAME: &str = "reconcile";

/// The entry collection of a run's rows: key a digest of the row's key, group the
/// outcome ([`IN_SYNC`], [`FIXING`], [`UNFIXED`], [`ALERT`], [`BUSY`], [`WAITING`]), data
/// the [`RowResult`].
pub const ROWS: &str = "rows";
/// Group of a row that needs nothing.
pub const IN_SYNC: &str = "in-sync";
/// Group of a row a job was started (or found running) for.
pub const FIXING: &str = "fixing";
/// Group of a row whose fixing job already ended without fixing it.
pub const UNFIXED: &str = "unfixed";
/// Group of a row that needs a person (its certificate is gone, not ISSUED, or expiring
/// without a renewal) and no job.
pub const ALERT: &str = "alert";
/// Group of a row whose export job is still running.
pub const BUSY: &str = "busy";
/// Group of a row whose only lagging servers are offline.
pub const WAITING: &str = "waiting";

/// Rows read per page.
pub const PAGE_ROWS: i32 = 25;

/// How many problems the record names (the rest are entries).
const FIRST_PROBLEMS: usize = 5;

/// Settings of the reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// The decisions' settings.
    pub rules: Rules,
    /// The pause between pages.
    pub pace: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            rules: Rules::default(),
            pace: Duration::from_secs(1),
        }
    }
}

/// What the workflow needs.
#[derive(Debug, Clone)]
pub struct Deps {
    /// AWS clients.
    pub clients: Clients,
    /// The inventory table.
    pub inventory_table: String,
    /// Settings.
    pub config: ReconcileConfig,
    /// Where drift, alerts and the summary are told.
    pub notifier: Notifier,
}

/// What a run found, in counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Counts {
    /// Rows read.
    pub rows: u32,
    /// Rows in sync.
    pub in_sync: u32,
    /// Exports started (or found running) for a serial not exported.
    pub exports: u32,
    /// Installs started (or found running) for lagging servers.
    pub installs: u32,
    /// Alerts raised.
    pub alerts: u32,
    /// Rows whose fixing job already ended without fixing them.
    pub unfixed: u32,
    /// Rows whose export job was running.
    pub busy: u32,
    /// Rows whose only lagging servers are offline.
    pub waiting: u32,
    /// Items of the table that are not rows certflow wrote.
    pub unreadable: u32,
}

/// State of a reconcile job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileState {
    /// What started it: `schedule <event id>` or `certflow reconcile`.
    pub trigger: String,
    /// Where the next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Pages read so far.
    #[serde(default)]
    pub pages: u32,
    /// What it found.
    #[serde(default)]
    pub counts: Counts,
    /// The first problems, `<target> <cert name>: <why>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_problems: Vec<String>,
    /// Certificates alerted on in this run (one alert per certificate).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub alerted: BTreeSet<String>,
    /// How its jobs went.
    #[serde(flatten)]
    pub tally: Tally,
    /// Polls of the jobs so far.
    #[serde(default)]
    pub polls: u32,
}

/// What a run recorded about one row (an entry's data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RowResult {
    /// The assessment.
    #[serde(flatten)]
    pub assessment: Assessment,
    /// The job started or found for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// That job's status when the run looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    /// Why the row is not fixed, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfixed: Option<String>,
}

/// A reconcile job. `key` makes it idempotent (a scheduled event's id); `None` makes a
/// new run.
pub fn new_job(trigger: &str, key: Option<&str>) -> Result<engine::NewJob, engine::JobsError> {
    let state = ReconcileState {
        trigger: trigger.to_string(),
        ..ReconcileState::default()
    };
    engine::NewJob::new(NAME, key, &state)
}

/// The job that fixes row `row` as assessed, if any: its export for ACM's serial, or an
/// install on its lagging servers.
pub fn fixing_job(
    row: &InventoryRow,
    a: &Assessment,
    started_by: &str,
) -> Result<Option<engine::NewJob>, engine::JobsError> {
    match &a.action {
        Action::Export { serial } => {
            export_certificate::sync_job(row, serial, Cause::Drift, started_by).map(Some)
        }
        Action::Install { servers } => {
            let serial = row.serial.as_deref().unwrap_or_default();
            export_certificate::install_job(row, serial, servers, Cause::Drift, started_by)
                .map(Some)
        }
        Action::None | Action::Busy { .. } => Ok(None),
    }
}

/// An entry key for `row`: a digest of its table key (which may be longer than an entry
/// key may be).
fn row_key(row: &InventoryRow) -> String {
    let d = sha2::Sha256::digest(
        format!(
            "{}\u{1f}{}",
            row.tag_key_value(),
            row.certificate_arn_cert_name()
        )
        .as_bytes(),
    );
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

async fn scan(deps: Arc<Deps>, ctx: StepContext, mut st: ReconcileState) -> StepResultOf {
    let Some(jobs) = ctx.jobs().cloned() else {
        return Err(StepError::abort(
            "reconcile needs the engine's job operations",
        ));
    };
    let planner = Planner::new(
        deps.clients.clone(),
        deps.inventory_table.clone(),
        deps.config.rules,
        jobs,
    );
    let page = planner
        .page(st.cursor.as_ref(), PAGE_ROWS, ctx.now())
        .await?;
    let mut entries = Vec::new();
    let mut children = Vec::new();
    let mut notices = Vec::new();
    // One expiry alert per certificate, naming every target of it on this page.
    let mut expiring: Vec<CertificateExpiring> = Vec::new();
    let now = rfc3339(ctx.now());
    for (row, a) in page.rows {
        inventory::observe(
            &deps.clients.dynamodb,
            &deps.inventory_table,
            row.key(),
            u64::from(a.servers),
            &now,
            &a.departed,
        )
        .await?;
        let mut result = RowResult {
            assessment: a.clone(),
            job_id: None,
            job_status: None,
            unfixed: None,
        };
        let new = fixing_job(&row, &a, ctx.job_id().as_str())
            .map_err(|e| StepError::abort(e.to_string()))?;
        let mut ended = None;
        if let Some(new) = new {
            let (child, rec, existed) =
                children::start(&ctx, new, a.target.clone(), a.cert_name.clone()).await?;
            result.job_id = Some(child.job_id.clone());
            result.job_status = Some(rec.status.as_str().to_string());
            match child.status {
                // Its job ended before this run without fixing the row: it is not run
                // again (it would fail the same way); a person decides.
                Some(status) if existed => ended = Some((status, rec.last_error.clone())),
                _ => children.push(child.entry()),
            }
        }
        let (group, unfixed) = outcome::classify(
            &a,
            ended.as_ref().map(|(status, error)| outcome::EndedJob {
                job_id: result.job_id.as_deref().unwrap_or_default(),
                status: *status,
                error: error.as_deref(),
            }),
        );
        result.unfixed = unfixed;
        let new_alert = a.alert.is_some() && !st.alerted.contains(&a.certificate_arn);
        st.counts.count(group, &a, new_alert);
        if let Some(alert) = &a.alert {
            if st.alerted.insert(a.certificate_arn.clone()) {
                expiring.push(CertificateExpiring {
                    certificate_arn: a.certificate_arn.clone(),
                    status: a.acm_status.clone(),
                    not_after: a.not_after.clone(),
                    days_to_expiry: a.days_to_expiry,
                    targets: vec![a.target.clone()],
                    why: alert.clone(),
                    job_id: ctx.job_id().to_string(),
                });
            } else if let Some(e) = expiring
                .iter_mut()
                .find(|e| e.certificate_arn == a.certificate_arn)
            {
                e.targets.push(a.target.clone());
            }
            note_problem(&mut st, &a, alert);
        }
        if matches!(group, FIXING | UNFIXED | WAITING) {
            notices.push(drift(&ctx, &a, &result));
        }
        if let Some(why) = &result.unfixed {
            note_problem(&mut st, &a, why);
        }
        entries.push(engine::Entry::new(
            row_key(&row),
            group,
            serde_json::to_value(&result).unwrap_or(serde_json::Value::Null),
        ));
    }
    st.counts.unreadable += page.unreadable.len() as u32;
    for bad in &page.unreadable {
        tracing::warn!(job_id = %ctx.job_id(), item = %bad, "inventory item not reconciled: not a row certflow wrote");
    }
    ctx.put_entries(ROWS, &entries).await?;
    ctx.put_entries(children::CHILDREN, &children).await?;
    notices.extend(expiring.into_iter().map(Notice::CertificateExpiring));
    let unpublished = outcomes::publish(&deps.notifier, ctx.job_id().as_str(), &notices).await;
    // Counted as they start, so that `collect`'s notes say "n of N" before the end.
    st.tally.started += children.len() as u32;
    st.pages += 1;
    st.cursor = page.next;
    let note = format!(
        "page {}: {} row(s) so far; {} in sync, {} export(s), {} install(s), {} alert(s), {} unfixed",
        st.pages,
        st.counts.rows,
        st.counts.in_sync,
        st.counts.exports,
        st.counts.installs,
        st.counts.alerts,
        st.counts.unfixed
    );
    let note = match unpublished {
        Some(e) => format!("{note}; {e}"),
        None => note,
    };
    if st.cursor.is_some() {
        return Ok(Outcome::poll(st, deps.config.pace).with_note(note));
    }
    Ok(Outcome::next("collect", st).with_note(note))
}

/// `certflow Drift Found` for a row the run acts on, or cannot fix.
fn drift(ctx: &StepContext, a: &Assessment, r: &RowResult) -> Notice {
    let lagging: Vec<String> = a
        .lagging
        .iter()
        .chain(&a.offline_lagging)
        .cloned()
        .collect();
    let acted = r.unfixed.is_none() && r.job_id.is_some();
    Notice::DriftFound(DriftFound {
        certificate_arn: a.certificate_arn.clone(),
        target: a.target.clone(),
        cert_name: a.cert_name.clone(),
        acm_serial: a.acm_serial.clone(),
        exported_serial: a.exported_serial.clone(),
        lagging: lagging.len() as u32,
        servers: lagging.into_iter().take(DRIFT_SERVERS).collect(),
        action: if acted { a.action.word() } else { "none" }.to_string(),
        job_id: r.job_id.clone(),
        why: r.unfixed.clone().unwrap_or_else(|| a.why.clone()),
        reconcile_job_id: ctx.job_id().to_string(),
    })
}

fn note_problem(st: &mut ReconcileState, a: &Assessment, why: &str) {
    if st.first_problems.len() < FIRST_PROBLEMS {
        st.first_problems
            .push(format!("{} {}: {why}", a.target, a.cert_name));
    }
}

async fn collect(deps: Arc<Deps>, ctx: StepContext, mut st: ReconcileState) -> StepResultOf {
    let running = children::poll(&ctx).await?;
    if running > 0 {
        let delay = children::poll_delay(st.polls);
        st.polls += 1;
        let note = format!("{running} of {} job(s) running", st.tally.started);
        return Ok(Outcome::poll(st, delay).with_note(note));
    }
    st.tally = children::tally(&ctx).await?;
    let c = &st.counts;
    let mut note = c.summary();
    if st.tally.started > 0 {
        note.push_str(&format!("; {}", st.tally.summary("job(s)")));
    }
    // Sent whatever the run found: a summary that stops coming says the schedule broke.
    let summary = Notice::ReconcileSummary(ReconcileSummary {
        job_id: ctx.job_id().to_string(),
        rows: c.rows,
        in_sync: c.in_sync,
        exports: c.exports,
        installs: c.installs,
        alerts: c.alerts,
        unfixed: c.unfixed + st.tally.unsuccessful,
        first_problems: st
            .first_problems
            .iter()
            .cloned()
            .chain(st.tally.first_failures.iter().cloned())
            .take(FIRST_PROBLEMS)
            .collect(),
    });
    if let Some(e) = outcomes::publish(&deps.notifier, ctx.job_id().as_str(), &[summary]).await {
        note.push_str(&format!("; {e}"));
    }
    Ok(Outcome::succeed(st).with_note(note))
}

type StepResultOf = Result<Outcome<ReconcileState>, StepError>;

/// The workflow.
pub fn workflow(deps: Deps) -> Workflow<ReconcileState> {
    let deps = Arc::new(deps);
    let policy = StepPolicy::default()
        .max_attempts(8)
        .timeout(Duration::from_secs(120))
        .backoff(Duration::from_secs(1), Duration::from_secs(60));
    let d = deps.clone();
    let wf = Workflow::new(NAME)
        .deadline(Duration::from_secs(24 * 3600))
        .step_with("scan", policy, move |ctx, st| scan(d.clone(), ctx, st));
    let notifier = deps.notifier.clone();
    let d = deps;
    wf.step_with("collect", policy, move |ctx, st| {
        collect(d.clone(), ctx, st)
    })
    .on_end(move |ended, _: ReconcileState| {
        let notifier = notifier.clone();
        async move {
            if ended.status != engine::JobStatus::Failed {
                return;
            }
            let notice = outcomes::job_failed(&ended, None, None, None);
            outcomes::publish(&notifier, ended.job_id.as_str(), &[notice]).await;
        }
    })
}
