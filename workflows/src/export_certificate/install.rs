//! `install`: sends the install document to every server carrying the target tag, with the
//! secret's *name* as parameter (the servers fetch the secret themselves). The command is
//! pinned to the document's SHA-256 hash, and sent with `MaxErrors` and `MaxConcurrency`
//! from the settings (default: stop at the first failed server, a tenth of the servers at
//! a time). The command's comment names the job: a retry first looks for the command an
//! earlier attempt sent and adopts it, so that a job sends at most one command.

use std::sync::Arc;
use std::time::Duration;

use engine::{Outcome, StepContext};

use super::{Deps, ExportState, StepResult};
use crate::ssm::{self, DocumentHashes};

/// How long SSM lets the document run on one server.
const COMMAND_TIMEOUT_SECONDS: i32 = 600;

/// How far before the job's creation a retry looks for a command it sent (clock skew).
const FIND_SLACK_MS: i64 = 60_000;

/// The comment of the job's install command: how a retry recognises it.
fn comment(ctx: &StepContext) -> String {
    format!("certflow job {}", ctx.job_id())
}

/// `install`: send the install document to the tag target, secret names only. A retry
/// first looks for the command an earlier attempt may have sent, and adopts it.
pub(super) async fn install(
    deps: Arc<Deps>,
    hashes: Arc<DocumentHashes>,
    ctx: StepContext,
    mut s: ExportState,
) -> StepResult {
    if s.command_id.is_some() {
        return Ok(Outcome::next("wait", s));
    }
    let comment = comment(&ctx);
    let cfg = &deps.config;
    if ctx.attempt() > 1 {
        let since = ctx.created_at() - FIND_SLACK_MS;
        if let Some(found) =
            ssm::find(&deps.clients.ssm, &cfg.document_name, since, &comment).await?
        {
            s.command_id = Some(found.clone());
            s.command_sent_at = Some(ctx.now());
            return Ok(
                Outcome::next_after("wait", s, Duration::from_secs(2)).with_note(format!(
                    "adopted command {found} sent by an earlier attempt"
                )),
            );
        }
    }
    let Some(secret) = &s.secret else {
        // A job exported before one secret held passphrase and bundle (its state names the
        // two old secrets): export again, into the target's secret, then install that.
        return Ok(Outcome::next("export", s)
            .with_note("re-exporting into the one-secret-per-target layout"));
    };
    let r = &s.request;
    let mut parameters = vec![
        ("CertName", r.cert_name.clone()),
        ("SecretId", secret.clone()),
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
    let hash = hashes.get(&deps.clients.ssm, &cfg.document_name).await?;
    let command = ssm::Command {
        document: &cfg.document_name,
        tag_key: &r.target_tag_key,
        tag_value: &r.target_tag_value,
        parameters,
        comment: &comment,
        timeout_seconds: COMMAND_TIMEOUT_SECONDS,
        max_errors: &cfg.install_max_errors,
        max_concurrency: &cfg.install_max_concurrency,
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
    let note = format!(
        "sent command {id} to tag {} (document hash {}, MaxConcurrency {}, MaxErrors {})",
        r.target(),
        hash.get(..12).unwrap_or(&hash),
        cfg.install_max_concurrency,
        cfg.install_max_errors
    );
    s.command_id = Some(id);
    s.command_sent_at = Some(ctx.now());
    Ok(Outcome::next_after("wait", s, Duration::from_secs(2)).with_note(note))
}
