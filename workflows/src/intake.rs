//! Turning an intake message into a job.
//!
//! Two kinds of message arrive: export requests from producers, and ACM's EventBridge
//! events delivered by a rule. A message that cannot become a job at all (not JSON, wrong
//! shape, missing or mistyped fields, an event type certflow does not act on) goes to the
//! intake DLQ with the reason. A well-formed export request with a bad field value becomes
//! a job that fails at its first step naming the field, before any AWS call — so operators
//! see it in `certflow jobs list`. Such a job has no labels: request fields become labels
//! only once the request validated (`export_certificate::new_job`). An export request whose
//! `RequestId` already made a job for a different request goes to the DLQ with the reason
//! (the engine compares the requests' digests).

use engine::{Delivery, NewJob};

use crate::acm_event::{self, Envelope};
use crate::export_certificate::{self, ExportRequest};
use crate::renew_certificate::{self, alert, RenewState};

/// Largest body accepted (SQS's own limit).
const MAX_BODY: usize = 256 * 1024;

/// How intake messages are read.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Event sources accepted as ACM (`aws.acm`, plus e.g. `custom.aws.acm` for tests
    /// that publish events themselves).
    pub sources: Vec<String>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            sources: vec![acm_event::ACM_SOURCE.to_string()],
        }
    }
}

impl IntakeConfig {
    /// The parser the engine's intake loop calls.
    pub fn parser(self) -> engine::IntakeParser {
        std::sync::Arc::new(move |d: &Delivery| parse(&self, d))
    }
}

/// Parses one intake message.
pub fn parse(config: &IntakeConfig, d: &Delivery) -> Result<NewJob, String> {
    if d.body.len() > MAX_BODY {
        return Err(format!(
            "body is {} bytes; the limit is {MAX_BODY}",
            d.body.len()
        ));
    }
    if d.body.trim().is_empty() {
        return Err(
            "body is empty; expected an export request or an ACM event (JSON object)".into(),
        );
    }
    let value: serde_json::Value =
        serde_json::from_str(&d.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("body is not a JSON object; expected an export request or an ACM event".into());
    };
    if obj.contains_key("detail-type") || obj.contains_key("source") {
        let event: Envelope =
            serde_json::from_value(value).map_err(|e| format!("not an EventBridge event: {e}"))?;
        return event_job(config, &event);
    }
    let request: ExportRequest =
        serde_json::from_value(value).map_err(|e| format!("not an export request: {e}"))?;
    export_certificate::new_job(request, &d.message_id).map_err(|e| e.to_string())
}

fn event_job(config: &IntakeConfig, e: &Envelope) -> Result<NewJob, String> {
    if !config.sources.iter().any(|s| s == &e.source) {
        return Err(format!(
            "event source {:?} is not accepted (accepted: {})",
            e.source,
            config.sources.join(", ")
        ));
    }
    if e.id.trim().is_empty() {
        return Err("event has an empty id".into());
    }
    let arn = e.certificate_arn().ok_or_else(|| {
        format!(
            "{} event {} has no certificate ARN in resources",
            e.detail_type, e.id
        )
    })?;
    export_certificate::request::parse_arn(arn).map_err(|err| format!("event {}: {err}", e.id))?;
    let action = |text: &str| text.to_string();
    let alert_job = |what: String| {
        alert::new_job(alert::Alert {
            event: e.detail_type.clone(),
            event_id: e.id.clone(),
            certificate_arn: arn.to_string(),
            days_to_expiry: e.detail.days_to_expiry,
            action: what,
        })
        .map_err(|err| err.to_string())
    };
    match e.detail_type.as_str() {
        acm_event::CERTIFICATE_AVAILABLE => match e.detail.action.as_deref() {
            Some("RENEWAL") => renew_certificate::new_job(RenewState {
                certificate_arn: arn.to_string(),
                event_id: e.id.clone(),
                event_time: e.time.clone(),
                children: Vec::new(),
                polls: 0,
            })
            .map_err(|err| err.to_string()),
            other => Err(format!(
                "ACM Certificate Available with Action {} is not a renewal; certflow re-exports on RENEWAL only",
                other.unwrap_or("(none)")
            )),
        },
        acm_event::RENEWAL_ACTION_REQUIRED => alert_job(action(
            "ACM cannot renew it automatically: check its domain validation (DNS records or email) in the ACM console",
        )),
        acm_event::APPROACHING_EXPIRATION => alert_job(action(
            "it was not renewed in time: check its renewal status in ACM; once renewed, certflow re-exports it",
        )),
        acm_event::EXPIRED => alert_job(action(
            "it has expired on every server that has it: request or renew the certificate and export it again",
        )),
        other => Err(format!("unknown event type {other:?}; certflow acts on ACM certificate events only")),
    }
}
