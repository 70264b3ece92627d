//! `export`: a fresh passphrase, `ExportCertificate` with it, and passphrase, certificate,
//! chain and encrypted key into one secret version — the secret of this target and
//! certificate name ([`trust::secret_name`]), so the passphrase and the key always change
//! together. The job's state keeps the secret's name and the certificate's fingerprint,
//! never the material.
//!
//! The version carries a token derived from the job and the step (its idempotency key,
//! docs/architecture.md, *Export steps*): a rerun finds the version it already wrote and
//! reuses it — same passphrase, no second version, no second export.
//!
//! A secret that exists must already be certflow's and this target's (tags
//! `certflow:managed=true` and `<TargetTagKey>=<TargetTagValue>`): an export never writes
//! into a secret made for another target, and never re-tags one. Tags are written only
//! when the secret is created.

use std::sync::Arc;

use aws_sdk_secretsmanager::types::Tag;
use base64::Engine as _;
use engine::{Outcome, StepContext, StepError};
use rand::RngCore;
use serde_json::json;
use sha2::Digest;

use super::{trust, Deps, ExportState, StepResult};
use crate::aws::classify;
use crate::secrets::{Created, Secrets};

/// `export`: passphrase, `ExportCertificate`, one secret version holding both.
///
/// A first run ([`StepContext::first_run`]: no earlier run of this step can have begun)
/// writes straight away; any other run first reads back what an earlier one may have stored under the step's
/// token, so that it does not export the certificate a second time. Either way a version,
/// once stored, wins: a write that finds the token taken reads the stored value instead.
pub(super) async fn export(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    if s.install_only.is_some() {
        return exported_already(&deps, s).await;
    }
    let r = &s.request;
    let name = trust::secret_name(
        &deps.config.secret_prefix,
        &r.cert_name,
        &r.target_tag_key,
        &r.target_tag_value,
    );
    let secrets = Secrets {
        client: &deps.clients.secrets,
        kms_key_id: deps.config.kms_key_id.as_deref(),
    };
    let token = ctx.idempotency_token("secret");
    let existing = secrets.tags(&name).await?;
    if let Some(tags) = &existing {
        owned_by_target(&name, tags, &r.target_tag_key, &r.target_tag_value)?;
    }
    let stored = match &existing {
        Some(_) if !ctx.first_run() => secrets.read_version(&name, &token).await?,
        _ => None,
    };
    let value = match stored {
        Some(stored) => stored,
        None => {
            let fresh = export_fresh(&deps, &ctx, &s).await?;
            match existing {
                Some(_) => secrets.put_version(&name, &token, fresh).await?,
                None => {
                    let tags = [
                        Tag::builder()
                            .key(&r.target_tag_key)
                            .value(&r.target_tag_value)
                            .build(),
                        Tag::builder().key(trust::MANAGED_TAG).value("true").build(),
                    ];
                    match secrets.create(&name, &token, &fresh, &tags).await? {
                        Created::Yes => fresh,
                        // Made meanwhile (a concurrent run, or someone else): the next
                        // attempt looks at its tags and its versions first.
                        Created::Exists => {
                            return Err(StepError::retry(format!(
                                "secret {name} was created concurrently"
                            )))
                        }
                    }
                }
            }
        }
    };
    let held = |field| json_field(&value, field);
    let (Some(_), Some(certificate_pem)) = (held("passphrase"), held("certificate")) else {
        return Err(StepError::abort(format!(
            "secret {name} does not hold a certflow bundle (passphrase and certificate)"
        )));
    };
    s.fingerprint = fingerprint(&certificate_pem);
    s.secret = Some(name.clone());
    Ok(Outcome::next("inventory", s).with_note(format!("bundle stored in {name}")))
}

/// An install-only job: the bundle to install is the one the row's last export put in the
/// target's secret. It must be ACM's current certificate (`check` read its serial), and
/// the secret must be this target's, by name and by tags: an inventory row edited by hand
/// cannot send another target's key anywhere.
async fn exported_already(deps: &Deps, mut s: ExportState) -> StepResult {
    let r = &s.request;
    let key = crate::inventory::key(
        &r.target_tag_key,
        &r.target_tag_value,
        &r.certificate_arn,
        &r.cert_name,
    );
    let table = &deps.config.inventory_table;
    let row = crate::inventory::get(&deps.clients.dynamodb, table, key)
        .await?
        .ok_or_else(|| {
            StepError::abort(format!(
                "install only: no inventory row for {} to {} in {table}: the certificate was never exported to this target",
                r.cert_name,
                r.target()
            ))
        })?;
    let acm = s.serial.clone().unwrap_or_default();
    if row.serial.as_deref() != Some(acm.as_str()) {
        return Err(StepError::abort(format!(
            "install only: ACM's certificate is serial {acm}, but the last export to {} was serial {}: it must be exported first (`certflow reconcile` starts that export)",
            r.target(),
            row.serial.as_deref().unwrap_or("(none)")
        )));
    }
    let name = trust::secret_name(
        &deps.config.secret_prefix,
        &r.cert_name,
        &r.target_tag_key,
        &r.target_tag_value,
    );
    if row.secret_name.as_deref() != Some(name.as_str()) {
        return Err(StepError::abort(format!(
            "install only: the inventory row names secret {}, not {name}, the secret of {}: export it again",
            row.secret_name.as_deref().unwrap_or("(none)"),
            r.target()
        )));
    }
    let secrets = Secrets {
        client: &deps.clients.secrets,
        kms_key_id: deps.config.kms_key_id.as_deref(),
    };
    let Some(tags) = secrets.tags(&name).await? else {
        return Err(StepError::abort(format!(
            "install only: secret {name} does not exist: export the certificate again"
        )));
    };
    owned_by_target(&name, &tags, &r.target_tag_key, &r.target_tag_value)?;
    let note = format!(
        "install only: serial {acm}, already in secret {name}, goes to {} server(s); nothing exported",
        s.install_only.as_ref().map_or(0, |i| i.servers.len())
    );
    s.secret = Some(name);
    s.fingerprint = row.fingerprint;
    Ok(Outcome::next("install", s).with_note(note))
}
/// A fresh passphrase, the certificate exported with it, and both as the secret's value.
async fn export_fresh(
    deps: &Deps,
    ctx: &StepContext,
    s: &ExportState,
) -> Result<String, StepError> {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG (ChaCha12) seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let passphrase = base64::engine::general_purpose::STANDARD.encode(bytes);
    let out = deps
        .clients
        .acm
        .export_certificate()
        .certificate_arn(&s.request.certificate_arn)
        .passphrase(aws_sdk_acm::primitives::Blob::new(passphrase.as_bytes()))
        .send()
        .await
        .map_err(|e| classify("ExportCertificate", &e))?;
    Ok(json!({
        "passphrase": passphrase,
        "certificate": out.certificate().unwrap_or_default(),
        "certificate_chain": out.certificate_chain().unwrap_or_default(),
        "private_key": out.private_key().unwrap_or_default(),
        "serial": s.serial,
        "not_after": s.not_after,
        "certificate_arn": s.request.certificate_arn,
        "job_id": ctx.job_id().as_str(),
    })
    .to_string())
}

/// An existing secret may be written only if it is certflow's and tagged for this very
/// target; anything else is refused (never re-tagged), naming the secret and its tags.
fn owned_by_target(
    name: &str,
    tags: &[(String, String)],
    key: &str,
    value: &str,
) -> Result<(), StepError> {
    let has = |k: &str, v: &str| tags.iter().any(|(tk, tv)| tk == k && tv == v);
    if has(trust::MANAGED_TAG, "true") && has(key, value) {
        return Ok(());
    }
    let shown = if tags.is_empty() {
        "has no tags".to_string()
    } else {
        let list: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("is tagged {}", list.join(", "))
    };
    Err(StepError::abort(format!(
        "secret {name} {shown}, not {key}={value} and {}=true: certflow does not write into a secret made for another target, nor re-tag it; delete that secret or use another CertName",
        trust::MANAGED_TAG
    )))
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
    fn only_a_managed_secret_of_this_target_may_be_written() {
        let tags = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ours = tags(&[("Environment", "dev"), ("certflow:managed", "true")]);
        assert!(owned_by_target("s", &ours, "Environment", "dev").is_ok());
        for (t, shown) in [
            (
                tags(&[("Environment", "Production"), ("certflow:managed", "true")]),
                "is tagged Environment=Production, certflow:managed=true",
            ),
            (tags(&[("Environment", "dev")]), "is tagged Environment=dev"),
            (
                tags(&[("certflow:managed", "true")]),
                "is tagged certflow:managed=true",
            ),
            (tags(&[]), "has no tags"),
        ] {
            let e = owned_by_target("certflow/web/x", &t, "Environment", "dev").unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(&format!("secret certflow/web/x {shown},")),
                "{text}"
            );
            assert!(text.contains("another target"), "{text}");
        }
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
