//! `demo`: a small workflow that exercises every engine feature without touching a
//! certificate — fused steps, a durable timer, polling, and a step that fails before it
//! succeeds. `certflow demo` runs it so a newcomer can watch the engine work.

use std::time::Duration;

use engine::{Outcome, StepContext, StepError, StepPolicy, Workflow};
use serde::{Deserialize, Serialize};

/// The workflow's name.
pub const NAME: &str = "demo";

/// State of a demo job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoState {
    /// A label for the job, echoed in its history.
    pub label: String,
    /// How many times `poll` runs again before moving on.
    pub polls: u32,
    /// How many attempts of `flaky` fail (retryable) before one succeeds.
    pub failures: u32,
    /// Whether `finish` fails the job instead of succeeding.
    pub fail: bool,
}

async fn prepare(_ctx: StepContext, state: DemoState) -> Result<Outcome<DemoState>, StepError> {
    let note = format!("prepared {}", state.label);
    Ok(Outcome::next("poll", state).with_note(note))
}

async fn poll(_ctx: StepContext, mut state: DemoState) -> Result<Outcome<DemoState>, StepError> {
    if state.polls > 0 {
        state.polls -= 1;
        return Ok(Outcome::poll(state, Duration::from_secs(1)).with_note("not ready yet"));
    }
    Ok(Outcome::next("flaky", state))
}

async fn flaky(ctx: StepContext, state: DemoState) -> Result<Outcome<DemoState>, StepError> {
    if ctx.attempt() <= state.failures {
        return Err(StepError::retry(format!(
            "simulated transient failure on attempt {}",
            ctx.attempt()
        )));
    }
    Ok(Outcome::next("finish", state))
}

async fn finish(_ctx: StepContext, state: DemoState) -> Result<Outcome<DemoState>, StepError> {
    if state.fail {
        return Err(StepError::abort(format!(
            "{} was asked to fail",
            state.label
        )));
    }
    Ok(Outcome::succeed(state).with_note("done"))
}

/// The demo workflow.
pub fn workflow() -> Workflow<DemoState> {
    let quick = StepPolicy::default()
        .timeout(Duration::from_secs(10))
        .backoff(Duration::from_millis(500), Duration::from_secs(5));
    Workflow::new(NAME)
        .deadline(Duration::from_secs(600))
        .step_with("prepare", quick, prepare)
        .step_with("poll", quick, poll)
        .step_with("flaky", quick, flaky)
        .step_with("finish", quick, finish)
}
