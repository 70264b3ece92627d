//! `certflow jobs …`: what operators use to inspect and steer jobs.

use std::sync::Arc;

use anyhow::bail;
use engine::{Clock, JobId, JobRecord, JobStatus, JobStore, Jobs, SystemClock};

use crate::cli::{Global, JobsCommand, ListArgs, Output, StatusFilter};
use crate::follow::{self, Sink};
use crate::paging;
use crate::servers;
use crate::view;

/// What a jobs command needs: the table always, the task queue only to change a job.
pub(crate) struct Ctx<'a> {
    pub(crate) sdk: &'a aws_config::SdkConfig,
    pub(crate) global: &'a Global,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) output: Output,
}

impl Ctx<'_> {
    /// The job operations (connects to the task queue: only commands that change a job).
    async fn jobs(&self) -> anyhow::Result<Jobs> {
        crate::aws::jobs(self.sdk, self.global).await
    }
}

/// Runs one of the `certflow jobs` commands.
pub(crate) async fn run(ctx: &Ctx<'_>, cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Show {
            job_id,
            servers,
            limit,
            after,
        } => {
            let page = ShowPage {
                which: servers,
                limit: limit as usize,
                after,
            };
            show(ctx, &JobId::new(job_id), &page).await
        }
        JobsCommand::List(args) => list(ctx, &args).await,
        JobsCommand::Watch { job_id, timeout } => {
            let id = JobId::new(job_id);
            read(&ctx.store, &id).await?;
            watch(ctx, &id, timeout).await
        }
        JobsCommand::Retry {
            job_id,
            wait,
            timeout,
        } => {
            let id = JobId::new(job_id);
            let before = read(&ctx.store, &id).await?;
            if let Some(why) = not_retryable(&before) {
                bail!(why);
            }
            let jobs = ctx.jobs().await?;
            let rec = jobs.retry(&id).await?;
            let resumed = format!(
                "job {id} restarted at step {} (earlier steps do not run again)",
                rec.step
            );
            if wait {
                progress_line(ctx.output, &resumed);
                watch(ctx, &id, timeout).await
            } else {
                match ctx.output {
                    Output::Table => println!("{resumed}\nfollow it: certflow jobs watch {id}"),
                    Output::Json => println!("{}", pretty(&view::job_json(&rec))?),
                }
                Ok(())
            }
        }
        JobsCommand::Cancel {
            job_id,
            wait,
            timeout,
        } => {
            let id = JobId::new(job_id);
            let before = read(&ctx.store, &id).await?;
            if before.status.is_terminal() {
                bail!(
                    "job {id} is already {}; only PENDING, RUNNING or WAITING jobs can be cancelled",
                    before.status
                );
            }
            let jobs = ctx.jobs().await?;
            let rec = jobs.cancel(&id).await?;
            let said = format!(
                "cancel requested for job {id} ({} at step {}); it stops at its next step boundary",
                rec.status, rec.step
            );
            if !wait {
                match ctx.output {
                    Output::Table => println!("{said}\nfollow it: certflow jobs watch {id}"),
                    Output::Json => println!("{}", pretty(&view::job_json(&rec))?),
                }
                return Ok(());
            }
            progress_line(ctx.output, &said);
            let rec = follow::follow(&ctx.store, &id, timeout, sink(ctx.output), "the job").await?;
            finish_output(ctx, &rec).await?;
            if rec.status != JobStatus::Cancelled {
                bail!(
                    "job {id} ended {} before the cancel took effect",
                    rec.status
                );
            }
            Ok(())
        }
    }
}

/// Why a job cannot be retried, in words that say what to do instead.
fn not_retryable(rec: &JobRecord) -> Option<String> {
    let id = &rec.job_id;
    match rec.status {
        JobStatus::Failed => None,
        JobStatus::Succeeded => Some(format!(
            "job {id} SUCCEEDED; only FAILED jobs can be retried — to install the certificate again, submit a new request (certflow submit …)"
        )),
        JobStatus::Cancelled => Some(format!(
            "job {id} was CANCELLED; only FAILED jobs can be retried — submit a new request to run it again (certflow submit …)"
        )),
        st => Some(format!(
            "job {id} is {st} at step {}, not FAILED; only FAILED jobs can be retried — follow it with `certflow jobs watch {id}` or stop it with `certflow jobs cancel {id}`",
            rec.step
        )),
    }
}

/// Progress goes with a table to stdout, and beside JSON to stderr.
pub(crate) fn sink(output: Output) -> Sink {
    match output {
        Output::Table => Sink::Stdout,
        Output::Json => Sink::Stderr,
    }
}

fn progress_line(output: Output, text: &str) {
    let text = view::one_line(text);
    match output {
        Output::Table => println!("{text}"),
        Output::Json => eprintln!("{text}"),
    }
}

/// JSON as every command prints it: indented, for people reading it as well as scripts.
pub(crate) fn pretty(v: &serde_json::Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

/// A job that must exist, with an error that says what to check when it does not.
pub(crate) async fn read(store: &Arc<dyn JobStore>, id: &JobId) -> anyhow::Result<JobRecord> {
    match store.get(id).await? {
        Some(rec) => Ok(rec),
        None => bail!(
            "job {id} not found — check the id (`certflow jobs list` shows recent jobs) and that CERTFLOW_JOBS_TABLE names the table it ran in; finished jobs are kept 30 days"
        ),
    }
}

/// Which page of a job's servers `jobs show` prints.
pub(crate) struct ShowPage {
    pub(crate) which: servers::Which,
    pub(crate) limit: usize,
    pub(crate) after: Option<String>,
}

async fn show(ctx: &Ctx<'_>, id: &JobId, p: &ShowPage) -> anyhow::Result<()> {
    let rec = read(&ctx.store, id).await?;
    let history = ctx.store.history(id).await?;
    let (kids, total_kids) = servers::children(&ctx.store, &rec, p.limit).await?;
    let page = servers::page(&ctx.store, &rec, p.which, p.after.as_deref(), p.limit).await?;
    let rollout = servers::rollout_of(&rec);
    let finished = rec.status.is_terminal();
    match ctx.output {
        Output::Json => {
            let mut v = view::job_detail_json(&rec, &history, &kids);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("Servers".into(), servers::json(&page.rows));
                obj.insert("ServersNext".into(), page.next.clone().into());
                obj.insert(
                    "Rollout".into(),
                    rollout
                        .as_ref()
                        .and_then(|r| serde_json::to_value(r).ok())
                        .unwrap_or_default(),
                );
                obj.insert("ChildCount".into(), total_kids.into());
            }
            println!("{}", pretty(&v)?);
        }
        Output::Table => {
            print!("{}", view::job_text(&rec, &history, &kids));
            if total_kids > kids.len() {
                println!(
                    "({} of {total_kids} child jobs shown, failures first)",
                    kids.len()
                );
            }
            if let Some(r) = &rollout {
                println!(
                    "\nRollout\n{}",
                    view::one_line(&servers::rollout_line(r, finished))
                );
            }
            if !page.rows.is_empty() {
                println!("\nServers ({})", p.which_name());
                let has_canary = rollout.as_ref().is_some_and(|r| r.canary > 0);
                print!("{}", servers::table(&page.rows, finished, has_canary));
            }
            if let Some(next) = &page.next {
                println!("{}", servers::next_hint(id, p.which, p.limit, next));
            }
        }
    }
    Ok(())
}

impl ShowPage {
    fn which_name(&self) -> &'static str {
        match self.which {
            servers::Which::FailedFirst => "failed first",
            servers::Which::Failed => "failed",
            servers::Which::Ok => "installed",
            servers::Which::Pending => "pending or not reached",
            servers::Which::Offline => "offline",
            servers::Which::All => "all",
            servers::Which::None => "none",
        }
    }
}

/// Follows a job to its end; exit status from how it ended.
pub(crate) async fn watch(
    ctx: &Ctx<'_>,
    id: &JobId,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let rec = follow::follow(&ctx.store, id, timeout, sink(ctx.output), "the job").await?;
    finish_output(ctx, &rec).await?;
    follow::require_success(&rec)
}

/// Failed servers and children printed when a followed job ends (`jobs show` pages the rest).
const FINISH_PAGE: usize = 20;

/// What is printed when a followed job has ended: a summary line and the install results
/// (table), or the whole job (JSON).
pub(crate) async fn finish_output(ctx: &Ctx<'_>, rec: &JobRecord) -> anyhow::Result<()> {
    let (kids, _) = servers::children(&ctx.store, rec, FINISH_PAGE).await?;
    match ctx.output {
        Output::Json => {
            let history = ctx.store.history(&rec.job_id).await?;
            println!("{}", pretty(&view::job_detail_json(rec, &history, &kids))?);
        }
        Output::Table => {
            let took = view::duration((rec.updated_at - rec.created_at).max(0) as u64);
            println!();
            println!(
                "{}",
                view::one_line(&format!(
                    "job {} {} at step {} after {took}",
                    rec.job_id, rec.status, rec.step
                ))
            );
            if let Some(t) = view::instances_table(rec) {
                print!("{t}");
            }
            if let Some(r) = servers::rollout_of(rec) {
                println!("{}", view::one_line(&servers::rollout_line(&r, true)));
                let has_canary = r.canary > 0;
                let failed =
                    servers::page(&ctx.store, rec, servers::Which::Failed, None, FINISH_PAGE)
                        .await?;
                if !failed.rows.is_empty() {
                    print!("{}", servers::table(&failed.rows, true, has_canary));
                }
            }
            if !kids.is_empty() {
                for c in &kids {
                    println!(
                        "{}",
                        view::one_line(&format!(
                            "child {} {} {} {}",
                            c.job_id, c.target, c.cert_name, c.status
                        ))
                    );
                }
            }
            println!(
                "details: certflow jobs show {}",
                view::printable(rec.job_id.as_str())
            );
        }
    }
    Ok(())
}

async fn list(ctx: &Ctx<'_>, args: &ListArgs) -> anyhow::Result<()> {
    // Saturating: `--since 1000y` means every job, not an overflow.
    let since = args.since.map(|d| {
        SystemClock
            .now()
            .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    });
    let q = paging::Query {
        statuses: statuses(&args.status, args.certificate_arn.is_some()),
        certificate_arn: args.certificate_arn.clone(),
        since,
        workflow: args.workflow.clone(),
        limit: args.limit,
    };
    let page = paging::list(&ctx.store, &q, args.cursor.as_deref()).await?;
    let next = page.next_cursor.as_deref();
    match ctx.output {
        Output::Json => println!("{}", pretty(&view::job_list_json(&page.jobs, next))?),
        Output::Table => print!(
            "{}",
            view::job_list_text(&page.jobs, next, &q.statuses, q.certificate_arn.as_deref())
        ),
    }
    Ok(())
}

/// The statuses `jobs list` reads, each once, in the order given: `all` is every status;
/// none given is the unfinished ones, or every status for one certificate's jobs.
fn statuses(asked: &[StatusFilter], by_certificate: bool) -> Vec<JobStatus> {
    let mut statuses: Vec<JobStatus> = Vec::new();
    for s in asked {
        match s {
            StatusFilter::All => statuses.extend(JobStatus::ALL),
            StatusFilter::One(st) => statuses.push(*st),
        }
    }
    if statuses.is_empty() {
        statuses = if by_certificate {
            JobStatus::ALL.to_vec()
        } else {
            JobStatus::ACTIVE.to_vec()
        };
    }
    let mut unique = Vec::new();
    for st in statuses {
        if !unique.contains(&st) {
            unique.push(st);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use engine::JobStatus::{Cancelled, Failed, Pending, Running, Succeeded, Waiting};

    use super::*;
    use crate::testing::job;

    #[test]
    fn list_reads_the_unfinished_statuses_unless_told_otherwise() {
        assert_eq!(statuses(&[], false), JobStatus::ACTIVE);
        assert_eq!(
            statuses(&[], true),
            JobStatus::ALL,
            "a certificate's jobs: all"
        );
        assert_eq!(
            statuses(&[StatusFilter::One(Failed)], true),
            [Failed],
            "--status filters a certificate's jobs too"
        );
    }

    #[test]
    fn list_reads_each_status_once_in_the_order_given() {
        let one = StatusFilter::One;
        assert_eq!(
            statuses(&[one(Failed), one(Cancelled), one(Failed)], false),
            [Failed, Cancelled]
        );
        assert_eq!(
            statuses(&[one(Failed), StatusFilter::All], false),
            [Failed, Pending, Running, Waiting, Succeeded, Cancelled]
        );
        assert_eq!(
            statuses(&[StatusFilter::All, StatusFilter::All], false),
            JobStatus::ALL
        );
    }

    #[test]
    fn only_failed_jobs_can_be_retried_and_the_refusal_says_what_to_do() {
        assert_eq!(not_retryable(&job("j-1", Failed)), None);
        let why = |status| not_retryable(&job("j-1", status)).unwrap_or_default();
        assert_eq!(
            why(Succeeded),
            "job j-1 SUCCEEDED; only FAILED jobs can be retried — to install the certificate again, submit a new request (certflow submit …)"
        );
        assert_eq!(
            why(Cancelled),
            "job j-1 was CANCELLED; only FAILED jobs can be retried — submit a new request to run it again (certflow submit …)"
        );
        for status in JobStatus::ACTIVE {
            assert_eq!(
                why(status),
                format!("job j-1 is {status} at step check, not FAILED; only FAILED jobs can be retried — follow it with `certflow jobs watch j-1` or stop it with `certflow jobs cancel j-1`")
            );
        }
    }

    #[test]
    fn progress_goes_beside_json_not_into_it() {
        assert_eq!(sink(Output::Table), Sink::Stdout);
        assert_eq!(sink(Output::Json), Sink::Stderr);
    }
}
