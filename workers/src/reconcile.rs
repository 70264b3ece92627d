//! `certflow reconcile`: start a reconcile run now (and, with `--wait`, follow it and say
//! what it did), or, with `--dry-run`, say row by row what a run would do, starting and
//! writing nothing.
//!
//! A dry run reads what a run reads, through the same planner
//! (`workflows::reconcile::Planner`: the inventory a page at a time, ACM once per
//! certificate, SSM once per target) and decides by the same rules (the deployment's
//! `CERTFLOW_EXPIRY_ALERT_DAYS`). For a row that needs a job it names the job a run would
//! start, whose id is derived from what it does, and says whether that job exists: a run
//! does not start a job that already ended, it reports the row as unfixed.

use std::collections::BTreeSet;

use anyhow::Context;
use engine::{Clock, Groups, JobId, JobRecord, JobsError, SystemClock};
use serde::Serialize;
use serde_json::{json, Value};
use workflows::children::ChildStatus;
use workflows::reconcile::{self, Action, Assessment, Counts, ReconcileState, RowResult};

use crate::cli::{Output, ReconcileArgs};
use crate::follow;
use crate::jobs::{self, Ctx};
use crate::view;

/// What a run started from the command line records as its trigger. The CLI does not
/// know the operator's identity (the engine records operator actions as `operator`),
/// so the trigger names the command.
const TRIGGER: &str = "certflow reconcile";
/// The starter a dry run gives the jobs it only names (a job's id does not depend on it).
const DRY_RUN_STARTER: &str = "certflow reconcile --dry-run";
/// A job id no job has: a dry run reads it to learn that the jobs table exists before it
/// reads anything else (see [`dry_run`]).
const PROBE_JOB: &str = "certflow-reconcile-dry-run-probe";
/// Rows not in sync printed after a followed run (the count says how many there were).
const SHOWN_ROWS: usize = 100;
/// Lagging servers named per row in the details below a table (the JSON names all).
const NAMED_SERVERS: usize = 10;
/// Lagging servers named in the plan's LAGGING cell (an instance id is 19 characters).
const CELL_SERVERS: usize = 1;
/// Widest WHY cell of the plan (the details below the table have it whole).
const WHY_CHARS: usize = 60;
/// Widest job id in the plan's JOB cell (the details have it whole).
const JOB_ID_CHARS: usize = 9;

/// Runs `certflow reconcile`.
pub(crate) async fn run(ctx: &Ctx<'_>, args: &ReconcileArgs) -> anyhow::Result<()> {
    if args.dry_run {
        dry_run(ctx).await
    } else {
        start(ctx, args).await
    }
}

// ---------------------------------------------------------------------------------------
// The dry run
// ---------------------------------------------------------------------------------------

/// The job a run would start for a row, as it stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PlannedJob {
    /// Its id.
    id: String,
    /// Whether it exists already.
    exists: bool,
    /// Its status, when it exists.
    status: Option<String>,
    /// Its last error, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// How it ended, when it has: a run reports the row instead of running it again.
    #[serde(skip)]
    ended_as: Option<ChildStatus>,
}

impl PlannedJob {
    fn of(id: &JobId, rec: Option<&JobRecord>) -> Self {
        PlannedJob {
            id: id.to_string(),
            exists: rec.is_some(),
            status: rec.map(|r| r.status.to_string()),
            last_error: rec.and_then(|r| r.last_error.clone()),
            ended_as: rec.and_then(|r| ChildStatus::of(r.status)),
        }
    }
}

/// One row of the plan: the assessment, the group a run would record it in, and the
/// job it would start or find.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PlanRow {
    #[serde(flatten)]
    assessment: Assessment,
    /// `in-sync`, `fixing`, `unfixed`, `alert`, `busy` or `waiting`, as a run records it.
    group: &'static str,
    /// The job a run would start (or find) for the row: exports and installs only.
    job: Option<PlannedJob>,
    /// Why a run would leave the row as it is, when its job already ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    unfixed: Option<String>,
}

/// What a run would record for a row assessed as `assessment`, whose fixing job (if it
/// needs one) is `job`: the workflow's own decision (`reconcile::classify`).
fn plan_row(assessment: Assessment, job: Option<PlannedJob>) -> PlanRow {
    let ended = job.as_ref().and_then(|j| {
        j.ended_as.map(|status| reconcile::EndedJob {
            job_id: &j.id,
            status,
            error: j.last_error.as_deref(),
        })
    });
    let (group, unfixed) = reconcile::classify(&assessment, ended);
    PlanRow {
        assessment,
        group,
        job,
        unfixed,
    }
}

/// The counts a run would record for `rows` (alerts once per certificate, as a run
/// raises them).
fn tally(rows: &[PlanRow], unreadable: usize) -> Counts {
    let mut c = Counts {
        unreadable: unreadable as u32,
        ..Counts::default()
    };
    let mut alerted = BTreeSet::new();
    for r in rows {
        let a = &r.assessment;
        let new_alert = a.alert.is_some() && alerted.insert(a.certificate_arn.clone());
        c.count(r.group, a, new_alert);
    }
    c
}

/// Reads the inventory, ACM and the servers as a run would, and prints what it would do.
async fn dry_run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let deps = crate::aws::export_deps(ctx.sdk, ctx.global);
    let table = ctx.global.names.inventory_table.clone();
    // The planner's errors name the AWS call that failed; a table that does not exist is
    // better said with what to do (explain.rs), so both tables are looked at first.
    crate::inventory::check_table(&deps.clients.dynamodb, &table).await?;
    ctx.store.get(&JobId::new(PROBE_JOB)).await?;
    let jobs = crate::aws::jobs(ctx.sdk, ctx.global).await?;
    let planner = reconcile::Planner::new(
        deps.clients.clone(),
        table,
        deps.config.reconcile.rules,
        jobs.clone(),
    );
    let now = SystemClock.now();
    let mut rows = Vec::new();
    let mut unreadable = Vec::new();
    let mut cursor = None;
    loop {
        let page = planner
            .page(cursor.as_ref(), reconcile::PAGE_ROWS, now)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "reading the inventory, ACM and the servers as a reconcile does (it needs dynamodb:Scan, acm:DescribeCertificate, ssm:DescribeInstanceInformation and dynamodb:GetItem on the jobs table): {e}"
                )
            })?;
        for (row, a) in page.rows {
            let job = match reconcile::fixing_job(&row, &a, DRY_RUN_STARTER)? {
                None => None,
                Some(new) => {
                    let rec = match jobs.get(&new.id).await {
                        Ok(rec) => Some(rec),
                        Err(JobsError::NotFound(_)) => None,
                        Err(e) => return Err(e).with_context(|| format!("reading job {}", new.id)),
                    };
                    Some(PlannedJob::of(&new.id, rec.as_ref()))
                }
            };
            rows.push(plan_row(a, job));
        }
        unreadable.extend(page.unreadable);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // A Scan's order is its hash order: by target and name, people find their row.
    rows.sort_by(|a, b| {
        let key = |r: &PlanRow| {
            (
                r.assessment.target.clone(),
                r.assessment.cert_name.clone(),
                r.assessment.certificate_arn.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let counts = tally(&rows, unreadable.len());
    match ctx.output {
        Output::Json => {
            let plan = Plan {
                dry_run: true,
                rows: &rows,
                summary: &counts,
                unreadable: &unreadable,
            };
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        Output::Table => print!("{}", plan_text(&rows, &unreadable, &counts)),
    }
    Ok(())
}

/// The plan as JSON: `{"DryRun": true, "Rows": [...], "Summary": {...}, "Unreadable": [...]}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Plan<'a> {
    dry_run: bool,
    rows: &'a [PlanRow],
    summary: &'a Counts,
    unreadable: &'a [String],
}

/// `2: i-0a …` (online lagging servers, the first named), `+1 offline`.
fn lagging_cell(a: &Assessment) -> String {
    let mut cell = a.lagging.len().to_string();
    if !a.lagging.is_empty() {
        let first: Vec<&str> = a
            .lagging
            .iter()
            .take(CELL_SERVERS)
            .map(String::as_str)
            .collect();
        cell.push_str(&format!(": {}", first.join(", ")));
        if a.lagging.len() > CELL_SERVERS {
            cell.push_str(" …");
        }
    }
    if !a.offline_lagging.is_empty() {
        cell.push_str(&format!(" +{} offline", a.offline_lagging.len()));
    }
    cell
}

/// `export`, `install, alert`, `none`, …
fn action_cell(a: &Assessment) -> String {
    match &a.alert {
        Some(_) => format!("{}, alert", a.action.word()),
        None => a.action.word().to_string(),
    }
}

/// The job a run would start or find: its id's start and whether it exists.
fn job_cell(r: &PlanRow) -> String {
    let short = |id: &str| view::clip(id, JOB_ID_CHARS);
    match (&r.job, &r.assessment.action) {
        (Some(j), _) if !j.exists => format!("{} new", short(&j.id)),
        (Some(j), _) if j.ended_as.is_some() => format!(
            "{} {}: unfixed",
            short(&j.id),
            j.status.as_deref().unwrap_or("ended")
        ),
        (Some(j), _) => format!(
            "{} {}",
            short(&j.id),
            j.status.as_deref().unwrap_or("exists")
        ),
        (None, Action::Busy { job_id }) => format!("{} running", short(job_id)),
        (None, _) => "-".into(),
    }
}

/// What a run would do with the row's job, in words, for the details (a job that ended
/// is said by the row's `unfixed` line).
fn job_words(r: &PlanRow) -> Option<String> {
    let j = r.job.as_ref().filter(|j| j.ended_as.is_none())?;
    Some(if !j.exists {
        format!("job {}: not started yet; a run starts it", j.id)
    } else {
        format!(
            "job {}: exists, {}: a run finds it and waits for it",
            j.id,
            j.status.as_deref().unwrap_or("running")
        )
    })
}

/// The plan for people: a table of every row, the details of those not in sync, the
/// counts.
fn plan_text(rows: &[PlanRow], unreadable: &[String], counts: &Counts) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("the inventory has no rows: nothing to reconcile\n");
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let a = &r.assessment;
                let mut why = a.why.clone();
                if let Some(alert) = &a.alert {
                    why.push_str(&format!("; alert: {alert}"));
                }
                vec![
                    a.target.clone(),
                    a.cert_name.clone(),
                    view::certificate_id(&a.certificate_arn),
                    view::serial_cell(a.acm_serial.as_deref().or(a.acm_status.as_deref())),
                    view::serial_cell(a.exported_serial.as_deref()),
                    a.servers.to_string(),
                    a.current.to_string(),
                    lagging_cell(a),
                    action_cell(a),
                    job_cell(r),
                    view::clip(&why, WHY_CHARS),
                ]
            })
            .collect();
        out.push_str(&view::table(
            &[
                "TARGET",
                "NAME",
                "CERTIFICATE",
                "ACM SERIAL",
                "EXPORTED SERIAL",
                "SERVERS",
                "CURRENT",
                "LAGGING",
                "ACTION",
                "JOB",
                "WHY",
            ],
            &cells,
        ));
    }
    let drifted: Vec<&PlanRow> = rows
        .iter()
        .filter(|r| r.group != reconcile::IN_SYNC)
        .collect();
    if !drifted.is_empty() {
        out.push_str("\nNot in sync\n");
        for r in drifted {
            out.push_str(&row_block(
                &r.assessment,
                job_words(r).as_deref(),
                r.unfixed.as_deref(),
            ));
        }
    }
    if !unreadable.is_empty() {
        out.push_str("\nNot rows certflow wrote (a run skips them)\n");
        for u in unreadable {
            out.push_str(&format!("  {}\n", view::one_line(u)));
        }
    }
    out.push('\n');
    out.push_str(&view::one_line(&counts.summary()));
    out.push_str(
        "\nDry run: no job was started and nothing was written; `certflow reconcile --wait` runs it.\n",
    );
    out
}

/// `a, b, c and 4 more`.
fn named(ids: &[String]) -> String {
    let mut text = ids
        .iter()
        .take(NAMED_SERVERS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > NAMED_SERVERS {
        text.push_str(&format!(" and {} more", ids.len() - NAMED_SERVERS));
    }
    text
}

/// One row that is not in sync, in full, for people: which row, which servers, what is
/// (or would be) done and why.
fn row_block(a: &Assessment, job: Option<&str>, unfixed: Option<&str>) -> String {
    let mut lines = vec![
        format!("{} {}  {}", a.target, a.cert_name, a.certificate_arn),
        format!("  {}: {}", a.action.word(), a.why),
    ];
    let mut servers = format!(
        "  servers: {} carry the target, {} run the exported serial",
        a.servers, a.current
    );
    for (what, ids) in [
        ("lagging", &a.lagging),
        ("offline, lagging", &a.offline_lagging),
        ("departed", &a.departed),
    ] {
        if !ids.is_empty() {
            servers.push_str(&format!("; {what}: {}", named(ids)));
        }
    }
    lines.push(servers);
    if let Some(job) = job {
        lines.push(format!("  {job}"));
    }
    if let Some(why) = unfixed {
        lines.push(format!("  unfixed: {why}"));
    }
    if let Some(alert) = &a.alert {
        lines.push(format!("  alert: {alert}"));
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(&view::one_line(&l));
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// A run
// ---------------------------------------------------------------------------------------

/// A row a run recorded as not in sync, with its job's status now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunRow {
    #[serde(flatten)]
    result: RowResult,
    /// The group the run recorded it in.
    group: String,
    /// Its job's status now (the run recorded the status it saw).
    job_status_now: Option<String>,
}

/// Starts a reconcile job now; with `--wait`, follows it and prints what it did.
async fn start(ctx: &Ctx<'_>, args: &ReconcileArgs) -> anyhow::Result<()> {
    let jobs = crate::aws::jobs(ctx.sdk, ctx.global).await?;
    let created = jobs
        .create(reconcile::new_job(TRIGGER, None)?)
        .await
        .context("starting a reconcile job")?;
    let id = created.record.job_id;
    let said = format!("started: reconcile job {id}");
    if !args.wait {
        match ctx.output {
            Output::Table => {
                println!("{said} (a worker runs it)\nfollow it: certflow jobs watch {id}")
            }
            Output::Json => println!(
                "{}",
                jobs::pretty(&json!({
                    "JobId": id.as_str(),
                    "Workflow": reconcile::NAME,
                    "Trigger": TRIGGER,
                }))?
            ),
        }
        return Ok(());
    }
    match ctx.output {
        Output::Table => println!("{said}"),
        Output::Json => eprintln!("{said}"),
    }
    let rec = follow::follow(
        &ctx.store,
        &id,
        args.timeout,
        jobs::sink(ctx.output),
        "the job",
    )
    .await?;
    let history = ctx.store.history(&id).await?;
    // The last note is the run's summary (`collect`'s), or how far it got.
    let summary = history.iter().rev().find_map(|e| e.note.clone());
    let state: Option<ReconcileState> = serde_json::from_value(rec.data.clone()).ok();
    let page = ctx
        .store
        .entries(
            &id,
            reconcile::ROWS,
            &Groups::Except(vec![reconcile::IN_SYNC.to_string()]),
            None,
            SHOWN_ROWS,
        )
        .await?;
    let mut rows = Vec::new();
    for e in page.entries {
        let Ok(result) = serde_json::from_value::<RowResult>(e.data) else {
            continue;
        };
        let job_status_now = match &result.job_id {
            Some(j) => Some(
                ctx.store
                    .get(&JobId::new(j.clone()))
                    .await?
                    .map_or_else(|| "NOT FOUND".to_string(), |r| r.status.to_string()),
            ),
            None => None,
        };
        rows.push(RunRow {
            result,
            group: e.group,
            job_status_now,
        });
    }
    let not_in_sync = state
        .as_ref()
        .map_or(rows.len(), |s| (s.counts.rows - s.counts.in_sync) as usize);
    match ctx.output {
        Output::Json => {
            let mut v = view::job_detail_json(&rec, &history, &[]);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("Summary".into(), summary.clone().into());
                obj.insert(
                    "Counts".into(),
                    state
                        .as_ref()
                        .and_then(|s| serde_json::to_value(&s.counts).ok())
                        .unwrap_or(Value::Null),
                );
                obj.insert("Rows".into(), serde_json::to_value(&rows)?);
                obj.insert("RowsNotInSync".into(), not_in_sync.into());
            }
            println!("{}", jobs::pretty(&v)?);
        }
        Output::Table => print!(
            "{}",
            run_text(&rec, summary.as_deref(), &rows, not_in_sync, state.as_ref())
        ),
    }
    follow::require_success(&rec)
}

/// What a followed run did, for people.
fn run_text(
    rec: &JobRecord,
    summary: Option<&str>,
    rows: &[RunRow],
    not_in_sync: usize,
    state: Option<&ReconcileState>,
) -> String {
    let took = view::duration((rec.updated_at - rec.created_at).max(0) as u64);
    let mut out = format!(
        "\n{}\n",
        view::one_line(&format!(
            "job {} {} at step {} after {took}",
            rec.job_id, rec.status, rec.step
        ))
    );
    if let Some(s) = summary {
        out.push_str(&view::one_line(s));
        out.push('\n');
    }
    if !rows.is_empty() {
        let shown = if not_in_sync > rows.len() {
            format!(" ({} of {not_in_sync} shown)", rows.len())
        } else {
            String::new()
        };
        out.push_str(&format!("\nNot in sync when the run looked{shown}\n"));
        for r in rows {
            let job = r.result.job_id.as_ref().map(|j| {
                format!(
                    "job {j}: {}",
                    r.job_status_now.as_deref().unwrap_or("status unknown")
                )
            });
            out.push_str(&row_block(
                &r.result.assessment,
                job.as_deref(),
                r.result.unfixed.as_deref(),
            ));
        }
    }
    if let Some(st) = state.filter(|s| s.counts.alerts > 0) {
        out.push_str(&format!(
            "\n{} alert(s) need a person (the `alert:` lines above); the run itself {}.\n",
            st.counts.alerts,
            rec.status.as_str().to_ascii_lowercase()
        ));
    }
    out.push_str(&format!(
        "details: certflow jobs show {}\n",
        view::printable(rec.job_id.as_str())
    ));
    out
}

#[cfg(test)]
mod tests;
