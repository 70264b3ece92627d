//! Turning an intake message into a job.
//!
//! A message that is not an export request at all (not JSON, wrong shape, missing or
//! mistyped fields) cannot become a job: it goes to the intake DLQ with the reason. A
//! well-formed request with a bad field value becomes a job that fails at its first step
//! naming the field, before any AWS call — so operators see it in `certflow jobs list`.

use engine::{Delivery, NewJob};

use crate::export_certificate::{self, ExportRequest};

/// Largest body accepted (SQS's own limit).
const MAX_BODY: usize = 256 * 1024;

/// Parses one intake message.
pub fn parse(d: &Delivery) -> Result<NewJob, String> {
    if d.body.len() > MAX_BODY {
        return Err(format!(
            "body is {} bytes; the limit is {MAX_BODY}",
            d.body.len()
        ));
    }
    if d.body.trim().is_empty() {
        return Err("body is empty; expected an export request (JSON object)".into());
    }
    let value: serde_json::Value =
        serde_json::from_str(&d.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("body is not a JSON object; expected an export request".into());
    };
    if obj.contains_key("detail-type") {
        return Err("EventBridge events are not accepted on this queue yet".into());
    }
    let request: ExportRequest =
        serde_json::from_value(value).map_err(|e| format!("not an export request: {e}"))?;
    export_certificate::new_job(request, &d.message_id).map_err(|e| e.to_string())
}
