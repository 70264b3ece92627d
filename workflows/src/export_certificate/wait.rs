//! `wait`, after each batch's send: reads how the batch went on each server
//! (`ListCommandInvocations`, every page) until all have answered, and writes each
//! server's result (with the serial it installed and, when verification is on, the serial
//! it serves) as an entry beside the record. Then, by [`super::rollout`]'s rules: the job
//! fails when more servers failed than `MaxErrors` allows, naming them; else the next
//! batch is sent; after the last one, servers that joined the tag meanwhile get one more
//! batch; and the outcome goes on the inventory row. A batch not done within the install
//! timeout is cancelled and fails the job, and so does a cancel or the deadline during
//! this step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use engine::clock::rfc3339;
use engine::{Groups, Outcome, StepContext, StepError, StopReason};

use super::install::shown;
use super::rollout::{Rollout, ServerResult, FAILED, MAX_SWEEPS, OFFLINE, SERVERS};
use super::{Deps, ExportState, StepResult};
use crate::inventory::{self, InstallEnd, Recorded};
use crate::ssm::{self, InstanceStatus, Invocation};

/// The line the install document prints with the serial it installed.
const SERIAL_MARKER: &str = "CERTFLOW_INSTALLED_SERIAL=";

/// The line the install document prints with the serial the server serves (verification).
const SERVED_MARKER: &str = "CERTFLOW_SERVED_SERIAL=";

/// How long a command may report fewer invocations than servers before the missing ones
/// count as lost (SSM lists invocations a little after the send).
const LISTING_GRACE: Duration = Duration::from_secs(120);

/// `wait`: the current batch's results, then the next batch or the end.
pub(super) async fn wait(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    let mut r = match s.rollout.clone() {
        Some(r) => r,
        None => legacy_rollout(&deps, &s).await?,
    };
    if r.ended {
        return resume(&ctx, s, r).await;
    }
    let client = &deps.clients.ssm;
    // The servers of this batch that installed, for the row's fleet state.
    let mut installed = Vec::new();
    if let Some(command_id) = s.command_id.clone() {
        let sent_at = s.command_sent_at.unwrap_or(ctx.now());
        let elapsed = Duration::from_millis((ctx.now() - sent_at).max(0) as u64);
        let invocations = ssm::invocations(client, &command_id).await?;
        let finished = invocations
            .iter()
            .filter(|(_, inv)| inv.status.is_final())
            .count();
        let expected = (r.batch_servers as usize).max(1);
        if finished < expected {
            if elapsed >= deps.config.install_timeout {
                return timed_out(&deps, &ctx, s, r, &command_id, invocations).await;
            }
            if invocations.is_empty() && r.batch_servers == 0 && elapsed > LISTING_GRACE {
                return Err(StepError::abort(format!(
                    "no managed instance matches tag {}",
                    s.request.target()
                )));
            }
            // 2 s growing by half each time, up to the configured ceiling: SSM's command
            // status event usually wakes this step first.
            let delay =
                Duration::from_millis((2_000.0 * 1.5f64.powi(s.wait_polls.min(20) as i32)) as u64)
                    .min(deps.config.wait_poll_max);
            s.wait_polls += 1;
            return Ok(Outcome::poll(s, delay));
        }
        let mut entries = Vec::with_capacity(invocations.len());
        for (id, inv) in invocations {
            let result = result(&r, &command_id, inv);
            r.count(&id, &result);
            if result.status == Some(InstanceStatus::Success) {
                installed.push(id.clone());
            }
            entries.push(result.entry(&id));
        }
        ctx.put_entries(SERVERS, &entries).await?;
        s.command_id = None;
        s.command_sent_at = None;
        s.wait_polls = 0;
    }
    let batch_name = r.batch_name(r.batch);
    if r.stopped() {
        let why = if r.canary_failed() {
            "the canary must succeed".to_string()
        } else {
            format!("MaxErrors {}", r.max_errors)
        };
        let reason = format!(
            "rollout stopped at {batch_name}: {} server(s) failed, {why}: {}; {} server(s) not reached keep their certificate",
            r.failed,
            r.first_failures.join("; "),
            r.not_reached()
        );
        r.ended = true;
        s.rollout = Some(r);
        // The job fails either way; the row only says so when the table lets it.
        let _ = set_row(&deps, &ctx, &s, &installed, Some(InstallEnd::Failed)).await;
        return Ok(Outcome::fail(s, reason));
    }
    let recorded = if installed.is_empty() || r.is_last_batch() {
        None
    } else {
        set_row(&deps, &ctx, &s, &installed, None).await?
    };
    if !r.is_last_batch() {
        let mut note = format!(
            "{batch_name} done: {} of {} server(s) installed so far",
            r.succeeded, r.servers
        );
        note.extend(recorded);
        r.batch += 1;
        s.rollout = Some(r);
        return Ok(Outcome::next("install", s).with_note(note));
    }
    // (A job from before staged rollouts starts with its sweeps spent: it targeted the tag.)
    if r.sweeps < MAX_SWEEPS {
        r.sweeps += 1;
        let joined = late_joiners(&deps, &ctx, &s, &mut r).await?;
        if !joined.is_empty() {
            if !installed.is_empty() {
                set_row(&deps, &ctx, &s, &installed, None).await?;
            }
            let ids: Vec<String> = joined.iter().map(|j| j.id.clone()).collect();
            let entries = r.add_late(&joined);
            ctx.put_entries(SERVERS, &entries).await?;
            let note = format!(
                "{} server(s) joined {} during the rollout: {}; sending them batch {}",
                ids.len(),
                s.request.target(),
                shown(&ids),
                r.batches
            );
            r.batch += 1;
            s.rollout = Some(r);
            return Ok(Outcome::next("install", s).with_note(note));
        }
    }
    if r.failed > 0 {
        // Tolerated failures let the rollout go on; they still fail the job, since those
        // servers do not run the new certificate.
        let reason = format!(
            "installed on {} of {} server(s); {} failed, within MaxErrors {} so the rollout went on: {}",
            r.succeeded,
            r.servers,
            r.failed,
            r.max_errors,
            r.first_failures.join("; ")
        );
        r.ended = true;
        s.rollout = Some(r);
        let _ = set_row(&deps, &ctx, &s, &installed, Some(InstallEnd::Failed)).await;
        return Ok(Outcome::fail(s, reason));
    }
    let date = rfc3339(ctx.now());
    let end = if s.install_only.is_some() {
        InstallEnd::Added { date }
    } else {
        InstallEnd::Installed {
            date,
            instances: u64::from(r.succeeded),
            verified: u64::from(r.verified),
        }
    };
    let recorded = set_row(&deps, &ctx, &s, &installed, Some(end)).await?;
    let mut note = format!(
        "installed on {} server(s) in {} batch(es)",
        r.succeeded, r.batches
    );
    note.extend(recorded);
    if deps.config.verify_port.is_some() {
        note.push_str(&format!("; {} verified serving the new serial", r.verified));
    }
    if r.offline > 0 {
        note.push_str(&format!(
            "; {} server(s) offline when planned were not sent the install (`certflow jobs show {} --servers offline`)",
            r.offline,
            ctx.job_id()
        ));
    }
    s.rollout = Some(r);
    Ok(Outcome::succeed(s).with_note(note))
}

/// The servers carrying the tag now that are online and not in the plan (or were
/// offline when planned); the plan's offline count is brought up to date.
async fn late_joiners(
    deps: &Deps,
    ctx: &StepContext,
    s: &ExportState,
    r: &mut Rollout,
) -> Result<Vec<ssm::ManagedServer>, StepError> {
    let req = &s.request;
    let now = ssm::servers(
        &deps.clients.ssm,
        &req.target_tag_key,
        &req.target_tag_value,
    )
    .await?;
    let known: HashMap<String, String> = match &r.known {
        Some(k) => k
            .online
            .iter()
            .map(|id| (id.clone(), "planned".to_string()))
            .chain(k.offline.iter().map(|id| (id.clone(), OFFLINE.to_string())))
            .collect(),
        None => ctx
            .entries(SERVERS, &Groups::All)
            .await?
            .into_iter()
            .map(|e| (e.key, e.group))
            .collect(),
    };
    let joined: Vec<ssm::ManagedServer> = now
        .into_iter()
        .filter(|x| x.online && known.get(&x.id).is_none_or(|g| g == OFFLINE))
        .collect();
    let back_online = joined.iter().filter(|j| known.contains_key(&j.id)).count() as u32;
    r.offline = r.offline.saturating_sub(back_online);
    Ok(joined)
}

/// The batch did not finish in time: cancel it, record what is known, fail naming the
/// servers still running.
async fn timed_out(
    deps: &Deps,
    ctx: &StepContext,
    mut s: ExportState,
    mut r: Rollout,
    command_id: &str,
    invocations: Vec<(String, Invocation)>,
) -> StepResult {
    let note = ssm::cancel(&deps.clients.ssm, command_id).await;
    let mut pending = Vec::new();
    let mut installed = Vec::new();
    let mut entries = Vec::new();
    for (id, inv) in invocations {
        if !inv.status.is_final() {
            pending.push(format!("{id} {}", inv.status));
        }
        let result = result(&r, command_id, inv);
        r.count(&id, &result);
        if result.status == Some(InstanceStatus::Success) {
            installed.push(id.clone());
        }
        entries.push(result.entry(&id));
    }
    // The job fails either way; the entries only help the operator.
    let _ = ctx.put_entries(SERVERS, &entries).await;
    let reason = format!(
        "install did not finish within {}s ({}); {note}",
        deps.config.install_timeout.as_secs(),
        if pending.is_empty() {
            "no instance reported".to_string()
        } else {
            shown(&pending)
        }
    );
    // A retry resumes from here: the cancelled command is done with.
    r.ended = true;
    s.rollout = Some(r);
    s.command_id = None;
    s.command_sent_at = None;
    let _ = set_row(deps, ctx, &s, &installed, Some(InstallEnd::Failed)).await;
    Ok(Outcome::fail(s, reason))
}

/// An operator's retry of a job whose rollout failed: the failed servers go back into
/// the current batch, and the rollout goes on from there (`install` sends the batch's
/// pending servers: those, and any a timed-out batch left running).
async fn resume(ctx: &StepContext, mut s: ExportState, mut r: Rollout) -> StepResult {
    let failed = ctx
        .entries(SERVERS, &Groups::Only(vec![FAILED.to_string()]))
        .await?;
    let again: Vec<engine::Entry> = failed
        .iter()
        .map(|e| {
            let before = ServerResult::of(e);
            ServerResult {
                batch: r.batch,
                plan: Some(r.plan),
                ping: before.ping,
                ..ServerResult::default()
            }
            .entry(&e.key)
        })
        .collect();
    ctx.put_entries(SERVERS, &again).await?;
    let n = r.resume(again.len() as u32);
    let note = format!(
        "retry: the rollout resumes at {}, sending the install again to {n} failed server(s)",
        r.batch_name(r.batch)
    );
    s.command_id = None;
    s.command_sent_at = None;
    s.wait_polls = 0;
    s.rollout = Some(r);
    Ok(Outcome::next("install", s).with_note(note))
}

/// A job from before staged rollouts, waiting on a command sent to the whole tag: one
/// batch of as many servers as SSM says the command targets.
async fn legacy_rollout(deps: &Deps, s: &ExportState) -> Result<Rollout, StepError> {
    let Some(command_id) = &s.command_id else {
        return Err(StepError::abort("wait reached without a command"));
    };
    let Some(cmd) = ssm::describe(&deps.clients.ssm, command_id).await? else {
        return Err(StepError::retry(format!(
            "command {command_id} not listed yet"
        )));
    };
    if cmd.target_count == 0 && cmd.status.is_final() {
        return Err(StepError::abort(format!(
            "no managed instance matches tag {}",
            s.request.target()
        )));
    }
    Ok(Rollout {
        servers: cmd.target_count,
        batches: 1,
        batch_servers: cmd.target_count,
        sweeps: MAX_SWEEPS,
        ..Rollout::default()
    })
}

/// Records on the job's inventory row the servers that installed its serial (`installed`)
/// and, when given, how the install ended, in one write. Returns a note when the row did
/// not take the servers: it has moved on to a newer certificate, or is full.
async fn set_row(
    deps: &Deps,
    ctx: &StepContext,
    s: &ExportState,
    installed: &[String],
    end: Option<InstallEnd>,
) -> Result<Option<String>, StepError> {
    let r = &s.request;
    let key = inventory::key(
        &r.target_tag_key,
        &r.target_tag_value,
        &r.certificate_arn,
        &r.cert_name,
    );
    let client = &deps.clients.dynamodb;
    let table = &deps.config.inventory_table;
    // An install-only job's failure leaves `LastStatus` to the export it topped up: the
    // servers it did not reach show as lagging.
    let end = end.filter(|e| s.install_only.is_none() || *e != InstallEnd::Failed);
    let mut attributes = end.map(|e| e.attributes()).unwrap_or_default();
    // An export's rollout resolved every server carrying the target: what `certflow
    // inventory` counts the lagging ones against until the next reconcile looks again.
    if let Some(r) = s
        .rollout
        .as_ref()
        .filter(|_| !attributes.is_empty() && s.install_only.is_none())
    {
        attributes.push((
            inventory::attr::TARGET_INSTANCES,
            AttributeValue::N((r.servers + r.offline).to_string()),
        ));
        attributes.push((
            inventory::attr::TARGET_SEEN_DATE,
            AttributeValue::S(rfc3339(ctx.now())),
        ));
    }
    let Some(serial) = &s.serial else {
        // A job from before serials were recorded: how it ended, nothing more.
        if !attributes.is_empty() {
            inventory::set(client, table, key, attributes, &[]).await?;
        }
        return Ok(None);
    };
    Ok(
        match inventory::record_installs(client, table, key, serial, installed, attributes).await? {
            Recorded::Added => None,
            Recorded::Stale { row_serial } => Some(format!(
                "the inventory row has moved on to serial {} since: this job's servers are not recorded as current",
                row_serial.as_deref().unwrap_or("(none)")
            )),
            Recorded::TooLarge => Some(format!(
                "the inventory row cannot record more servers (about {} fit in a DynamoDB item): `certflow inventory` does not count these",
                inventory::MAX_RECORDED_SERVERS
            )),
        },
    )
}

/// A marker line's value: a serial as the document prints it (hex digits and colons).
fn marker(stdout: &str, prefix: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(|v| v.trim().to_string())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ':')
        })
}

/// What server reported for batch `batch` of command `command_id`: its status, a detail
/// (the first line of its error output when it did not succeed), and the serials it says
/// it installed and serves.
fn result(r: &Rollout, command_id: &str, inv: Invocation) -> ServerResult {
    let detail = match inv.stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) if inv.status != InstanceStatus::Success => {
            Some(line.chars().take(300).collect())
        }
        _ => inv.detail,
    };
    ServerResult {
        batch: r.batch,
        plan: Some(r.plan),
        serial: marker(&inv.stdout, SERIAL_MARKER),
        served_serial: marker(&inv.stdout, SERVED_MARKER),
        status: Some(inv.status),
        detail,
        command_id: Some(command_id.to_string()),
        ping: None,
    }
}

/// On cancel or deadline: cancel the install command if one is in flight.
pub(super) async fn stop(
    deps: Arc<Deps>,
    ctx: StepContext,
    s: ExportState,
    _reason: StopReason,
) -> Option<String> {
    if ctx.step() != "wait" {
        return None;
    }
    let id = s.command_id?;
    Some(ssm::cancel(&deps.clients.ssm, &id).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(status: InstanceStatus, stdout: &str, stderr: &str) -> Invocation {
        Invocation {
            status,
            detail: Some("details".into()),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_success_records_the_serials_the_server_reports() {
        let out = "installed\n  CERTFLOW_INSTALLED_SERIAL=0A1B2C \nCERTFLOW_SERVED_SERIAL=0A1B2C\n";
        let rollout = Rollout {
            batch: 3,
            plan: 9,
            ..Rollout::default()
        };
        let r = result(
            &rollout,
            "c-1",
            inv(InstanceStatus::Success, out, "warning\n"),
        );
        assert_eq!(r.status, Some(InstanceStatus::Success));
        assert_eq!(r.serial.as_deref(), Some("0A1B2C"));
        assert_eq!(r.served_serial.as_deref(), Some("0A1B2C"));
        assert_eq!(r.detail.as_deref(), Some("details"));
        assert_eq!(
            (r.batch, r.plan, r.command_id.as_deref()),
            (3, Some(9), Some("c-1"))
        );
    }

    #[test]
    fn a_failure_records_the_first_error_line_and_refuses_odd_serials() {
        let err = "\n  certflow-install: verify failed: serves 01, not 02  \nmore\n";
        let r = result(
            &Rollout::default(),
            "c-1",
            inv(
                InstanceStatus::Failed,
                "CERTFLOW_INSTALLED_SERIAL=$(x)\nCERTFLOW_SERVED_SERIAL=01",
                err,
            ),
        );
        assert_eq!(r.status, Some(InstanceStatus::Failed));
        assert_eq!(
            r.detail.as_deref(),
            Some("certflow-install: verify failed: serves 01, not 02")
        );
        assert_eq!(r.serial, None);
        assert_eq!(r.served_serial.as_deref(), Some("01"));
    }
}
