//! `check`, the first step of an export: the request is valid, the certificate is in this
//! region, ISSUED and exportable, and its owner allows the request's target (the
//! certificate's `certflow:targets` tag, [`super::trust`]). A certificate still pending
//! validation is polled (with backoff) until the validation timeout; anything else that is
//! wrong fails the job with what to do about it. It only reads, so running it twice is
//! harmless; nothing is written before it has passed.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_acm::types::{CertificateExport, CertificateStatus};
use engine::clock::rfc3339;
use engine::{Outcome, StepContext, StepError};

use super::request::parse_arn;
use super::{trust, Deps, ExportState, StepResult};
use crate::aws::classify;

/// `check`: the certificate must be ISSUED, exportable and allow the target; pending
/// validation waits.
pub(super) async fn check(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    s.request
        .validate()
        .map_err(|e| StepError::abort(e.to_string()))?;
    let arn = parse_arn(&s.request.certificate_arn).map_err(|e| StepError::abort(e.to_string()))?;
    if arn.region != deps.config.region {
        return Err(StepError::abort(format!(
            "invalid CertificateArn: the certificate is in region {}, but certflow runs in {}",
            arn.region, deps.config.region
        )));
    }
    let out = deps
        .clients
        .acm
        .describe_certificate()
        .certificate_arn(&s.request.certificate_arn)
        .send()
        .await;
    let cert = match out {
        Ok(o) => o
            .certificate
            .ok_or_else(|| StepError::retry("DescribeCertificate: empty answer"))?,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Err(StepError::abort(format!(
                "certificate {} not found in account {} region {}",
                s.request.certificate_arn, arn.account, arn.region
            )))
        }
        Err(e) => return Err(classify("DescribeCertificate", &e)),
    };
    let status = cert.status().cloned();
    match status {
        Some(CertificateStatus::Issued) => {}
        Some(CertificateStatus::PendingValidation) => {
            let waited = Duration::from_millis((ctx.now() - ctx.created_at()).max(0) as u64);
            if waited >= deps.config.validation_timeout {
                return Err(StepError::abort(format!(
                    "certificate {} is still PENDING_VALIDATION after {}s: complete its DNS or email validation, then retry the job",
                    s.request.certificate_arn,
                    waited.as_secs()
                )));
            }
            let delay = Duration::from_secs(2u64.saturating_pow(s.check_polls.min(5)).min(30));
            s.check_polls += 1;
            return Ok(Outcome::poll(s, delay).with_note("certificate pending validation"));
        }
        Some(other) => {
            let reason = cert
                .failure_reason()
                .map(|r| format!(" ({})", r.as_str()))
                .unwrap_or_default();
            return Err(StepError::abort(format!(
                "certificate {} is {}{reason}: only ISSUED certificates can be exported",
                s.request.certificate_arn,
                other.as_str()
            )));
        }
        None => return Err(StepError::retry("DescribeCertificate: no status")),
    }
    let exportable = cert
        .options()
        .and_then(|o| o.export())
        .is_some_and(|e| *e == CertificateExport::Enabled);
    if !exportable {
        return Err(StepError::abort(format!(
            "certificate {} is not exportable (Options.Export is not ENABLED): request a new certificate with export enabled",
            s.request.certificate_arn
        )));
    }
    // The certificate's owner, not the request's sender, decides where it may go.
    let tags = deps
        .clients
        .acm
        .list_tags_for_certificate()
        .certificate_arn(&s.request.certificate_arn)
        .send()
        .await
        .map_err(|e| classify("ListTagsForCertificate", &e))?;
    let allowed = tags
        .tags()
        .iter()
        .find(|t| t.key() == trust::TARGETS_TAG)
        .map(|t| t.value().unwrap_or_default());
    let r = &s.request;
    trust::authorise(
        &r.certificate_arn,
        allowed,
        &r.target_tag_key,
        &r.target_tag_value,
    )
    .map_err(StepError::abort)?;
    s.serial = cert.serial().map(str::to_string);
    s.domain_name = cert.domain_name().map(str::to_string);
    s.not_after = cert
        .not_after()
        .and_then(|t| t.to_millis().ok())
        .map(rfc3339);
    s.key_algorithm = cert.key_algorithm().map(|k| k.as_str().to_string());
    Ok(Outcome::next("export", s))
}
