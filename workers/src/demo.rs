//! `certflow demo`: pushes a few demo jobs through a running worker and prints how each
//! ended, with its history.

use std::time::Duration;

use anyhow::bail;
use engine::{JobId, Jobs, NewJob};
use workflows::demo::{DemoState, NAME};

use crate::cli::DemoArgs;
use crate::view;

/// How often the demo reads its jobs while waiting for them to finish.
const POLL: Duration = Duration::from_millis(250);

/// Creates `args.jobs` demo jobs, waits for them to finish and prints each one.
pub(crate) async fn run(jobs: &Jobs, args: &DemoArgs) -> anyhow::Result<()> {
    let mut ids: Vec<JobId> = Vec::new();
    for i in 0..args.jobs {
        let state = DemoState {
            label: format!("demo-{}", i + 1),
            polls: (i % 3) as u32,
            failures: u32::from(i % 2 == 0),
            // The last of several jobs fails, to show what a failure looks like.
            fail: args.jobs > 1 && i + 1 == args.jobs,
        };
        let created = jobs.create(NewJob::new(NAME, None, &state)?).await?;
        println!("submitted {} ({})", created.record.job_id, state.label);
        ids.push(created.record.job_id);
    }
    let give_up = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut finished = vec![false; ids.len()];
    while finished.iter().any(|f| !f) {
        if tokio::time::Instant::now() > give_up {
            bail!(
                "demo jobs still running after {} s — is `certflow worker` running against the same endpoint?",
                args.timeout_secs
            );
        }
        tokio::time::sleep(POLL).await;
        for (id, done) in ids.iter().zip(finished.iter_mut()) {
            if !*done && jobs.get(id).await?.status.is_terminal() {
                *done = true;
            }
        }
    }
    for id in &ids {
        let rec = jobs.get(id).await?;
        let history = jobs.history(id).await?;
        println!("\n{}", view::job_text(&rec, &history, &[]));
    }
    Ok(())
}
