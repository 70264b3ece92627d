//! `export`: a fresh passphrase into Secrets Manager, `ExportCertificate` with it, and the
//! bundle (certificate, chain, encrypted key) into Secrets Manager. The job's state keeps
//! the two secret names and the certificate's fingerprint, never the material.
//!
//! Both secret versions carry a token derived from the job and the step (their idempotency
//! keys, docs/architecture.md, *Export steps*): a rerun finds the version it already wrote
//! and reuses it — same passphrase, no second version, no second export.

use std::sync::Arc;

use aws_sdk_secretsmanager::types::Tag;
use base64::Engine as _;
use engine::{Outcome, StepContext, StepError};
use rand::RngCore;
use serde_json::json;
use sha2::Digest;

use super::{Deps, ExportState, StepResult};
use crate::aws::classify;
use crate::secrets::Secrets;

/// `export`: passphrase → Secrets Manager, `ExportCertificate`, bundle → Secrets Manager.
///
/// A first attempt (no earlier run of this step took the lease) writes straight away; a
/// later attempt first reads back what an earlier one may have stored, so that it does not
/// export the certificate a second time. Either way a version, once stored, wins: a write
/// that finds the token taken reads the stored value instead.
pub(super) async fn export(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    let prefix = &deps.config.secret_prefix;
    let pass_name = format!("{prefix}{}/passphrase", s.request.cert_name);
    let bundle_name = format!("{prefix}{}/bundle", s.request.cert_name);
    let tags = vec![
        Tag::builder()
            .key(&s.request.target_tag_key)
            .value(&s.request.target_tag_value)
            .build(),
        Tag::builder().key("certflow:managed").value("true").build(),
    ];
    let secrets = Secrets {
        client: &deps.clients.secrets,
        kms_key_id: deps.config.kms_key_id.as_deref(),
    };
    let first = ctx.attempt() <= 1;

    let pass_token = ctx.idempotency_token("passphrase");
    let pass_json = match earlier_version(&secrets, &pass_name, &pass_token, first).await? {
        Some(existing) => existing,
        None => {
            let mut bytes = [0u8; 32];
            // ThreadRng is a CSPRNG (ChaCha12) seeded from the operating system.
            rand::rng().fill_bytes(&mut bytes);
            let passphrase = base64::engine::general_purpose::STANDARD.encode(bytes);
            let value = json!({ "passphrase": passphrase }).to_string();
            secrets
                .store_version(&pass_name, &pass_token, value, &tags, first)
                .await?
        }
    };
    let passphrase = json_field(&pass_json, "passphrase").ok_or_else(|| {
        StepError::abort(format!("secret {pass_name} does not hold a passphrase"))
    })?;

    let bundle_token = ctx.idempotency_token("bundle");
    let bundle_json = match earlier_version(&secrets, &bundle_name, &bundle_token, first).await? {
        Some(existing) => existing,
        None => {
            let out = deps
                .clients
                .acm
                .export_certificate()
                .certificate_arn(&s.request.certificate_arn)
                .passphrase(aws_sdk_acm::primitives::Blob::new(passphrase.as_bytes()))
                .send()
                .await
                .map_err(|e| classify("ExportCertificate", &e))?;
            let bundle = json!({
                "certificate": out.certificate().unwrap_or_default(),
                "certificate_chain": out.certificate_chain().unwrap_or_default(),
                "private_key": out.private_key().unwrap_or_default(),
                "serial": s.serial,
                "not_after": s.not_after,
                "certificate_arn": s.request.certificate_arn,
                "job_id": ctx.job_id().as_str(),
            })
            .to_string();
            secrets
                .store_version(&bundle_name, &bundle_token, bundle, &tags, first)
                .await?
        }
    };
    let certificate_pem = json_field(&bundle_json, "certificate")
        .ok_or_else(|| StepError::abort(format!("secret {bundle_name} does not hold a bundle")))?;
    s.fingerprint = fingerprint(&certificate_pem);
    s.passphrase_secret = Some(pass_name);
    s.bundle_secret = Some(bundle_name.clone());
    Ok(Outcome::next("inventory", s).with_note(format!("bundle stored in {bundle_name}")))
}

/// What an earlier attempt stored as version `token` of secret `name`; a first attempt
/// has no earlier one to look for.
async fn earlier_version(
    secrets: &Secrets<'_>,
    name: &str,
    token: &str,
    first: bool,
) -> Result<Option<String>, StepError> {
    if first {
        return Ok(None);
    }
    secrets.read_version(name, token).await
}

/// The string field `field` of a JSON object held in a secret.
fn json_field(json: &str, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value.get(field)?.as_str().map(str::to_string)
}

/// SHA-256 of the certificate's DER, as lowercase hex.
fn fingerprint(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let digest = sha2::Sha256::digest(&der);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_der() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        assert_eq!(
            fingerprint(pem).as_deref(),
            Some("ae4b3280e56e2faf83f414a6e3dabe9d5fbe18976544c05fed121accb85b53fc")
        );
        assert_eq!(
            fingerprint("-----BEGIN CERTIFICATE-----\n!!\n-----END"),
            None
        );
    }

    #[test]
    fn secrets_hold_json_objects() {
        assert_eq!(
            json_field(r#"{"passphrase":"p"}"#, "passphrase").as_deref(),
            Some("p")
        );
        assert_eq!(json_field(r#"{"passphrase":1}"#, "passphrase"), None);
        assert_eq!(json_field("not json", "passphrase"), None);
    }
}
