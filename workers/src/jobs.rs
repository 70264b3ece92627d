//! `certflow jobs …`: what operators use to inspect and steer jobs.

use std::sync::Arc;

use anyhow::bail;
use engine::{Clock, JobId, JobRecord, JobStatus, JobStore, Jobs, SystemClock};

use crate::cli::{Global, JobsCommand, ListArgs, Output, StatusFilter};
use crate::follow::{self, Sink};
use crate::paging;
use crate::view::{self, ChildView};

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
        JobsCommand::Show { job_id } => show(ctx, &JobId::new(job_id)).await,
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

/// A renewal's children with their current status.
pub(crate) async fn children(
    store: &Arc<dyn JobStore>,
    rec: &JobRecord,
) -> anyhow::Result<Vec<ChildView>> {
    let mut out = Vec::new();
    for c in view::children_of(rec) {
        let now = store.get(&JobId::new(c.job_id.clone())).await?;
        out.push(ChildView {
            job_id: c.job_id,
            target: c.target,
            cert_name: c.cert_name,
            status: now
                .as_ref()
                .map_or_else(|| "NOT FOUND".to_string(), |r| r.status.to_string()),
            step: now.as_ref().map(|r| r.step.clone()),
            last_error: now.and_then(|r| r.last_error),
        });
    }
    Ok(out)
}

async fn show(ctx: &Ctx<'_>, id: &JobId) -> anyhow::Result<()> {
    let rec = read(&ctx.store, id).await?;
    let history = ctx.store.history(id).await?;
    let kids = children(&ctx.store, &rec).await?;
    match ctx.output {
        Output::Json => println!("{}", pretty(&view::job_detail_json(&rec, &history, &kids))?),
        Output::Table => print!("{}", view::job_text(&rec, &history, &kids)),
    }
    Ok(())
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

/// What is printed when a followed job has ended: a summary line and the install results
/// (table), or the whole job (JSON).
pub(crate) async fn finish_output(ctx: &Ctx<'_>, rec: &JobRecord) -> anyhow::Result<()> {
    let kids = children(&ctx.store, rec).await?;
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
    let since = args.since.map(|d| SystemClock.now() - d.as_millis() as i64);
    let q = paging::Query {
        statuses: statuses(&args.status, args.certificate_arn.is_some()),
        certificate_arn: args.certificate_arn.clone(),
        since,
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
