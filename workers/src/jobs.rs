//! `certflow jobs …`: what operators use to inspect and steer jobs.

use anyhow::{bail, Context};
use engine::{JobId, JobStatus, Jobs};

use crate::cli::{JobsCommand, Output};
use crate::view;

pub(crate) async fn run(jobs: &Jobs, cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Show { job_id, output } => {
            let id = JobId::new(job_id);
            let rec = jobs.get(&id).await?;
            let history = jobs.history(&id).await?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&view::job_json(&rec, Some(&history)))?
                ),
                Output::Table => print!("{}", view::job_text(&rec, &history)),
            }
        }
        JobsCommand::List {
            status,
            limit,
            output,
        } => {
            let statuses = match status {
                Some(s) => vec![JobStatus::parse(&s).with_context(|| {
                    format!("unknown status {s:?}: use PENDING, RUNNING, WAITING, SUCCEEDED, FAILED or CANCELLED")
                })?],
                None => JobStatus::ACTIVE.to_vec(),
            };
            let mut found = Vec::new();
            for st in statuses {
                let mut cursor = None;
                loop {
                    let page = jobs.list(st, limit, cursor).await?;
                    found.extend(page.jobs);
                    cursor = page.cursor;
                    if cursor.is_none() || found.len() >= limit {
                        break;
                    }
                }
            }
            found.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
            found.truncate(limit);
            match output {
                Output::Json => {
                    let all: Vec<_> = found.iter().map(|r| view::job_json(r, None)).collect();
                    println!("{}", serde_json::to_string_pretty(&all)?);
                }
                Output::Table => print!("{}", view::jobs_table(&found)),
            }
        }
        JobsCommand::Cancel { job_id } => {
            let rec = jobs.cancel(&JobId::new(job_id)).await?;
            println!(
                "cancel requested for {} ({} at step {}); it stops at its next step boundary",
                rec.job_id, rec.status, rec.step
            );
        }
        JobsCommand::Retry { job_id } => {
            let rec = jobs.retry(&JobId::new(job_id)).await?;
            if rec.status != JobStatus::Running {
                bail!("job {} did not restart", rec.job_id);
            }
            println!("job {} restarted at step {}", rec.job_id, rec.step);
        }
    }
    Ok(())
}
