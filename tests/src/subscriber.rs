//! A subscriber to certflow's outcome events, as a user makes one (docs/events.md,
//! *Subscribing*): an SQS queue, and an EventBridge rule on the default bus with a pattern
//! that sends it the events it wants. Like the rest of this crate it runs only in tests:
//! a call that fails panics, which fails the test that asked for it.

use std::time::Duration;

use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};

use crate::unique;

/// A queue receiving the events a rule matches.
pub struct Subscriber {
    sdk: aws_config::SdkConfig,
    /// The queue's URL.
    pub url: String,
    /// The rule's name.
    pub rule: String,
}

impl Subscriber {
    /// A queue and a rule on the default bus with `pattern`.
    pub async fn new(sdk: &aws_config::SdkConfig, pattern: Value) -> Subscriber {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let url = sqs
            .create_queue()
            .queue_name(unique("notify-sub"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let eb = aws_sdk_eventbridge::Client::new(sdk);
        let rule = unique("notify-rule");
        eb.put_rule()
            .name(&rule)
            .event_pattern(pattern.to_string())
            .state(RuleState::Enabled)
            .send()
            .await
            .unwrap();
        eb.put_targets()
            .rule(&rule)
            .targets(Target::builder().id("q").arn(queue_arn).build().unwrap())
            .send()
            .await
            .unwrap();
        Subscriber {
            sdk: sdk.clone(),
            url,
            rule,
        }
    }

    /// certflow's events of `detail_types` about certificate `arn`.
    pub async fn certificate(
        sdk: &aws_config::SdkConfig,
        detail_types: &[&str],
        arn: &str,
    ) -> Subscriber {
        let pattern = json!({
            "source": [workflows::notify::SOURCE],
            "detail-type": detail_types,
            "detail": { "CertificateArn": [arn] }
        });
        Subscriber::new(sdk, pattern).await
    }

    /// Receives (and deletes) messages until `want` arrived or `within` passed; returns
    /// the envelopes.
    pub async fn receive(&self, want: usize, within: Duration) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + within;
        while got.len() < want && tokio::time::Instant::now() < until {
            let out = sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                got.push(serde_json::from_str(m.body().unwrap()).unwrap());
                sqs.delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        got
    }

    /// Removes the rule (other tests' events stop matching it).
    pub async fn close(self) {
        let eb = aws_sdk_eventbridge::Client::new(&self.sdk);
        eb.remove_targets()
            .rule(&self.rule)
            .ids("q")
            .send()
            .await
            .unwrap();
        eb.delete_rule().name(&self.rule).send().await.unwrap();
    }
}
