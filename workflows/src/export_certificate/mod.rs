//! `export-certificate`: export an ACM certificate and install it on every server that
//! carries a tag — check, export, inventory, install, wait (DESIGN §4).
//!
//! Secret material lives only in Secrets Manager: the job's state holds secret *names*,
//! the SSM command carries secret names, and the servers fetch the secrets themselves.

pub mod request;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use engine::{StepPolicy, Workflow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use request::{ExportRequest, InvalidRequest};

use crate::aws::Clients;

/// The workflow's name (the `Workflow` attribute of its jobs).
pub const NAME: &str = "export-certificate";

/// Settings of the export workflow.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Prefix of secret names: `<prefix><CertName>/passphrase` and `/bundle`.
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
}

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

/// The result of the install on one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceResult {
    /// SSM invocation status (`Success`, `Failed`, `TimedOut`, …).
    pub status: String,
    /// SSM status details or the first line of the error output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The serial the server reported installing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// The durable state of an export job. Never secret material: names, ids and facts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    /// The request as received.
    pub request: ExportRequest,
    /// Certificate serial (from ACM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Certificate expiry, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Key algorithm (`RSA_2048`, `EC_prime256v1`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<String>,
    /// Times `check` found the certificate pending validation.
    #[serde(default)]
    pub check_polls: u32,
    /// Name of the passphrase secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_secret: Option<String>,
    /// Name of the bundle secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_secret: Option<String>,
    /// SHA-256 fingerprint of the certificate (DER), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The install command's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// When the install command was sent (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_sent_at: Option<i64>,
    /// Status polls of the install command so far.
    #[serde(default)]
    pub wait_polls: u32,
    /// Servers the command targeted, as SSM counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_count: Option<u32>,
    /// Per-server results.
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceResult>,
}

impl ExportState {
    /// The initial state for a request.
    pub fn new(request: ExportRequest) -> Self {
        ExportState {
            request,
            serial: None,
            not_after: None,
            key_algorithm: None,
            check_polls: 0,
            passphrase_secret: None,
            bundle_secret: None,
            fingerprint: None,
            command_id: None,
            command_sent_at: None,
            wait_polls: 0,
            target_count: None,
            instances: BTreeMap::new(),
        }
    }
}

/// A new export job for `request`: id from its `RequestId` when given, else from `key`
/// (e.g. the intake message id), labelled for the operator and the certificate index.
pub fn new_job(request: ExportRequest, key: &str) -> Result<engine::NewJob, engine::JobsError> {
    let key = request
        .request_id
        .clone()
        .unwrap_or_else(|| key.to_string());
    let labels = [
        ("CertificateArn", request.certificate_arn.clone()),
        ("CertName", request.cert_name.clone()),
        ("Target", request.target()),
    ];
    let mut job = engine::NewJob::new(NAME, Some(&key), &ExportState::new(request))?;
    for (k, v) in labels {
        job = job.label(k, v);
    }
    Ok(job)
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
            steps::check(d.clone(), ctx, s)
        });
    let d = deps.clone();
    let wf = wf.step_with("export", aws_step, move |ctx, s| {
        steps::export(d.clone(), ctx, s)
    });
    let d = deps.clone();
    let wf = wf.step_with("inventory", aws_step, move |ctx, s| {
        steps::inventory(d.clone(), ctx, s)
    });
    let d = deps.clone();
    let wf = wf.step_with("install", aws_step, move |ctx, s| {
        steps::install(d.clone(), ctx, s)
    });
    let d = deps.clone();
    let wf = wf.step_with("wait", aws_step, move |ctx, s| {
        steps::wait(d.clone(), ctx, s)
    });
    let d = deps;
    wf.on_stop(move |ctx, s, reason| steps::stop(d.clone(), ctx, s, reason))
}
