//! `install`: plans the staged rollout once (the servers carrying the target tag, resolved
//! by the worker, in id order, canary first; see [`super::rollout`]), then sends the
//! install document to the current batch, by instance id, with the secret's *name* as
//! parameter (the servers fetch the secret themselves). The command is pinned to the
//! document's SHA-256 hash. Its comment names the job and the batch: a retry first looks
//! for the command an earlier attempt sent and adopts it, so that a batch is sent at most
//! one command.

use std::sync::Arc;
use std::time::Duration;

use engine::{Groups, Outcome, StepContext, StepError};

use super::rollout::{self, ServerResult, PENDING, SERVERS};
use super::{Deps, ExportState, StepResult};
use crate::ssm::{self, DocumentHashes};

/// How long SSM lets the document run on one server.
const COMMAND_TIMEOUT_SECONDS: i32 = 600;

/// How far before the job's creation a retry looks for a command it sent (clock skew).
const FIND_SLACK_MS: i64 = 60_000;

/// How long after a send the first look at the batch comes.
pub(super) const FIRST_LOOK: Duration = Duration::from_secs(2);

/// The comment of the install command of batch `batch`: how a retry recognises it.
fn comment(ctx: &StepContext, batch: u32) -> String {
    format!("certflow job {} batch {batch}", ctx.job_id())
}

/// `install`: plan the rollout if it is not planned yet, then send the current batch.
pub(super) async fn install(
    deps: Arc<Deps>,
    hashes: Arc<DocumentHashes>,
    ctx: StepContext,
    mut s: ExportState,
) -> StepResult {
    if s.command_id.is_some() {
        return Ok(Outcome::next("wait", s));
    }
    let Some(secret) = s.secret.clone() else {
        // A job exported before one secret held passphrase and bundle (its state names the
        // two old secrets): export again, into the target's secret, then install that.
        return Ok(Outcome::next("export", s)
            .with_note("re-exporting into the one-secret-per-target layout"));
    };
    let cfg = &deps.config;
    let mut notes = Vec::new();
    // The canary's members, when the plan is made in this run (no need to read them back).
    let mut planned_first: Option<Vec<String>> = None;
    if s.rollout.is_none() {
        let (note, first) = plan(&deps, &ctx, &mut s).await?;
        notes.push(note);
        planned_first = Some(first);
    }
    let Some(r) = s.rollout.as_mut() else {
        return Err(StepError::abort("install: no rollout after planning"));
    };
    let batch = r.batch;
    let comment = comment(&ctx, batch);
    if !ctx.first_run() {
        let since = ctx.created_at() - FIND_SLACK_MS;
        if let Some(found) =
            ssm::find(&deps.clients.ssm, &cfg.document_name, since, &comment).await?
        {
            let members = batch_members(&ctx, r, batch).await?;
            r.batch_servers = members.len() as u32;
            s.command_id = Some(found.clone());
            s.command_sent_at = Some(ctx.now());
            return Ok(
                Outcome::next_after("wait", s, FIRST_LOOK).with_note(format!(
                    "adopted command {found} sent by an earlier attempt"
                )),
            );
        }
    }
    let members = match planned_first {
        Some(first) => first,
        None => batch_members(&ctx, r, batch).await?,
    };
    r.batch_servers = members.len() as u32;
    if members.is_empty() {
        // Nothing left to send in this batch (its servers are all done): let `wait` move on.
        s.wait_polls = 0;
        return Ok(Outcome::next("wait", s));
    }
    let batch_name = r.batch_name(batch);
    let budget = r.max_errors.saturating_sub(r.failed);
    let req = &s.request;
    let mut parameters = vec![
        ("CertName", req.cert_name.clone()),
        ("SecretId", secret),
        ("Region", cfg.region.clone()),
    ];
    for (name, v) in [
        ("CertDir", &cfg.cert_dir),
        ("KeyDir", &cfg.key_dir),
        ("ReloadService", &cfg.reload_service),
    ] {
        if let Some(v) = v {
            parameters.push((name, v.clone()));
        }
    }
    if let Some(port) = cfg.verify_port {
        parameters.push(("VerifyPort", port.to_string()));
        if let Some(name) = s.verify_name(cfg) {
            parameters.push(("VerifyName", name));
        }
    }
    let pinned = hashes.get(&deps.clients.ssm, &cfg.document_name).await?;
    if pinned.names_job {
        // SSM's command status event carries it: the event wakes this job's `wait`.
        parameters.push((ssm::JOB_PARAMETER, ctx.job_id().to_string()));
    }
    let hash = pinned.hash;
    let command = ssm::Command {
        document: &cfg.document_name,
        instance_ids: &members,
        parameters,
        comment: &comment,
        timeout_seconds: COMMAND_TIMEOUT_SECONDS,
        max_errors: budget.to_string(),
        document_hash: &hash,
    };
    let id = match ssm::send(&deps.clients.ssm, command).await {
        Ok(id) => id,
        Err(e) => {
            // Perhaps the document changed since its hash was cached: describe it again.
            hashes.forget();
            return Err(e);
        }
    };
    notes.push(format!(
        "sent command {id} to {batch_name}: {} server(s), {} (document hash {})",
        members.len(),
        shown(&members),
        hash.get(..12).unwrap_or(&hash),
    ));
    s.command_id = Some(id);
    s.command_sent_at = Some(ctx.now());
    s.wait_polls = 0;
    Ok(Outcome::next_after("wait", s, FIRST_LOOK).with_note(notes.join("; ")))
}

/// Resolves the servers carrying the target tag and writes the plan: one entry per server.
/// Returns a note, and the members of the first batch.
async fn plan(
    deps: &Deps,
    ctx: &StepContext,
    s: &mut ExportState,
) -> Result<(String, Vec<String>), StepError> {
    let req = &s.request;
    let mut notes = Vec::new();
    let servers = match &s.install_only {
        None => {
            ssm::servers(
                &deps.clients.ssm,
                &req.target_tag_key,
                &req.target_tag_value,
            )
            .await?
        }
        // Only the servers asked for, and only those that still carry the target: the
        // target is what the certificate's owner allowed.
        Some(only) => {
            let found = ssm::servers_among(
                &deps.clients.ssm,
                Some((&req.target_tag_key, &req.target_tag_value)),
                &only.servers,
            )
            .await?;
            let gone: Vec<String> = only
                .servers
                .iter()
                .filter(|id| !found.iter().any(|f| &f.id == *id))
                .cloned()
                .collect();
            if !gone.is_empty() {
                notes.push(format!(
                    "{} server(s) asked for do not carry {} (or are not managed by SSM) and are skipped: {}",
                    gone.len(),
                    req.target(),
                    shown(&gone)
                ));
            }
            if found.is_empty() {
                return Err(StepError::abort(format!(
                    "install only: none of the {} server(s) asked for carries tag {} and is managed by SSM: {}",
                    only.servers.len(),
                    req.target(),
                    shown(&only.servers)
                )));
            }
            found
        }
    };
    if servers.is_empty() {
        return Err(StepError::abort(format!(
            "no managed instance matches tag {} (SSM DescribeInstanceInformation lists none carrying it)",
            req.target()
        )));
    }
    let staging = s.staging(&deps.config);
    let (rollout, entries) = rollout::plan(&servers, &staging, ctx.now());
    if rollout.servers == 0 {
        let down: Vec<String> = servers
            .iter()
            .map(|x| format!("{} {}", x.id, x.ping))
            .collect();
        return Err(StepError::abort(format!(
            "none of the {} managed instance(s) carrying tag {} is online: {}",
            servers.len(),
            req.target(),
            shown(&down)
        )));
    }
    // A plan made again (an attempt that died before its commit) gets a plan id of its
    // own: entries of the first plan that this one does not overwrite (a server that left
    // the tag meanwhile) belong to no batch of it.
    ctx.put_entries(SERVERS, &entries).await?;
    let first: Vec<String> = entries
        .iter()
        .filter(|e| e.group == PENDING && ServerResult::of(e).batch == 0)
        .map(|e| e.key.clone())
        .collect();
    notes.insert(0, format!(
        "planned {} server(s) carrying {}: canary {}, then {} batch(es) of up to {}, MaxErrors {}{}",
        rollout.servers,
        req.target(),
        rollout.canary,
        rollout.batches - u32::from(rollout.canary > 0),
        rollout.batch_size,
        rollout.max_errors,
        if rollout.offline > 0 {
            format!("; {} offline, not sent", rollout.offline)
        } else {
            String::new()
        }
    ));
    let mut rollout = rollout;
    if s.install_only.is_some() {
        // The servers asked for, and no others: no late joiners.
        rollout.sweeps = rollout::MAX_SWEEPS;
    }
    s.rollout = Some(rollout);
    Ok((notes.join("; "), first))
}

/// The servers of batch `batch` that have not finished.
async fn batch_members(
    ctx: &StepContext,
    r: &rollout::Rollout,
    batch: u32,
) -> Result<Vec<String>, StepError> {
    Ok(ctx
        .entries(SERVERS, &Groups::Only(vec![PENDING.to_string()]))
        .await?
        .iter()
        .filter(|e| r.in_batch(&ServerResult::of(e), batch))
        .map(|e| e.key.clone())
        .collect())
}

/// The first few of `items`, and how many more.
pub(super) fn shown(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}
