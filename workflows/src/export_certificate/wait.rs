//! `wait`, the last step of an export: polls the install command until every server has
//! answered, records each server's result (and the serial it reports installing) in the
//! job's state, and the outcome on the inventory row. Zero matching servers, any failure,
//! or the install timeout fails the job with the servers named; on a timeout, and when the
//! job is cancelled or runs past its deadline during this step, the command is cancelled.

use std::sync::Arc;
use std::time::Duration;

use engine::clock::rfc3339;
use engine::{Outcome, StepContext, StepError, StopReason};

use super::{Deps, ExportState, StepResult};
use crate::inventory::{self, InstallEnd};
use crate::ssm::{self, InstanceStatus, Invocation};

/// The line the install document prints for the engine.
const SERIAL_MARKER: &str = "CERTFLOW_INSTALLED_SERIAL=";

/// How long a command may report no target before the job fails (SSM resolves tag
/// targets a little after the send).
const NO_TARGET_GRACE: Duration = Duration::from_secs(120);

/// `wait`: poll the command until every server answered; zero targets, any failure, or the
/// install timeout fails the job with the servers named.
pub(super) async fn wait(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    let Some(command_id) = s.command_id.clone() else {
        return Err(StepError::abort("wait reached without a command"));
    };
    let sent_at = s.command_sent_at.unwrap_or(ctx.now());
    let elapsed = Duration::from_millis((ctx.now() - sent_at).max(0) as u64);
    let client = &deps.clients.ssm;
    let Some(cmd) = ssm::describe(client, &command_id).await? else {
        return Err(StepError::retry(format!(
            "command {command_id} not listed yet"
        )));
    };
    let targets = cmd.target_count;
    s.target_count = Some(targets);
    if targets == 0 && (cmd.status.is_final() || elapsed > NO_TARGET_GRACE) {
        return Err(StepError::abort(format!(
            "no managed instance matches tag {}",
            s.request.target()
        )));
    }

    // Per-server results: GetCommandInvocation for each instance the command names (the
    // emulator names them); where it names none (tag targets on AWS), ListCommandInvocations.
    if cmd.instance_ids.is_empty() {
        for (id, inv) in ssm::invocations(client, &command_id).await? {
            record(&mut s, &id, inv);
        }
    } else {
        for id in cmd.instance_ids {
            if s.instances.get(&id).is_some_and(|r| r.status.is_final()) {
                continue;
            }
            let inv = ssm::invocation(client, &command_id, &id).await?;
            record(&mut s, &id, inv);
        }
    }

    let failed: Vec<String> = s
        .instances
        .iter()
        .filter(|(_, r)| r.status.is_final() && r.status != InstanceStatus::Success)
        .map(|(id, r)| match &r.detail {
            Some(d) if d != r.status.as_str() => format!("{id} {} ({d})", r.status),
            _ => format!("{id} {}", r.status),
        })
        .collect();
    if !failed.is_empty() {
        let done = s.instances.len();
        let reason = format!(
            "install failed on {} of {} instances: {}",
            failed.len(),
            done.max(targets as usize),
            failed.join("; ")
        );
        // The job fails either way; the row only says so when the table lets it.
        let _ = set_row(&deps, &s, InstallEnd::Failed).await;
        return Ok(Outcome::fail(s, reason));
    }
    let succeeded = s
        .instances
        .values()
        .filter(|r| r.status == InstanceStatus::Success)
        .count();
    if targets > 0 && succeeded >= targets as usize {
        let end = InstallEnd::Installed {
            date: rfc3339(ctx.now()),
            instances: succeeded as u64,
        };
        set_row(&deps, &s, end).await?;
        let note = format!(
            "installed on {succeeded} instance(s): {}",
            s.instances.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(Outcome::succeed(s).with_note(note));
    }
    if elapsed >= deps.config.install_timeout {
        let note = ssm::cancel(client, &command_id).await;
        let pending: Vec<String> = s
            .instances
            .iter()
            .filter(|(_, r)| !r.status.is_final())
            .map(|(id, r)| format!("{id} {}", r.status))
            .collect();
        let reason = format!(
            "install did not finish within {}s ({}); {note}",
            deps.config.install_timeout.as_secs(),
            if pending.is_empty() {
                "no instance reported".to_string()
            } else {
                pending.join("; ")
            }
        );
        return Ok(Outcome::fail(s, reason));
    }
    let delay = Duration::from_millis((2_000.0 * 1.5f64.powi(s.wait_polls.min(10) as i32)) as u64)
        .min(Duration::from_secs(15));
    s.wait_polls += 1;
    Ok(Outcome::poll(s, delay))
}

/// Sets how the install ended on the job's inventory row.
async fn set_row(deps: &Deps, s: &ExportState, end: InstallEnd) -> Result<(), StepError> {
    let r = &s.request;
    let key = inventory::key(
        &r.target_tag_key,
        &r.target_tag_value,
        &r.certificate_arn,
        &r.cert_name,
    );
    inventory::set(
        &deps.clients.dynamodb,
        &deps.config.inventory_table,
        key,
        end.attributes(),
        &[],
    )
    .await
}

/// Records what server `id` reported: its status, a detail (the first line of its error
/// output when it did not succeed), and the serial it says it installed.
fn record(s: &mut ExportState, id: &str, inv: Invocation) {
    let serial = inv
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(SERIAL_MARKER))
        .map(|v| v.trim().to_string())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ':')
        });
    let detail = match inv.stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) if inv.status != InstanceStatus::Success => {
            Some(line.chars().take(200).collect())
        }
        _ => inv.detail,
    };
    let entry = s.instances.entry(id.to_string()).or_default();
    entry.status = inv.status;
    entry.detail = detail;
    if serial.is_some() {
        entry.serial = serial;
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
    use crate::export_certificate::ExportRequest;

    fn state() -> ExportState {
        ExportState::new(ExportRequest {
            certificate_arn: "arn:aws:acm:us-east-1:123456789012:certificate/abc".into(),
            cert_name: "web".into(),
            target_tag_key: "Environment".into(),
            target_tag_value: "prod".into(),
            request_id: None,
        })
    }

    fn inv(status: InstanceStatus, stdout: &str, stderr: &str) -> Invocation {
        Invocation {
            status,
            detail: Some("details".into()),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_success_records_the_serial_the_server_reports() {
        let mut s = state();
        let out = "installed\n  CERTFLOW_INSTALLED_SERIAL=0a:1b:2c \n";
        record(
            &mut s,
            "i-1",
            inv(InstanceStatus::Success, out, "warning\n"),
        );
        let r = &s.instances["i-1"];
        assert_eq!(r.status, InstanceStatus::Success);
        assert_eq!(r.serial.as_deref(), Some("0a:1b:2c"));
        assert_eq!(r.detail.as_deref(), Some("details"));
    }

    #[test]
    fn a_failure_records_the_first_error_line_and_keeps_an_earlier_serial() {
        let mut s = state();
        record(
            &mut s,
            "i-1",
            inv(
                InstanceStatus::InProgress,
                "CERTFLOW_INSTALLED_SERIAL=01",
                "",
            ),
        );
        let err = "\n  openssl: bad decrypt  \nmore\n";
        record(
            &mut s,
            "i-1",
            inv(
                InstanceStatus::Failed,
                "CERTFLOW_INSTALLED_SERIAL=$(x)",
                err,
            ),
        );
        let r = &s.instances["i-1"];
        assert_eq!(r.status, InstanceStatus::Failed);
        assert_eq!(r.detail.as_deref(), Some("openssl: bad decrypt"));
        assert_eq!(r.serial.as_deref(), Some("01"));
    }
}
