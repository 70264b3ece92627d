//! The EventBridge rules that bring ACM's events to the events queue, and the queue policy
//! that lets those rules, and nobody else, send to it: an Allow for EventBridge on behalf
//! of the rules, and an explicit Deny of `sqs:SendMessage` for every other principal, so
//! that no identity policy in the account (`sqs:*` on `*`) can forge an ACM event.

use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::acm_event;

/// The id of each rule's target, the events queue.
pub const TARGET_ID: &str = "certflow-events";
/// The id the rules' target had when it was the intake queue; `ensure_rules` removes it.
const OLD_TARGET_ID: &str = "certflow-intake";

/// Errors creating the rules.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// EventBridge refused.
    #[error("EventBridge: {0}")]
    EventBridge(String),
    /// SQS refused.
    #[error("SQS: {0}")]
    Sqs(String),
}

/// The event patterns: renewals, and the events that need a person.
pub fn patterns(sources: &[String]) -> [(&'static str, serde_json::Value); 2] {
    [
        (
            "renewal",
            json!({
                "source": sources,
                "detail-type": [acm_event::CERTIFICATE_AVAILABLE],
                "detail": { "Action": ["RENEWAL"] }
            }),
        ),
        (
            "attention",
            json!({
                "source": sources,
                "detail-type": [
                    acm_event::RENEWAL_ACTION_REQUIRED,
                    acm_event::APPROACHING_EXPIRATION,
                    acm_event::EXPIRED
                ]
            }),
        ),
    ]
}

/// The events queue's policy: EventBridge may send on behalf of `rule_arns`; every other
/// sender is denied, whatever its own permissions say.
pub fn queue_policy(queue_arn: &str, rule_arns: &[String]) -> serde_json::Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "certflow-eventbridge",
                "Effect": "Allow",
                "Principal": { "Service": "events.amazonaws.com" },
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": { "ArnEquals": { "aws:SourceArn": rule_arns } }
            },
            {
                // A request without a source ARN (any IAM user or role) does not match
                // ArnNotEquals' values, so the Deny applies to it.
                "Sid": "certflow-only-the-rules",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": { "ArnNotEquals": { "aws:SourceArn": rule_arns } }
            }
        ]
    })
}

/// Creates (or updates) the rules `<prefix>-renewal` and `<prefix>-attention` targeting the
/// events queue, and sets the queue's policy ([`queue_policy`]). Returns the rule ARNs.
pub async fn ensure_rules(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    events_url: &str,
    prefix: &str,
    sources: &[String],
) -> Result<Vec<String>, RulesError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(events_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| RulesError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
    let queue_arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| RulesError::Sqs("events queue has no ARN".into()))?;
    let mut arns = Vec::new();
    for (suffix, pattern) in patterns(sources) {
        let name = format!("{prefix}-{suffix}");
        let rule = events
            .put_rule()
            .name(&name)
            .event_pattern(pattern.to_string())
            .state(RuleState::Enabled)
            .description("certflow: ACM certificate events to the events queue")
            .send()
            .await
            .map_err(eventbridge_error)?;
        let target = Target::builder()
            .id(TARGET_ID)
            .arn(&queue_arn)
            .build()
            .map_err(|e| RulesError::EventBridge(e.to_string()))?;
        events
            .put_targets()
            .rule(&name)
            .targets(target)
            .send()
            .await
            .map_err(eventbridge_error)?;
        // Before the events queue, the rules targeted the intake queue: a rule bootstrapped
        // then still has that target, which would now dead-letter every event it sends.
        let old = events
            .list_targets_by_rule()
            .rule(&name)
            .send()
            .await
            .map_err(eventbridge_error)?;
        if old.targets().iter().any(|t| t.id() == OLD_TARGET_ID) {
            events
                .remove_targets()
                .rule(&name)
                .ids(OLD_TARGET_ID)
                .send()
                .await
                .map_err(eventbridge_error)?;
        }
        arns.push(rule.rule_arn().unwrap_or_default().to_string());
    }
    let policy = queue_policy(&queue_arn, &arns);
    sqs.set_queue_attributes()
        .queue_url(events_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| RulesError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
    Ok(arns)
}

/// An EventBridge call's error, with the service's whole context (code, message, cause).
fn eventbridge_error(e: impl std::error::Error) -> RulesError {
    RulesError::EventBridge(aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rules_may_send_and_everyone_else_is_denied() {
        let rules = vec!["arn:aws:events:us-east-1:123456789012:rule/certflow-renewal".to_string()];
        let p = queue_policy("arn:aws:sqs:us-east-1:123456789012:certflow-events", &rules);
        let statements = p["Statement"].as_array().cloned().unwrap_or_default();
        let allow = &statements[0];
        assert_eq!(allow["Effect"], "Allow");
        assert_eq!(allow["Principal"]["Service"], "events.amazonaws.com");
        assert_eq!(
            allow["Condition"]["ArnEquals"]["aws:SourceArn"],
            json!(rules)
        );
        let deny = &statements[1];
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(deny["Principal"], "*");
        assert_eq!(deny["Action"], "sqs:SendMessage");
        assert_eq!(
            deny["Condition"]["ArnNotEquals"]["aws:SourceArn"],
            json!(rules)
        );
    }
}
