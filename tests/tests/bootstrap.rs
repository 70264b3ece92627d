//! `certflow bootstrap` (the built binary) on the emulator: the five EventBridge rules —
//! renewal, attention, new-servers (EC2 instances entering `running`) and reconcile (a
//! schedule) — exist with the code's patterns and schedule, each targeting the events
//! queue, whose policy admits exactly those five rules; run again with another schedule,
//! the reconcile rule follows it; a malformed schedule is refused before anything is made.
//!
//! The binary is the one `cargo build --workspace --bins` put next to this test's
//! executable (`deploy/local/test.sh` builds it before the tests).

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use certflow_tests::certflow::certflow_bin;
use certflow_tests::{emulator, unique};
use serde_json::{json, Value};
use workflows::events::{self, RuleSettings, Schedule, Trigger};

/// What a command printed and how it exited.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The names one bootstrap creates, unique to this test.
struct Names {
    prefix: String,
    events_queue: String,
    source: String,
    vars: Vec<(&'static str, String)>,
}

impl Names {
    fn new() -> Names {
        let prefix = unique("boot");
        let events_queue = format!("{prefix}-events");
        let source = format!("custom.aws.acm.{}", unique("t"));
        let vars = vec![
            ("CERTFLOW_JOBS_TABLE", format!("{prefix}-jobs")),
            ("CERTFLOW_TASKS_QUEUE", format!("{prefix}-tasks")),
            ("CERTFLOW_INTAKE_QUEUE", format!("{prefix}-intake")),
            ("CERTFLOW_EVENTS_QUEUE", events_queue.clone()),
            ("CERTFLOW_INVENTORY_TABLE", format!("{prefix}-inventory")),
            ("CERTFLOW_DOCUMENT_NAME", unique("Install-ACMCertificate")),
            ("CERTFLOW_RULE_PREFIX", prefix.clone()),
            ("CERTFLOW_EVENT_SOURCES", format!("aws.acm,{source}")),
        ];
        Names {
            prefix,
            events_queue,
            source,
            vars,
        }
    }

    /// `certflow bootstrap -o json ARGS` with these names, nothing else from the test's
    /// environment but the emulator's endpoint and credentials.
    async fn bootstrap(&self, args: &[&str]) -> Out {
        let mut cmd = tokio::process::Command::new(certflow_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("CERTFLOW_") || k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_REGION", "us-east-1")
            .envs(self.vars.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["bootstrap", "-o", "json"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("bootstrap did not finish")
            .expect("run certflow bootstrap");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn settings(&self, schedule: &str) -> RuleSettings {
        let mut s = RuleSettings::new(&self.prefix, vec!["aws.acm".into(), self.source.clone()]);
        s.reconcile_schedule = schedule.parse().unwrap();
        s.document_name = self.var("CERTFLOW_DOCUMENT_NAME");
        s
    }

    fn var(&self, name: &str) -> String {
        self.vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// The events queue's ARN and the rule ARNs its policy lets send (Allow) and does not
/// deny (Deny's exception).
async fn events_queue(sdk: &aws_config::SdkConfig, name: &str) -> (String, Value, Value) {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let policy: Value = serde_json::from_str(&attrs[&QueueAttributeName::Policy]).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    (
        attrs[&QueueAttributeName::QueueArn].clone(),
        statements[0]["Condition"]["ArnEquals"]["aws:SourceArn"].clone(),
        statements[1]["Condition"]["ArnNotEquals"]["aws:SourceArn"].clone(),
    )
}

/// Checks that every rule of `settings` exists as the code defines it, targeting the events
/// queue and only it, and that the queue's policy admits exactly their ARNs.
async fn rules_are_the_codes(sdk: &aws_config::SdkConfig, names: &Names, settings: &RuleSettings) {
    let eb = aws_sdk_eventbridge::Client::new(sdk);
    let (queue_arn, allowed, not_denied) = events_queue(sdk, &names.events_queue).await;
    let mut arns = Vec::new();
    for spec in events::rules(settings) {
        let got = eb.describe_rule().name(&spec.name).send().await.unwrap();
        assert_eq!(
            got.state().map(|s| s.as_str()),
            Some("ENABLED"),
            "{}",
            spec.name
        );
        match &spec.trigger {
            Trigger::Pattern(pattern) => {
                let deployed: Value = serde_json::from_str(got.event_pattern().unwrap()).unwrap();
                assert_eq!(&deployed, pattern, "{}", spec.name);
                assert_eq!(got.schedule_expression(), None, "{}", spec.name);
            }
            Trigger::Schedule(schedule) => {
                assert_eq!(
                    got.schedule_expression(),
                    Some(schedule.as_str()),
                    "{}",
                    spec.name
                );
                assert_eq!(got.event_pattern(), None, "{}", spec.name);
            }
        }
        let targets = eb
            .list_targets_by_rule()
            .rule(&spec.name)
            .send()
            .await
            .unwrap();
        let targets: Vec<(&str, &str)> = targets
            .targets()
            .iter()
            .map(|t| (t.id(), t.arn()))
            .collect();
        assert_eq!(
            targets,
            [(events::TARGET_ID, queue_arn.as_str())],
            "{}",
            spec.name
        );
        arns.push(got.arn().unwrap().to_string());
    }
    assert_eq!(arns.len(), 5);
    assert_eq!(allowed, json!(arns), "the Allow names the five rules");
    assert_eq!(not_denied, json!(arns), "the Deny excepts the five rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_the_five_rules_and_follows_the_schedule() {
    let sdk = emulator().await;
    let names = Names::new();

    // The default schedule.
    let out = names.bootstrap(&[]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let ready: Value = serde_json::from_str(&out.stdout).unwrap();
    let rules: Vec<&Value> = ready
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["Kind"] == json!("rule"))
        .collect();
    assert_eq!(rules.len(), 5, "{ready:#}");
    assert!(
        rules[3]["Detail"]
            .as_str()
            .is_some_and(|d| d.starts_with(events::DEFAULT_RECONCILE_SCHEDULE)),
        "{ready:#}"
    );
    rules_are_the_codes(
        &sdk,
        &names,
        &names.settings(events::DEFAULT_RECONCILE_SCHEDULE),
    )
    .await;

    // Again, with a schedule of one's own (the environment variable, as the stack's
    // operators would set it): the rule follows, the rest stays.
    let mut again = names;
    again
        .vars
        .push(("CERTFLOW_RECONCILE_SCHEDULE", "cron(0 */2 * * ? *)".into()));
    let out = again.bootstrap(&[]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    rules_are_the_codes(&sdk, &again, &again.settings("cron(0 */2 * * ? *)")).await;
    let out = again
        .bootstrap(&["--reconcile-schedule", "rate(30 minutes)"])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    rules_are_the_codes(&sdk, &again, &again.settings("rate(30 minutes)")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_schedule_is_refused_before_anything_is_made() {
    let sdk = emulator().await;
    let names = Names::new();
    let out = names
        .bootstrap(&["--reconcile-schedule", "rate(1 hours)"])
        .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("write rate(1 hour)"),
        "the error says what would do: {}",
        out.stderr
    );
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    let err = eb
        .describe_rule()
        .name(format!("{}-reconcile", names.prefix))
        .send()
        .await;
    assert!(err.is_err(), "no rule was made: {err:?}");
    // The schedule is checked as the code checks it.
    assert!("rate(1 hours)".parse::<Schedule>().is_err());
}
