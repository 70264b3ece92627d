//! The durable state of an export job (the job's `Data`) and the per-server install
//! results it carries. What is serialized here is what `certflow jobs show` prints and what
//! older jobs hold, so every field name and status string is part of the contract.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
            secret: None,
            fingerprint: None,
            command_id: None,
            command_sent_at: None,
            wait_polls: 0,
            target_count: None,
            instances: BTreeMap::new(),
        }
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
