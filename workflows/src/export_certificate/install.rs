//! `install`: sends the install document to every server carrying the target tag, with
//! secret *names* as parameters (the servers fetch the secrets themselves). The command's
//! comment names the job: a retry first looks for the command an earlier attempt sent and
//! adopts it, so that a job sends at most one command.

use std::sync::Arc;
use std::time::Duration;

use engine::{Outcome, StepContext, StepError};

use super::{Deps, ExportState, StepResult};
use crate::ssm;

/// How long SSM lets the document run on one server.
const COMMAND_TIMEOUT_SECONDS: i32 = 600;

/// A failure on some servers must not stop the install on the others.
const MAX_ERRORS: &str = "100%";

/// How far before the job's creation a retry looks for a command it sent (clock skew).
const FIND_SLACK_MS: i64 = 60_000;

/// The comment of the job's install command: how a retry recognises it.
fn comment(ctx: &StepContext) -> String {
    format!("certflow job {}", ctx.job_id())
}

/// `install`: send the install document to the tag target, secret names only. A retry
/// first looks for the command an earlier attempt may have sent, and adopts it.
pub(super) async fn install(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
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
    let (Some(bundle), Some(pass)) = (&s.bundle_secret, &s.passphrase_secret) else {
        return Err(StepError::abort("install reached without exported secrets"));
    };
    let r = &s.request;
    let mut parameters = vec![
        ("CertName", r.cert_name.clone()),
        ("BundleSecretId", bundle.clone()),
        ("PassphraseSecretId", pass.clone()),
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
    let command = ssm::Command {
        document: &cfg.document_name,
        tag_key: &r.target_tag_key,
        tag_value: &r.target_tag_value,
        parameters,
        comment: &comment,
        timeout_seconds: COMMAND_TIMEOUT_SECONDS,
        max_errors: MAX_ERRORS,
    };
    let id = ssm::send(&deps.clients.ssm, command).await?;
    let note = format!("sent command {id} to tag {}", r.target());
    s.command_id = Some(id);
    s.command_sent_at = Some(ctx.now());
    Ok(Outcome::next_after("wait", s, Duration::from_secs(2)).with_note(note))
}
