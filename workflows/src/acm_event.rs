//! ACM's EventBridge events, as they arrive on the events queue (the raw envelope).
//!
//! Every `detail` field is optional, and booleans may arrive as JSON booleans or as
//! strings (`"TRUE"`, `"true"`, `"FALSE"`): both are read the same way.

use serde::{Deserialize, Deserializer, Serialize};

/// `ACM Certificate Available` (issuance, renewal, import).
pub const CERTIFICATE_AVAILABLE: &str = "ACM Certificate Available";
/// Renewal needs a person (e.g. validation records gone).
pub const RENEWAL_ACTION_REQUIRED: &str = "ACM Certificate Renewal Action Required";
/// Sent daily before expiry; for an exportable, auto-renewed certificate it means a
/// renewal did not happen.
pub const APPROACHING_EXPIRATION: &str = "ACM Certificate Approaching Expiration";
/// The certificate expired.
pub const EXPIRED: &str = "ACM Certificate Expired";

/// The source ACM sends events with.
pub const ACM_SOURCE: &str = "aws.acm";

/// An EventBridge envelope.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// Event id (unique per event; the same on a redelivery).
    pub id: String,
    /// `detail-type`.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// `source`.
    pub source: String,
    /// Event time.
    #[serde(default)]
    pub time: Option<String>,
    /// Region.
    #[serde(default)]
    pub region: Option<String>,
    /// Account.
    #[serde(default)]
    pub account: Option<String>,
    /// The certificate ARN is `resources[0]`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The ACM detail.
    #[serde(default)]
    pub detail: Detail,
}

/// The `detail` of ACM events; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// `ISSUANCE`, `RENEWAL`, `IMPORT`, `REIMPORT`.
    #[serde(rename = "Action", default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Days until expiry (expiry events).
    #[serde(
        rename = "DaysToExpiry",
        default,
        deserialize_with = "lenient_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub days_to_expiry: Option<u32>,
    /// Whether the certificate is exportable.
    #[serde(
        rename = "Exportable",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub exportable: Option<bool>,
    /// Whether it has been exported.
    #[serde(
        rename = "Exported",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub exported: Option<bool>,
    /// Whether it is in use.
    #[serde(
        rename = "InUse",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub in_use: Option<bool>,
    /// Certificate type (`AMAZON_ISSUED`, …).
    #[serde(
        rename = "CertificateType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_type: Option<String>,
    /// Common name.
    #[serde(
        rename = "CommonName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub common_name: Option<String>,
    /// Renewal status, for action-required events.
    #[serde(
        rename = "RenewalStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub renewal_status: Option<String>,
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Bool(b)) => Some(b),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

impl Envelope {
    /// The certificate the event is about.
    pub fn certificate_arn(&self) -> Option<&str> {
        self.resources
            .first()
            .map(String::as_str)
            .filter(|a| !a.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../tests/fixtures/acm-events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    #[test]
    fn reads_both_boolean_encodings() {
        for (name, exportable) in [
            ("certificate-available-renewal.json", Some(true)),
            ("certificate-available-renewal-bool.json", Some(true)),
        ] {
            let text = fixture(name);
            let e: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(e.detail_type, CERTIFICATE_AVAILABLE);
            assert_eq!(e.detail.action.as_deref(), Some("RENEWAL"));
            assert!(e.certificate_arn().is_some());
            assert_eq!(e.detail.exportable, exportable);
            assert_eq!(e.detail.in_use, Some(true));
        }
        let e: Envelope = serde_json::from_str(
            r#"{"id":"1","detail-type":"x","source":"aws.acm","resources":[],"detail":{"Exportable":"TRUE","InUse":false,"Exported":"False","DaysToExpiry":"12"}}"#,
        )
        .unwrap();
        assert_eq!(e.detail.exportable, Some(true));
        assert_eq!(e.detail.in_use, Some(false));
        assert_eq!(e.detail.exported, Some(false));
        assert_eq!(e.detail.days_to_expiry, Some(12));
        assert_eq!(e.certificate_arn(), None);
    }
}
