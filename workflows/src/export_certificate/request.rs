//! The export request as users send it, and its validation — done before any AWS call, so
//! that hostile input never reaches a secret name, a shell, or a command parameter.

use serde::{Deserialize, Serialize};

/// The reference solution's payload, unchanged, plus an optional idempotency key and
/// optional overrides of the deployment's staged rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    /// `arn:<partition>:acm:<region>:<account>:certificate/<id>`.
    #[serde(rename = "CertificateArn")]
    pub certificate_arn: String,
    /// File-name stem on the servers: `<CertName>-fullchain.pem`, …
    #[serde(rename = "CertName")]
    pub cert_name: String,
    /// Tag key selecting the servers.
    #[serde(rename = "TargetTagKey")]
    pub target_tag_key: String,
    /// Tag value selecting the servers.
    #[serde(rename = "TargetTagValue")]
    pub target_tag_value: String,
    /// Idempotency key: the same RequestId twice makes one job.
    #[serde(rename = "RequestId", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Overrides the deployment's canary: how many servers install first, alone.
    #[serde(rename = "Canary", default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u32>,
    /// Overrides the deployment's batch size: a count, or a percentage of the servers.
    #[serde(
        rename = "MaxConcurrency",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_concurrency: Option<String>,
    /// Overrides the deployment's failures tolerated: a count, or a percentage.
    #[serde(rename = "MaxErrors", default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<String>,
}

/// The largest canary a request may ask for (one SSM command's worth of servers).
pub const MAX_CANARY: u32 = crate::ssm::MAX_INSTANCE_IDS as u32;

/// A field of the request that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidRequest {
    /// The field, as named in the payload.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field,
        reason: reason.into(),
    }
}

/// The parts of a certificate ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateArn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`, …
    pub partition: &'a str,
    /// The certificate's region.
    pub region: &'a str,
    /// The owning account.
    pub account: &'a str,
    /// The certificate id.
    pub id: &'a str,
}

/// Parses `arn:<partition>:acm:<region>:<account>:certificate/<id>`.
pub fn parse_arn(arn: &str) -> Result<CertificateArn<'_>, InvalidRequest> {
    const F: &str = "CertificateArn";
    if arn.is_empty() {
        return Err(invalid(F, "is empty"));
    }
    if arn.len() > 2048 || !arn.is_ascii() {
        return Err(invalid(F, "is not an ACM certificate ARN"));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid(
            F,
            "expected arn:<partition>:acm:<region>:<account>:certificate/<id>",
        ));
    };
    if prefix != "arn" || !partition.starts_with("aws") {
        return Err(invalid(
            F,
            "expected arn:<partition>:acm:<region>:<account>:certificate/<id>",
        ));
    }
    if service != "acm" {
        return Err(invalid(
            F,
            format!("is an ARN of service {service:?}, not acm"),
        ));
    }
    let region_ok = !region.is_empty()
        && region.split('-').count() >= 3
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !region_ok {
        return Err(invalid(F, "has no valid region"));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(F, "has no valid 12-digit account id"));
    }
    let Some(id) = resource.strip_prefix("certificate/") else {
        return Err(invalid(F, "does not name a certificate (certificate/<id>)"));
    };
    let id_ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !id_ok {
        return Err(invalid(F, "has a malformed certificate id"));
    }
    Ok(CertificateArn {
        partition,
        region,
        account,
        id,
    })
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, and no `..`: it becomes a file name on servers.
pub fn validate_cert_name(name: &str) -> Result<(), InvalidRequest> {
    const F: &str = "CertName";
    if name.is_empty() {
        return Err(invalid(F, "is empty"));
    }
    if name.chars().count() > 64 {
        return Err(invalid(F, "is longer than 64 characters"));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(invalid(
            F,
            "may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit",
        ));
    }
    if name.contains("..") {
        return Err(invalid(F, "must not contain '..'"));
    }
    Ok(())
}

/// EC2 tag rules (key 1–128, value 0–256 characters; letters, digits, spaces and
/// `+ - = . _ : / @`), minus what a shell or an SSM target would misread: no `=` in
/// keys, no leading/trailing space, no `aws:` prefix on keys.
pub fn validate_tag(key: &str, value: &str) -> Result<(), InvalidRequest> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, ' ' | '+' | '-' | '.' | '_' | ':' | '/' | '@')
    };
    if key.is_empty() {
        return Err(invalid("TargetTagKey", "is empty"));
    }
    if key.chars().count() > 128 {
        return Err(invalid("TargetTagKey", "is longer than 128 characters"));
    }
    if !key.chars().all(allowed) {
        return Err(invalid(
            "TargetTagKey",
            "may contain only letters, digits, spaces and + - . _ : / @",
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(invalid(
            "TargetTagKey",
            "must not start with aws: (reserved by AWS)",
        ));
    }
    if value.chars().count() > 256 {
        return Err(invalid("TargetTagValue", "is longer than 256 characters"));
    }
    if value.is_empty() {
        return Err(invalid("TargetTagValue", "is empty"));
    }
    if !value.chars().all(|c| allowed(c) || c == '=') {
        return Err(invalid(
            "TargetTagValue",
            "may contain only letters, digits, spaces and + - = . _ : / @",
        ));
    }
    for (field, s) in [("TargetTagKey", key), ("TargetTagValue", value)] {
        if s.starts_with(' ') || s.ends_with(' ') {
            return Err(invalid(field, "must not start or end with a space"));
        }
    }
    Ok(())
}

impl ExportRequest {
    /// Checks every field; the first problem found is reported, naming its field.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        parse_arn(&self.certificate_arn)?;
        validate_cert_name(&self.cert_name)?;
        validate_tag(&self.target_tag_key, &self.target_tag_value)?;
        if let Some(id) = &self.request_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
                return Err(invalid("RequestId", "must be 1–128 printable characters"));
            }
        }
        if self.canary.is_some_and(|c| c > MAX_CANARY) {
            return Err(invalid(
                "Canary",
                format!("must be 0 to {MAX_CANARY} servers"),
            ));
        }
        if let Some(v) = &self.max_concurrency {
            if !crate::ssm::valid_max_concurrency(v) {
                return Err(invalid(
                    "MaxConcurrency",
                    format!("{v:?} is not a count from 1 or a percentage 1%–100%"),
                ));
            }
        }
        if let Some(v) = &self.max_errors {
            if !crate::ssm::valid_max_errors(v) {
                return Err(invalid(
                    "MaxErrors",
                    format!("{v:?} is not a count from 0 or a percentage 0%–100%"),
                ));
            }
        }
        Ok(())
    }

    /// The `key=value` target, as shown to operators.
    pub fn target(&self) -> String {
        format!("{}={}", self.target_tag_key, self.target_tag_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(arn: &str, name: &str, key: &str, value: &str) -> ExportRequest {
        ExportRequest {
            certificate_arn: arn.into(),
            cert_name: name.into(),
            target_tag_key: key.into(),
            target_tag_value: value.into(),
            ..ExportRequest::default()
        }
    }

    #[test]
    fn rollout_overrides_are_checked_and_absent_ones_leave_the_request_as_it_was() {
        let mut r = req(ARN, "web", "k", "v");
        let plain = serde_json::to_value(&r).unwrap();
        assert!(
            plain.get("Canary").is_none(),
            "digests of older requests stay"
        );
        r.canary = Some(2);
        r.max_concurrency = Some("25%".into());
        r.max_errors = Some("1".into());
        assert_eq!(r.validate(), Ok(()));
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""Canary":2"#) && text.contains(r#""MaxConcurrency":"25%""#));
        for (field, bad) in [
            (
                "MaxConcurrency",
                req_with(|r| r.max_concurrency = Some("0".into())),
            ),
            (
                "MaxConcurrency",
                req_with(|r| r.max_concurrency = Some("10 %".into())),
            ),
            (
                "MaxErrors",
                req_with(|r| r.max_errors = Some("101%".into())),
            ),
            ("Canary", req_with(|r| r.canary = Some(MAX_CANARY + 1))),
        ] {
            assert_eq!(bad.validate().unwrap_err().field, field);
        }
    }

    fn req_with(f: impl FnOnce(&mut ExportRequest)) -> ExportRequest {
        let mut r = req(ARN, "web", "k", "v");
        f(&mut r);
        r
    }

    const ARN: &str =
        "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab";

    #[test]
    fn accepts_the_reference_payload() {
        let r: ExportRequest = serde_json::from_str(&format!(
            r#"{{"CertificateArn":"{ARN}","CertName":"web-cert","TargetTagKey":"Environment","TargetTagValue":"Production"}}"#
        ))
        .unwrap();
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn refuses_hostile_cert_names_naming_the_field() {
        for bad in [
            "x; rm -rf /",
            "../etc",
            "",
            &"a".repeat(65),
            "$(id)",
            "`id`",
            "a\nb",
            "a\0b",
            "ｗeb",
            "a..b",
            ".hidden",
        ] {
            let e = req(ARN, bad, "k", "v").validate().unwrap_err();
            assert_eq!(e.field, "CertName", "{bad:?}");
        }
        assert_eq!(req(ARN, &"a".repeat(64), "k", "v").validate(), Ok(()));
    }

    #[test]
    fn refuses_bad_arns() {
        for bad in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:acm:us-east-1:123:certificate/abc",
            "arn:aws:acm:us-east-1:123456789012:key/abc",
            "not an arn",
            "arn:aws:acm:us-east-1:123456789012:certificate/$(id)",
        ] {
            let e = req(bad, "c", "k", "v").validate().unwrap_err();
            assert_eq!(e.field, "CertificateArn", "{bad:?}");
        }
    }

    #[test]
    fn refuses_bad_tags() {
        assert_eq!(
            req(ARN, "c", "a=b", "v").validate().unwrap_err().field,
            "TargetTagKey"
        );
        assert_eq!(
            req(ARN, "c", "k\"", "v").validate().unwrap_err().field,
            "TargetTagKey"
        );
        assert_eq!(
            req(ARN, "c", &"k".repeat(129), "v")
                .validate()
                .unwrap_err()
                .field,
            "TargetTagKey"
        );
        assert_eq!(
            req(ARN, "c", "k", "v;x").validate().unwrap_err().field,
            "TargetTagValue"
        );
        assert_eq!(
            req(ARN, "c", "k", " v").validate().unwrap_err().field,
            "TargetTagValue"
        );
        assert_eq!(
            req(ARN, "c", "Environment", "Production web").validate(),
            Ok(())
        );
    }
}
