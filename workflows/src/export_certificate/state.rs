//! The durable state of an export job (the job's `Data`): the request, what `check` and
//! `export` learnt, and where the rollout stands (counts; each server's result is an
//! entry beside the record). What is serialized here is what `certflow jobs show` prints and what
//! older jobs hold, so every field name and status string is part of the contract.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rollout::{Rollout, Staging};
use super::ExportRequest;
use crate::ssm::InstanceStatus;

/// The result of the install on one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceResult {
    /// SSM invocation status.
    pub status: InstanceStatus,
    /// SSM status details or the first line of the error output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The serial the server reported installing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// What started an export job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// An export request on the intake queue.
    #[default]
    Request,
    /// ACM's renewal event (through a `renew-certificate` job).
    Renewal,
    /// A reconcile found the row behind ACM or its servers behind the row.
    Drift,
    /// A server joined the target (an EC2 `running` event).
    NewServer,
}

impl Cause {
    /// Whether the job installs a certificate ACM renewed: its failure leaves the
    /// certificate unexported since its renewal, which blocks the next one.
    pub fn is_renewal(self) -> bool {
        matches!(self, Cause::Renewal | Cause::Drift)
    }
}

/// An install of the row's current certificate on some servers, with no export: the
/// bundle already in the target's secret goes to servers that do not have it yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstallOnly {
    /// The servers, sorted; only those still carrying the target are sent the install.
    pub servers: Vec<String>,
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
    /// Name of the secret holding passphrase and bundle (one per target and name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
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
    /// Per-server results of jobs from before staged rollouts (read only: results are
    /// now entries beside the record, see [`super::rollout`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, InstanceResult>,
    /// The certificate's domain name (the default name a verification asks for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Where the staged rollout stands: counts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// What started the job.
    #[serde(default, skip_serializing_if = "is_request")]
    pub cause: Cause,
    /// The job that started this one (a renewal, a reconcile, a new-server job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Install only, on these servers: no export, no new secret version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_only: Option<InstallOnly>,
}

fn is_request(c: &Cause) -> bool {
    *c == Cause::Request
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
            secret: None,
            fingerprint: None,
            command_id: None,
            command_sent_at: None,
            wait_polls: 0,
            target_count: None,
            instances: BTreeMap::new(),
            domain_name: None,
            rollout: None,
            cause: Cause::Request,
            started_by: None,
            install_only: None,
        }
    }

    /// How this job's rollout is staged: the request's overrides, else the deployment's.
    pub fn staging(&self, config: &super::ExportConfig) -> Staging {
        let r = &self.request;
        Staging {
            canary: r.canary.unwrap_or(config.install_canary),
            max_concurrency: r
                .max_concurrency
                .clone()
                .unwrap_or_else(|| config.install_max_concurrency.clone()),
            max_errors: r
                .max_errors
                .clone()
                .unwrap_or_else(|| config.install_max_errors.clone()),
        }
    }

    /// The name a verification asks the server for: the deployment's, else the
    /// certificate's domain name without a leading `*.`.
    pub fn verify_name(&self, config: &super::ExportConfig) -> Option<String> {
        config.verify_name.clone().or_else(|| {
            self.domain_name
                .as_deref()
                .map(|d| d.strip_prefix("*.").unwrap_or(d).to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_results_read_and_write_as_before() {
        let stored = json!({
            "i-1": {"status": "Success", "serial": "0a:1b"},
            "i-2": {"status": "TimedOut", "detail": "Execution timed out"},
        });
        let parsed: BTreeMap<String, InstanceResult> =
            serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(parsed["i-1"].status, InstanceStatus::Success);
        assert_eq!(parsed["i-2"].status, "TimedOut");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), stored);
    }
}
