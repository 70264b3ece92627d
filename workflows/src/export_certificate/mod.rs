//! `export-certificate`: export an ACM certificate and install it on every server that
//! carries a tag. Its steps, in order, each in a file of its own (docs/architecture.md,
//! *Export steps*):
//!
//! 1. `check` — the certificate is ISSUED, exportable, and its `certflow:targets` tag
//!    allows the target (pending validation: poll);
//! 2. `export` — passphrase and bundle into the target's secret in Secrets Manager;
//! 3. `inventory` — the inventory row of this target and certificate;
//! 4. `install` — plans the staged rollout (the servers carrying the tag, canary first,
//!    then batches; see [`rollout`]) and sends the install command to the next batch;
//! 5. `wait` — each server's result of that batch, kept as an entry beside the record;
//!    then the next batch, or the outcome on the inventory row.
//!
//! Secret material lives only in Secrets Manager: the job's state holds secret *names*,
//! the SSM command carries secret names, and the servers fetch the secrets themselves.

mod check;
mod export;
mod install;
mod inventory;
pub mod request;
pub mod rollout;
mod state;
pub mod trust;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use engine::{JobId, Outcome, StepError, StepPolicy, Workflow};
use sha2::Digest;

use crate::inventory::InventoryRow;

pub use crate::ssm::{valid_max_concurrency, valid_max_errors, InstanceStatus, JOB_PARAMETER};
pub use request::{ExportRequest, InvalidRequest};
pub use rollout::{Rollout, ServerResult, Staging};
pub use state::{Cause, ExportState, InstallOnly, InstanceResult};

use crate::aws::Clients;

/// What a step returns.
type StepResult = Result<Outcome<ExportState>, StepError>;

/// The workflow's name (the `Workflow` attribute of its jobs).
pub const NAME: &str = "export-certificate";

/// Settings of the export workflow.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Prefix of secret names: `<prefix><CertName>/<target slug>` ([`trust::secret_name`]).
    pub secret_prefix: String,
    /// KMS key for new secrets (default: the account's `aws/secretsmanager` key).
    pub kms_key_id: Option<String>,
    /// The SSM document that installs the files.
    pub document_name: String,
    /// The inventory table.
    pub inventory_table: String,
    /// The region certflow runs in (certificates elsewhere are refused).
    pub region: String,
    /// How long a certificate may stay `PENDING_VALIDATION` before the job fails.
    pub validation_timeout: Duration,
    /// How long the install command may run before it is cancelled and the job fails.
    pub install_timeout: Duration,
    /// `CertDir` passed to the install document, when not its default.
    pub cert_dir: Option<String>,
    /// `KeyDir` passed to the install document, when not its default.
    pub key_dir: Option<String>,
    /// Service the install document reloads after writing the files.
    pub reload_service: Option<String>,
    /// Servers per batch after the canary: a count, or a percentage of the servers (at
    /// most [`crate::ssm::MAX_INSTANCE_IDS`], one command per batch).
    pub install_max_concurrency: String,
    /// Failed servers tolerated before the rollout stops: a count, or a percentage.
    pub install_max_errors: String,
    /// Servers that install first, alone (0: no canary).
    pub install_canary: u32,
    /// When set, the install document checks that each server serves the new certificate
    /// on this local port after the reload (`VerifyPort`).
    pub verify_port: Option<u16>,
    /// The name (SNI) asked for by that check (default: the certificate's domain name,
    /// without a leading `*.`).
    pub verify_name: Option<String>,
    /// How the reconcile decides and paces itself.
    pub reconcile: crate::reconcile::ReconcileConfig,
    /// How long a new server's SSM agent may take to come online.
    pub agent_timeout: Duration,
    /// The EventBridge bus certflow's outcome events go to (`None`: none are published).
    pub event_bus: Option<String>,
    /// The longest pause between two looks at a batch's command. SSM's command status
    /// event wakes `wait` as soon as a batch ends, so the looks are only the fallback for a
    /// lost event.
    pub wait_poll_max: Duration,
}

/// Default [`ExportConfig::wait_poll_max`]: a lost command status event costs at most a
/// minute; a received one ends the wait at once.
pub const DEFAULT_WAIT_POLL_MAX: Duration = Duration::from_secs(60);

/// Default batch size after the canary: a tenth of the servers (at least one, at most
/// 50), so that a fleet of 100 installs in ten batches of a few seconds each, and a
/// failure that the canary did not show reaches at most a tenth of the fleet.
pub const DEFAULT_INSTALL_MAX_CONCURRENCY: &str = "10%";

/// Default failures tolerated: none; the first failed server stops the rollout.
pub const DEFAULT_INSTALL_MAX_ERRORS: &str = "0";

pub use rollout::DEFAULT_CANARY;

impl ExportConfig {
    /// Defaults for `region`.
    pub fn new(region: impl Into<String>) -> Self {
        ExportConfig {
            secret_prefix: "certflow/".into(),
            kms_key_id: None,
            document_name: "Install-ACMCertificate".into(),
            inventory_table: crate::inventory::DEFAULT_TABLE.into(),
            region: region.into(),
            validation_timeout: Duration::from_secs(2 * 3600),
            install_timeout: Duration::from_secs(30 * 60),
            cert_dir: None,
            key_dir: None,
            reload_service: None,
            install_max_concurrency: DEFAULT_INSTALL_MAX_CONCURRENCY.into(),
            install_max_errors: DEFAULT_INSTALL_MAX_ERRORS.into(),
            install_canary: DEFAULT_CANARY,
            verify_port: None,
            verify_name: None,
            reconcile: crate::reconcile::ReconcileConfig::default(),
            agent_timeout: crate::new_server::DEFAULT_AGENT_TIMEOUT,
            event_bus: Some("default".into()),
            wait_poll_max: DEFAULT_WAIT_POLL_MAX,
        }
    }
}

/// What the workflow needs: clients and settings.
#[derive(Debug, Clone)]
pub struct Deps {
    /// AWS clients.
    pub clients: Clients,
    /// Settings.
    pub config: ExportConfig,
}

/// The id of the export job for `request`: derived from its `RequestId` when it has one,
/// else from `fallback` (the intake message id, or a renewal's key for one row). The same
/// request sent twice, or the same message received twice, makes one job.
pub fn job_id(request: &ExportRequest, fallback: &str) -> JobId {
    JobId::from_key(NAME, job_key(request, fallback))
}

/// The idempotency key behind [`job_id`].
fn job_key<'a>(request: &'a ExportRequest, fallback: &'a str) -> &'a str {
    request.request_id.as_deref().unwrap_or(fallback)
}

/// A new export job for `request`, with the id [`job_id`] gives it.
///
/// The request is validated first, and only a valid request's fields become labels (the
/// operator's columns and the certificate index), so no label ever holds text that was not
/// checked. An invalid request still becomes a job, without labels, whose first step fails
/// naming the field, so that operators see it in `certflow jobs list`; it makes no AWS call.
///
/// The job carries the request's digest ([`engine::RequestKey`]): the same `RequestId` sent
/// again with another request is refused rather than merged into this job.
pub fn new_job(request: ExportRequest, key: &str) -> Result<engine::NewJob, engine::JobsError> {
    job_for(ExportState::new(request), key)
}

/// The job of `state` (its request's fields become labels once validated; see [`new_job`]).
fn job_for(state: ExportState, key: &str) -> Result<engine::NewJob, engine::JobsError> {
    let request = &state.request;
    let field = if request.request_id.is_some() {
        "RequestId"
    } else {
        "idempotency key"
    };
    let key = job_key(request, key).to_string();
    let fingerprint = engine::RequestKey::new(field, &key, request)?;
    let labels = match request.validate() {
        Ok(()) => vec![
            ("CertificateArn", request.certificate_arn.clone()),
            ("CertName", request.cert_name.clone()),
            ("Target", request.target()),
        ],
        Err(_) => Vec::new(),
    };
    let mut job = engine::NewJob::new(NAME, Some(&key), &state)?.for_request(fingerprint);
    for (k, v) in labels {
        job = job.label(k, v);
    }
    Ok(job)
}

/// The export job that brings `row` to ACM's serial `serial`: the same id whoever starts
/// it (a renewal event, a reconcile), so that it runs once per row and serial.
pub fn sync_job(
    row: &InventoryRow,
    serial: &str,
    cause: Cause,
    started_by: &str,
) -> Result<engine::NewJob, engine::JobsError> {
    let key = format!(
        "sync\u{1f}{}\u{1f}{}\u{1f}{serial}",
        row.tag_key_value(),
        row.certificate_arn_cert_name()
    );
    child_job(row, &key, cause, started_by, None)
}

/// The job that installs `row`'s current certificate (serial `serial`, already exported)
/// on `servers` only: the same id for the same row, serial and servers, whoever starts it
/// (an EC2 `running` event, a reconcile).
pub fn install_job(
    row: &InventoryRow,
    serial: &str,
    servers: &[String],
    cause: Cause,
    started_by: &str,
) -> Result<engine::NewJob, engine::JobsError> {
    let mut servers = servers.to_vec();
    servers.sort();
    servers.dedup();
    let digest = sha2::Sha256::digest(servers.join(",").as_bytes());
    let key = format!(
        "install\u{1f}{}\u{1f}{}\u{1f}{serial}\u{1f}{}",
        row.tag_key_value(),
        row.certificate_arn_cert_name(),
        hex(&digest[..16])
    );
    child_job(row, &key, cause, started_by, Some(InstallOnly { servers }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A job certflow starts itself for `row`, under `key`.
fn child_job(
    row: &InventoryRow,
    key: &str,
    cause: Cause,
    started_by: &str,
    install_only: Option<InstallOnly>,
) -> Result<engine::NewJob, engine::JobsError> {
    let request = ExportRequest {
        certificate_arn: row.certificate_arn.clone(),
        cert_name: row.cert_name.clone(),
        target_tag_key: row.target_tag_key.clone(),
        target_tag_value: row.target_tag_value.clone(),
        ..ExportRequest::default()
    };
    let state = ExportState {
        cause,
        started_by: Some(started_by.to_string()),
        install_only,
        ..ExportState::new(request)
    };
    job_for(state, key)
}

/// The workflow, over `deps`.
pub fn workflow(deps: Deps) -> Workflow<ExportState> {
    let deps = Arc::new(deps);
    let aws_step = StepPolicy::default()
        .max_attempts(8)
        .timeout(Duration::from_secs(60))
        .backoff(Duration::from_secs(1), Duration::from_secs(60));
    let d = deps.clone();
    let wf = Workflow::new(NAME)
        .deadline(
            deps.config.validation_timeout
                + deps.config.install_timeout
                + Duration::from_secs(3600),
        )
        .step_with("check", aws_step, move |ctx, s| {
            check::check(d.clone(), ctx, s)
        });
    let d = deps.clone();
    let wf = wf.step_with("export", aws_step, move |ctx, s| {
        export::export(d.clone(), ctx, s)
    });
    let d = deps.clone();
    let wf = wf.step_with("inventory", aws_step, move |ctx, s| {
        inventory::inventory(d.clone(), ctx, s)
    });
    let d = deps.clone();
    // One cache per workflow, so per worker: the document's hash is described once.
    let hashes = Arc::new(crate::ssm::DocumentHashes::default());
    let wf = wf.step_with("install", aws_step, move |ctx, s| {
        install::install(d.clone(), hashes.clone(), ctx, s)
    });
    let d = deps.clone();
    let wf = wf.step_with("wait", aws_step, move |ctx, s| {
        wait::wait(d.clone(), ctx, s)
    });
    let notifier = crate::outcomes::notifier(&deps.clients, deps.config.event_bus.as_deref());
    let d = deps;
    wf.on_stop(move |ctx, s, reason| wait::stop(d.clone(), ctx, s, reason))
        .on_end(move |ended, s| {
            let notifier = notifier.clone();
            async move {
                let notices = crate::outcomes::export_ended(&ended, &s);
                crate::outcomes::publish(&notifier, ended.job_id.as_str(), &notices).await;
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(request_id: Option<&str>) -> ExportRequest {
        ExportRequest {
            certificate_arn: "arn:aws:acm:us-east-1:123456789012:certificate/abc".into(),
            cert_name: "web".into(),
            target_tag_key: "Environment".into(),
            target_tag_value: "prod".into(),
            request_id: request_id.map(str::to_string),
            ..ExportRequest::default()
        }
    }

    #[test]
    fn the_job_id_comes_from_the_request_id_else_the_fallback() {
        // Pinned: existing jobs and clients derive these ids; they must never change.
        let by_request = "a44c9849-a480-53ab-8bf5-f088bd981d55";
        let by_message = "368b9b42-a8b3-5895-b225-3dde2266cb39";
        assert_eq!(
            job_id(&request(Some("req-1")), "msg-1").as_str(),
            by_request
        );
        assert_eq!(
            job_id(&request(Some("req-1")), "msg-2").as_str(),
            by_request
        );
        assert_eq!(job_id(&request(None), "msg-1").as_str(), by_message);
        assert_eq!(
            job_id(&request(None), "msg-1"),
            job_id(&request(None), "msg-1")
        );
        assert_ne!(job_id(&request(None), "msg-2").as_str(), by_message);
        assert_ne!(
            job_id(&request(Some("req-2")), "msg-1").as_str(),
            by_request
        );
        assert_eq!(
            job_id(&request(None), "k"),
            JobId::from_key(NAME, "k"),
            "the rule is the engine's key rule within this workflow"
        );
    }

    #[test]
    fn a_new_job_gets_the_job_id_and_labels() {
        for (req, fallback) in [(request(Some("req-1")), "msg-1"), (request(None), "msg-1")] {
            let job = new_job(req.clone(), fallback).unwrap();
            assert_eq!(job.id, job_id(&req, fallback));
            assert_eq!(job.workflow, NAME);
            assert_eq!(job.labels["CertName"], "web");
            assert_eq!(job.labels["Target"], "Environment=prod");
            assert_eq!(job.labels["CertificateArn"], req.certificate_arn);
        }
    }

    #[test]
    fn an_invalid_request_gets_no_labels() {
        let mut hostile = request(Some("req-1"));
        hostile.cert_name = "x\u{1b}[2J; rm -rf /".into();
        let job = new_job(hostile.clone(), "msg-1").unwrap();
        assert!(job.labels.is_empty(), "{:?}", job.labels);
        assert_eq!(
            job.id,
            job_id(&hostile, "msg-1"),
            "still a job, failing at check"
        );
        let mut bad_target = request(None);
        bad_target.target_tag_value = "v\nx".into();
        assert!(new_job(bad_target, "msg-1").unwrap().labels.is_empty());
    }

    #[test]
    fn the_request_digest_tells_a_reused_request_id_from_a_duplicate() {
        let digest = |r: &ExportRequest| new_job(r.clone(), "msg").unwrap().request.unwrap();
        let first = digest(&request(Some("req-1")));
        assert_eq!(first.field, "RequestId");
        assert_eq!(first.value, "req-1");
        // The same request, parsed from other text, is the same.
        let text = r#"{ "TargetTagValue":"prod","TargetTagKey":"Environment",
            "RequestId":"req-1","CertName":"web",
            "CertificateArn":"arn:aws:acm:us-east-1:123456789012:certificate/abc" }"#;
        let parsed: ExportRequest = serde_json::from_str(text).unwrap();
        assert_eq!(digest(&parsed), first);
        // Any field changed is another request.
        let mut other = request(Some("req-1"));
        other.target_tag_value = "dev".into();
        assert_ne!(digest(&other).digest, first.digest);
        let mut other = request(Some("req-1"));
        other.cert_name = "web2".into();
        assert_ne!(digest(&other).digest, first.digest);
    }
}
