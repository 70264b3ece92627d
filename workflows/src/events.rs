//! The EventBridge rules that bring ACM's events to the intake queue, and the queue policy
//! that lets EventBridge (and only those rules) send to it.

use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::acm_event;

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

/// Creates (or updates) the rules `<prefix>-renewal` and `<prefix>-attention` targeting the
/// intake queue, and sets the queue policy. Returns the rule ARNs.
pub async fn ensure_rules(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    intake_url: &str,
    prefix: &str,
    sources: &[String],
) -> Result<Vec<String>, RulesError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(intake_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| RulesError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
    let queue_arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| RulesError::Sqs("intake queue has no ARN".into()))?;
    let mut arns = Vec::new();
    for (suffix, pattern) in patterns(sources) {
        let name = format!("{prefix}-{suffix}");
        let rule = events
            .put_rule()
            .name(&name)
            .event_pattern(pattern.to_string())
            .state(RuleState::Enabled)
            .description("certflow: ACM certificate events to the intake queue")
            .send()
            .await
            .map_err(|e| {
                RulesError::EventBridge(
                    aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        let target = Target::builder()
            .id("certflow-intake")
            .arn(&queue_arn)
            .build()
            .map_err(|e| RulesError::EventBridge(e.to_string()))?;
        events
            .put_targets()
            .rule(&name)
            .targets(target)
            .send()
            .await
            .map_err(|e| {
                RulesError::EventBridge(
                    aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        arns.push(rule.rule_arn().unwrap_or_default().to_string());
    }
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "certflow-eventbridge",
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": arns } }
        }]
    });
    sqs.set_queue_attributes()
        .queue_url(intake_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| RulesError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
    Ok(arns)
}
