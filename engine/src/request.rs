//! Request fingerprints: what lets an idempotency key be refused when it comes back with a
//! different request.
//!
//! A job created with a caller's key ([`crate::JobId::from_key`]) is found again by that
//! key. Without more, a second request with the same key and *another* payload would be
//! judged the same job and silently merged into the first. So a [`RequestKey`] carries a
//! digest of the request as the workflow sees it; the engine stores it on the record
//! (`RequestDigest`, opaque to it) and a later create whose digest differs is refused
//! (docs/architecture.md, *Task protocol*, intake creation). The engine never looks inside
//! the request: the workflow decides what the payload is.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::JobsError;

/// The caller's idempotency key, and the digest of the request it was given for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// The request field that holds the key, for messages (e.g. `RequestId`).
    pub field: String,
    /// The key itself.
    pub value: String,
    /// [`digest`] of the request.
    pub digest: String,
}

impl RequestKey {
    /// The key `value` of request field `field`, for `request`.
    pub fn new<S: Serialize>(field: &str, value: &str, request: &S) -> Result<Self, JobsError> {
        let request = serde_json::to_value(request).map_err(|e| JobsError::Input(e.to_string()))?;
        Ok(RequestKey {
            field: field.to_string(),
            value: value.to_string(),
            digest: digest(&request),
        })
    }

    /// The refusal of this key when its job `job_id` exists with another request's digest.
    pub fn conflict(&self, job_id: &crate::JobId) -> JobsError {
        JobsError::RequestConflict {
            field: self.field.clone(),
            key: self.value.clone(),
            job_id: job_id.to_string(),
        }
    }
}

/// `sha256:<hex>` of the canonical JSON of `request`: object keys sorted at every level,
/// no whitespace. Two requests that differ only in key order or spacing have the same
/// digest; any change of a value, or a field added or removed, changes it.
pub fn digest(request: &serde_json::Value) -> String {
    let mut text = String::new();
    canonical(request, &mut text);
    let hash = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Writes `v` as JSON with sorted keys, whatever order the map kept.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(value) = map.get(k) {
                    canonical(value, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        // Scalars print the same whatever the map order: serde_json's own text.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Whether a create carrying `key` may be judged the job `existing` already is: the same
/// request, or a side without a digest (a job created before digests, or a caller that
/// gives none keeps the old behaviour).
pub(crate) fn same_request(existing: Option<&str>, key: Option<&RequestKey>) -> bool {
    match (existing, key) {
        (Some(stored), Some(key)) => stored == key.digest,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> String {
        digest(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = of(r#"{"CertName":"web","RequestId":"r-1","Target":{"k":"Env","v":"prod"}}"#);
        let b = of(
            "{ \"Target\" : { \"v\":\"prod\", \"k\":\"Env\" },\n  \"RequestId\":\"r-1\",\t\"CertName\":\"web\" }",
        );
        assert_eq!(a, b);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
    }

    #[test]
    fn any_field_change_changes_the_digest() {
        let base =
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"prod","N":1,"L":[1,2]}"#;
        let d = of(base);
        for other in [
            r#"{"CertName":"web2","RequestId":"r-1","TargetTagValue":"prod","N":1,"L":[1,2]}"#,
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"dev","N":1,"L":[1,2]}"#,
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"prod","N":2,"L":[1,2]}"#,
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"prod","N":1,"L":[2,1]}"#,
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"prod","N":1}"#,
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"prod","N":1,"L":[1,2],"X":null}"#,
            r#"{"CertName":"web","RequestId":"r-1","TargetTagValue":"prod ","N":1,"L":[1,2]}"#,
        ] {
            assert_ne!(of(other), d, "{other}");
        }
        // Keys are compared as text, escapes included.
        assert_ne!(of(r#"{"a":"x","b":"y"}"#), of(r#"{"a":"xb","":"y"}"#));
    }

    #[test]
    fn a_key_is_judged_by_its_digest_and_a_missing_digest_keeps_the_old_rule() {
        let key = RequestKey::new("RequestId", "r-1", &serde_json::json!({"a": 1})).unwrap();
        assert!(same_request(Some(&key.digest), Some(&key)));
        assert!(!same_request(Some("sha256:other"), Some(&key)));
        assert!(same_request(None, Some(&key)), "a job from before digests");
        assert!(
            same_request(Some("sha256:other"), None),
            "a caller without one"
        );
        assert!(same_request(None, None));
        let e = key.conflict(&crate::JobId::new("j-1")).to_string();
        assert_eq!(
            e,
            "RequestId r-1 was already used for a different request (job j-1); use a new RequestId"
        );
    }
}
