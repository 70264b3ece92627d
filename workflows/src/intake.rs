//! Turning an intake message into a job.
//!
//! Two kinds of message arrive, each on its own queue, and a queue's policy says who may
//! send to it: export requests from producers on the intake queue, and EventBridge events
//! on the events queue, which only certflow's rules may send to: ACM's certificate events
//! (a renewal, or an alert), EC2's `running` state changes (a `new-server` job), and the
//! reconcile rule's `Scheduled Event` (a `reconcile` job, one per event id). Each queue reads
//! only its own kind ([`IntakeKind`]): an EventBridge envelope on the intake queue, where
//! any producer could have forged it, or an export request on the events queue, goes to
//! that queue's DLQ with the reason. So does a message that cannot become a job at all (not
//! JSON, wrong shape, missing or mistyped fields, an event type certflow does not act on).
//! A well-formed export request with a bad field value becomes a job that fails at its
//! first step naming the field, before any AWS call — so operators see it in
//! `certflow jobs list`. Such a job has no labels but the sender: request fields become labels
//! only once the request validated (`export_certificate::new_job`). An export request whose
//! `RequestId` already made a job for a different request goes to the DLQ with the reason
//! (the engine compares the requests' digests). Every job made here carries the message's SQS `SenderId` as the
//! label [`engine::schema::SENDER_ID_LABEL`].

use engine::{schema, Delivery, Intent, NewJob, Signal};

use crate::acm_event::{self, Envelope};
use crate::events::{
    COMMAND_STATUS_CHANGE, EC2_SOURCE, EC2_STATE_CHANGE, SCHEDULED_EVENT, SCHEDULED_SOURCE,
    SSM_SOURCE,
};
use crate::export_certificate::JOB_PARAMETER;
use crate::export_certificate::{self, ExportRequest};
use crate::renew_certificate::{self, alert, RenewState};
use crate::{new_server, reconcile};

/// Largest body accepted (SQS's own limit).
const MAX_BODY: usize = 256 * 1024;

/// Which kind of message a queue carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntakeKind {
    /// The intake queue: export requests from producers.
    #[default]
    Requests,
    /// The events queue: ACM's events, from the EventBridge rules only.
    Events,
}

/// Why an envelope on the intake queue is refused.
pub const EVENT_ON_REQUEST_QUEUE: &str = "ACM events are accepted only on the events queue, which only certflow's EventBridge rules may send to; this queue takes export requests";
/// Why an export request on the events queue is refused.
pub const REQUEST_ON_EVENTS_QUEUE: &str = "export requests are accepted only on the intake queue; the events queue takes ACM events from certflow's EventBridge rules";

/// How intake messages are read.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Event sources accepted as ACM (`aws.acm`, plus e.g. `custom.aws.acm` for tests
    /// that publish events themselves).
    pub sources: Vec<String>,
    /// What the queue read with this configuration carries.
    pub kind: IntakeKind,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig::requests()
    }
}

impl IntakeConfig {
    /// The intake queue's configuration: export requests.
    pub fn requests() -> Self {
        IntakeConfig {
            sources: vec![acm_event::ACM_SOURCE.to_string()],
            kind: IntakeKind::Requests,
        }
    }

    /// The events queue's configuration: ACM events from `sources`.
    pub fn events(sources: Vec<String>) -> Self {
        IntakeConfig {
            sources,
            kind: IntakeKind::Events,
        }
    }

    /// The parser the engine's intake loop calls.
    pub fn parser(self) -> engine::IntakeParser {
        std::sync::Arc::new(move |d: &Delivery| read(&self, d))
    }
}

/// Reads one intake message: a job to start ([`parse`]), or, on the events queue, SSM's
/// status change of a certflow install command, which wakes the job waiting for it.
pub fn read(config: &IntakeConfig, d: &Delivery) -> Result<Intent, String> {
    if config.kind == IntakeKind::Events && d.body.len() <= MAX_BODY {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&d.body) {
            if value.get("detail-type").and_then(|t| t.as_str()) == Some(COMMAND_STATUS_CHANGE) {
                return command_signal(config, &value).map(Intent::Wake);
            }
        }
    }
    parse(config, d).map(Intent::Start)
}

/// The wake-up an SSM command status event asks for: the job its `CertflowJob` parameter
/// names, at its `wait` step. A wake-up can only make a waiting job look now instead of
/// later, so a forged or stale one changes nothing but the time of a look.
fn command_signal(config: &IntakeConfig, v: &serde_json::Value) -> Result<Signal, String> {
    let source = v.get("source").and_then(|s| s.as_str()).unwrap_or("");
    if source != SSM_SOURCE && !config.sources.iter().any(|s| s == source) {
        return Err(format!(
            "event source {source:?} is not accepted for {COMMAND_STATUS_CHANGE} (accepted: {SSM_SOURCE}, {})",
            config.sources.join(", ")
        ));
    }
    let detail = v.get("detail").cloned().unwrap_or_default();
    let text = |name: &str| detail.get(name).and_then(|x| x.as_str()).unwrap_or("");
    let command = text("command-id");
    let status = text("status");
    let job = detail
        .get("parameters")
        .and_then(|p| p.get(JOB_PARAMETER))
        .and_then(|j| j.get(0).or(Some(j)))
        .and_then(|j| j.as_str())
        .unwrap_or("");
    if uuid::Uuid::parse_str(job).is_err() || job.len() != 36 {
        return Err(format!(
            "{COMMAND_STATUS_CHANGE} of command {:?} has no {JOB_PARAMETER} parameter naming a job: not a certflow install command (or one from a document before wake-ups)",
            command.chars().take(64).collect::<String>()
        ));
    }
    let printable = |s: &str| {
        s.chars()
            .take(64)
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    };
    Ok(Signal {
        job: engine::JobId::new(job.to_ascii_lowercase()),
        step: "wait".to_string(),
        reason: format!(
            "SSM command {} is {}",
            printable(command),
            printable(status)
        ),
    })
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
    let envelope = obj.contains_key("detail-type") || obj.contains_key("source");
    let new = match (config.kind, envelope) {
        (IntakeKind::Requests, true) => {
            let source = obj.get("source").and_then(|s| s.as_str()).unwrap_or("");
            return Err(format!(
                "an EventBridge envelope (source {source:?}): {EVENT_ON_REQUEST_QUEUE}"
            ));
        }
        (IntakeKind::Events, false) => return Err(REQUEST_ON_EVENTS_QUEUE.to_string()),
        (IntakeKind::Events, true) => {
            let detail = obj.get("detail").cloned().unwrap_or_default();
            let event: Envelope = serde_json::from_value(value)
                .map_err(|e| format!("not an EventBridge event: {e}"))?;
            event_job(config, &event, &detail)?
        }
        (IntakeKind::Requests, false) => {
            let request: ExportRequest =
                serde_json::from_value(value).map_err(|e| format!("not an export request: {e}"))?;
            export_certificate::new_job(request, &d.message_id).map_err(|e| e.to_string())?
        }
    };
    Ok(match &d.sender_id {
        Some(sender) => new.label(schema::SENDER_ID_LABEL, sender.clone()),
        None => new,
    })
}

fn event_job(
    config: &IntakeConfig,
    e: &Envelope,
    detail: &serde_json::Value,
) -> Result<NewJob, String> {
    // EC2's and EventBridge's own sources need no configuring: only AWS can send events
    // with them, and only certflow's rules may send to this queue.
    let native = match e.detail_type.as_str() {
        SCHEDULED_EVENT => Some(SCHEDULED_SOURCE),
        EC2_STATE_CHANGE => Some(EC2_SOURCE),
        _ => None,
    };
    if native != Some(e.source.as_str()) && !config.sources.iter().any(|s| s == &e.source) {
        return Err(format!(
            "event source {:?} is not accepted (accepted: {}{})",
            e.source,
            config.sources.join(", "),
            native.map(|n| format!(", {n}")).unwrap_or_default()
        ));
    }
    if e.id.trim().is_empty() {
        return Err("event has an empty id".into());
    }
    match e.detail_type.as_str() {
        SCHEDULED_EVENT => {
            return reconcile::new_job(&format!("schedule {}", e.id), Some(&e.id))
                .map_err(|err| err.to_string())
        }
        EC2_STATE_CHANGE => return new_server_job(e, detail),
        _ => {}
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
                ..RenewState::default()
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
        other => Err(format!("unknown event type {other:?}; certflow acts on ACM certificate events, EC2 instance state changes and its reconcile schedule")),
    }
}

/// A `new-server` job for EC2's `running` event; other states are refused (the rule
/// sends only `running`).
fn new_server_job(e: &Envelope, detail: &serde_json::Value) -> Result<NewJob, String> {
    let field = |name: &str| detail.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let instance = field("instance-id");
    let state = field("state");
    if state != "running" {
        return Err(format!(
            "EC2 event {} is about state {state:?}; certflow acts on \"running\" only",
            e.id
        ));
    }
    let valid = (instance.starts_with("i-") || instance.starts_with("mi-"))
        && instance.len() <= 32
        && instance[instance.find('-').map_or(0, |i| i + 1)..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
        && !instance.ends_with('-');
    if !valid {
        return Err(format!(
            "EC2 event {} has no valid detail.instance-id (got {:?})",
            e.id,
            instance.chars().take(40).collect::<String>()
        ));
    }
    new_server::new_job(instance, &e.id, e.time.clone()).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests;
