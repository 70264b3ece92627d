//! `new-server`: a server that joins a target gets the target's certificate within
//! minutes, not at the next renewal. EC2's `EC2 Instance State-change Notification`
//! (`running`) on the events queue starts one job per event:
//!
//! 1. `agent` — waits for the instance's SSM agent to come online (polling, up to
//!    [`Deps::agent_timeout`]); an instance that never does ends the job with that reason
//!    (the next reconcile installs it once it is online).
//! 2. `match` — finds the inventory rows whose target the instance carries (each target
//!    asked once, by instance id and tag) and starts, for each, the install of the row's
//!    current certificate on that instance only
//!    ([`crate::export_certificate::install_job`]: no export, no new secret version, no
//!    other server sent anything). The id is the one a reconcile would give the same
//!    install, so the two never both run.
//! 3. `collect` — waits for those installs, and fails naming those that failed.
//!
//! EC2 events carry no tags, so an instance no row targets costs one look at the
//! inventory and one `DescribeInstanceInformation` per target, and starts nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use engine::{Outcome, StepContext, StepError, StepPolicy, Workflow};
use serde::{Deserialize, Serialize};

use crate::aws::Clients;
use crate::children::{self, Tally};
use crate::export_certificate::{self, Cause};
use crate::inventory::{self, InventoryRow};
use crate::ssm;

/// The workflow's name.
pub const NAME: &str = "new-server";

/// Default wait for a new instance's SSM agent: long enough for a boot and the agent's
/// registration, short enough that a broken image is reported the same hour.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the workflow needs.
#[derive(Debug, Clone)]
pub struct Deps {
    /// AWS clients.
    pub clients: Clients,
    /// The inventory table.
    pub inventory_table: String,
    /// How long the instance's SSM agent may take to come online.
    pub agent_timeout: Duration,
    /// Where a failure is told.
    pub notifier: crate::notify::Notifier,
}

/// State of a new-server job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewServerState {
    /// The instance.
    pub instance_id: String,
    /// The EventBridge event id.
    pub event_id: String,
    /// When EC2 sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Polls of the agent so far.
    #[serde(default)]
    pub agent_polls: u32,
    /// The agent's `PingStatus` at the last poll (`None`: not registered with SSM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<String>,
    /// How its installs went.
    #[serde(flatten)]
    pub tally: Tally,
    /// Polls of the installs so far.
    #[serde(default)]
    pub polls: u32,
}

/// A new-server job for EC2's `running` event `event_id` about `instance_id`.
pub fn new_job(
    instance_id: &str,
    event_id: &str,
    event_time: Option<String>,
) -> Result<engine::NewJob, engine::JobsError> {
    let state = NewServerState {
        instance_id: instance_id.to_string(),
        event_id: event_id.to_string(),
        event_time,
        ..NewServerState::default()
    };
    let key = format!("{instance_id}\u{1f}{event_id}");
    Ok(engine::NewJob::new(NAME, Some(&key), &state)?.label("InstanceId", instance_id))
}

async fn agent(deps: Arc<Deps>, ctx: StepContext, mut st: NewServerState) -> StepResultOf {
    let found = ssm::servers_among(
        &deps.clients.ssm,
        None,
        std::slice::from_ref(&st.instance_id),
    )
    .await?;
    let server = found.into_iter().find(|s| s.id == st.instance_id);
    if server.as_ref().is_some_and(|s| s.online) {
        let note = format!("{}'s SSM agent is online", st.instance_id);
        return Ok(Outcome::next("match", st).with_note(note));
    }
    st.ping = server.map(|s| s.ping);
    let waited = Duration::from_millis((ctx.now() - ctx.created_at()).max(0) as u64);
    if waited >= deps.agent_timeout {
        let seen = match &st.ping {
            Some(p) => format!("its agent's last status is {p}"),
            None => "it is not registered with SSM (no agent, no instance profile allowing SSM, or no route to SSM)".to_string(),
        };
        return Err(StepError::abort(format!(
            "{}'s SSM agent did not come online within {}s: {seen}; nothing was installed. Once it is online, `certflow reconcile` installs its certificates",
            st.instance_id,
            deps.agent_timeout.as_secs()
        )));
    }
    let delay =
        Duration::from_secs(5u64 * 2u64.pow(st.agent_polls.min(3))).min(Duration::from_secs(30));
    st.agent_polls += 1;
    let note = format!(
        "waiting for {}'s SSM agent ({})",
        st.instance_id,
        st.ping.as_deref().unwrap_or("not registered yet")
    );
    Ok(Outcome::poll(st, delay).with_note(note))
}

async fn matching(deps: Arc<Deps>, ctx: StepContext, mut st: NewServerState) -> StepResultOf {
    let rows = all_rows(&deps).await?;
    let targets: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.target_tag_key.clone(), r.target_tag_value.clone()))
        .collect();
    let id = std::slice::from_ref(&st.instance_id);
    let mut carried = BTreeSet::new();
    for (key, value) in targets {
        let found = ssm::servers_among(&deps.clients.ssm, Some((&key, &value)), id).await?;
        if !found.is_empty() {
            carried.insert((key, value));
        }
    }
    let mut started = Vec::new();
    let mut skipped = Vec::new();
    for row in rows
        .iter()
        .filter(|r| carried.contains(&(r.target_tag_key.clone(), r.target_tag_value.clone())))
    {
        let Some(serial) = &row.serial else {
            skipped.push(format!(
                "{} {} (never exported: the next reconcile exports it)",
                row.target(),
                row.cert_name
            ));
            continue;
        };
        let new = export_certificate::install_job(
            row,
            serial,
            id,
            Cause::NewServer,
            ctx.job_id().as_str(),
        )
        .map_err(|e| StepError::abort(e.to_string()))?;
        let (child, _, _) = children::start(&ctx, new, row.target(), row.cert_name.clone()).await?;
        started.push(child);
    }
    let entries: Vec<engine::Entry> = started.iter().map(|c| c.entry()).collect();
    ctx.put_entries(children::CHILDREN, &entries).await?;
    st.tally.started = started.len() as u32;
    let mut note = if started.is_empty() {
        format!(
            "{} carries no tag an inventory row targets: nothing to install",
            st.instance_id
        )
    } else {
        format!(
            "installing {} certificate(s) on {}: {}",
            started.len(),
            st.instance_id,
            started
                .iter()
                .map(|c| format!("{} for {} ({})", c.cert_name, c.target, c.job_id))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if !skipped.is_empty() {
        note.push_str(&format!("; not installed: {}", skipped.join(", ")));
    }
    if started.is_empty() {
        return Ok(Outcome::succeed(st).with_note(note));
    }
    Ok(Outcome::next_after("collect", st, Duration::from_secs(5)).with_note(note))
}

/// Every row of the inventory (a new server may carry any target).
async fn all_rows(deps: &Deps) -> Result<Vec<InventoryRow>, StepError> {
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let (page, next) =
            inventory::scan_page(&deps.clients.dynamodb, &deps.inventory_table, start, 100).await?;
        rows.extend(page.into_iter().filter_map(Result::ok));
        match next {
            Some(n) => start = Some(n),
            None => return Ok(rows),
        }
    }
}

async fn collect(_deps: Arc<Deps>, ctx: StepContext, mut st: NewServerState) -> StepResultOf {
    let running = children::poll(&ctx).await?;
    if running > 0 {
        let delay = children::poll_delay(st.polls);
        st.polls += 1;
        let note = format!("{running} of {} install(s) running", st.tally.started);
        return Ok(Outcome::poll(st, delay).with_note(note));
    }
    st.tally = children::tally(&ctx).await?;
    let note = st.tally.summary("install(s)");
    if st.tally.unsuccessful > 0 {
        let reason = format!("on {}: {note}", st.instance_id);
        return Ok(Outcome::fail(st, reason));
    }
    Ok(Outcome::succeed(st).with_note(note))
}

type StepResultOf = Result<Outcome<NewServerState>, StepError>;

/// The workflow.
pub fn workflow(deps: Deps) -> Workflow<NewServerState> {
    let deps = Arc::new(deps);
    let policy = StepPolicy::default()
        .max_attempts(8)
        .timeout(Duration::from_secs(60))
        .backoff(Duration::from_secs(1), Duration::from_secs(60));
    let d = deps.clone();
    let wf = Workflow::new(NAME)
        .deadline(deps.agent_timeout + Duration::from_secs(2 * 3600))
        .step_with("agent", policy, move |ctx, st| agent(d.clone(), ctx, st));
    let d = deps.clone();
    let wf = wf.step_with("match", policy, move |ctx, st| matching(d.clone(), ctx, st));
    let notifier = deps.notifier.clone();
    let d = deps;
    wf.step_with("collect", policy, move |ctx, st| {
        collect(d.clone(), ctx, st)
    })
    // An instance that never came online, or an inventory that could not be read, is
    // told here; an install that failed has told its own failure.
    .on_end(move |ended, _: NewServerState| {
        let notifier = notifier.clone();
        async move {
            if ended.status != engine::JobStatus::Failed || ended.step == "collect" {
                return;
            }
            let notice = crate::outcomes::job_failed(&ended, None, None, None);
            crate::outcomes::publish(&notifier, ended.job_id.as_str(), &[notice]).await;
        }
    })
}
