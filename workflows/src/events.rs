//! The EventBridge rules that bring events to the events queue, and the queue policy that
//! lets those rules, and nobody else, send to it: an Allow for EventBridge on behalf of the
//! rules, and an explicit Deny of `sqs:SendMessage` for every other principal, so that no
//! identity policy in the account (`sqs:*` on `*`) can forge an event.
//!
//! Five rules, all on the default bus and all targeting the events queue:
//!
//! - `<prefix>-renewal`: ACM renewed a certificate (export it again);
//! - `<prefix>-attention`: ACM events that need a person;
//! - `<prefix>-reconcile`: a schedule ([`Schedule`], default [`DEFAULT_RECONCILE_SCHEDULE`])
//!   that starts the reconcile, which converges the inventory on what ACM and the servers
//!   hold;
//! - `<prefix>-new-servers`: an EC2 instance entered `running`, so that a server that joins
//!   a target tag gets its certificate without waiting for the next schedule;
//! - `<prefix>-commands`: SSM's status change of an install command that ended, which
//!   wakes the job waiting for it (its `CertflowJob` parameter names the job), so that a
//!   batch's end is seen at once instead of at the next poll.

use std::fmt;
use std::str::FromStr;

use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::acm_event;

/// The id of each rule's target, the events queue.
pub const TARGET_ID: &str = "certflow-events";
/// The id the rules' target had when it was the intake queue; `ensure_rules` removes it.
const OLD_TARGET_ID: &str = "certflow-intake";

/// The `detail-type` of EC2's instance state changes; `<prefix>-new-servers` matches the
/// ones whose `detail.state` is `running`.
pub const EC2_STATE_CHANGE: &str = "EC2 Instance State-change Notification";
/// The `detail-type` of the events a scheduled rule (`<prefix>-reconcile`) sends.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
/// The source of EC2's events.
pub const EC2_SOURCE: &str = "aws.ec2";
/// The source of the events a scheduled rule sends (their `resources` hold the rule's ARN).
pub const SCHEDULED_SOURCE: &str = "aws.events";
/// The `detail-type` of SSM's Run Command status changes, one per command when it ends;
/// `<prefix>-commands` matches those of the install document.
pub const COMMAND_STATUS_CHANGE: &str = "EC2 Command Status-change Notification";
/// The source of SSM's events.
pub const SSM_SOURCE: &str = "aws.ssm";
/// The command statuses that end a command (what `<prefix>-commands` sends).
pub const FINAL_COMMAND_STATUSES: &[&str] = &["Success", "Failed", "TimedOut", "Cancelled"];
/// How often the reconcile runs unless `--reconcile-schedule` says otherwise: often enough
/// that drift is found the same day, seldom enough that reading every inventory row and
/// describing every certificate stays cheap.
pub const DEFAULT_RECONCILE_SCHEDULE: &str = "rate(6 hours)";

/// The suffix of each rule's name (`<prefix>-<suffix>`).
pub mod suffix {
    /// ACM renewed a certificate.
    pub const RENEWAL: &str = "renewal";
    /// ACM events that need a person.
    pub const ATTENTION: &str = "attention";
    /// The reconcile's schedule.
    pub const RECONCILE: &str = "reconcile";
    /// EC2 instances entering `running`.
    pub const NEW_SERVERS: &str = "new-servers";
    /// Install commands that ended.
    pub const COMMANDS: &str = "commands";
}

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

/// Why a schedule expression was refused: EventBridge would refuse it too, but only once
/// `bootstrap` has created everything else, and with less to go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Neither `rate(...)` nor `cron(...)`.
    #[error("{0:?} is not a schedule: give rate(<n> <unit>) (e.g. rate(6 hours)) or cron(<minutes> <hours> <day-of-month> <month> <day-of-week> <year>) (e.g. cron(0 */6 * * ? *))")]
    Shape(String),
    /// A `rate(...)` that is not a positive count and a unit.
    #[error("{0:?}: a rate is rate(<n> <unit>) with n a whole number from 1 and unit minute(s), hour(s) or day(s) (e.g. rate(6 hours))")]
    Rate(String),
    /// `rate(1 hours)` or `rate(5 hour)`: EventBridge wants the singular for 1 only.
    #[error("{given:?}: write rate({want}) (the unit is singular for 1, plural otherwise)")]
    RateUnit {
        /// The expression given.
        given: String,
        /// The expression EventBridge accepts.
        want: String,
    },
    /// A `cron(...)` without six fields, or with characters a cron field cannot hold.
    #[error("{0:?}: a cron expression has six fields separated by spaces, minutes hours day-of-month month day-of-week year, each made of digits, names (JAN, MON), and , - * ? / L W # (e.g. cron(0 */6 * * ? *))")]
    Cron(String),
    /// Day-of-month and day-of-week both set, or both `?`.
    #[error("{0:?}: exactly one of day-of-month (3rd field) and day-of-week (5th field) must be ? (e.g. cron(0 6 * * ? *) or cron(0 6 ? * MON *))")]
    CronDay(String),
}

/// A rule's schedule expression, `rate(...)` or `cron(...)`, whose shape is checked when it
/// is parsed: a mistake is reported when the setting is read, naming what EventBridge
/// accepts, not as EventBridge's `Parameter ScheduleExpression is not valid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(String);

impl Schedule {
    /// The expression, as EventBridge takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule(DEFAULT_RECONCILE_SCHEDULE.to_string())
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let given = s.trim();
        if let Some(inner) = given
            .strip_prefix("rate(")
            .and_then(|r| r.strip_suffix(')'))
        {
            check_rate(given, inner)?;
        } else if let Some(inner) = given
            .strip_prefix("cron(")
            .and_then(|r| r.strip_suffix(')'))
        {
            check_cron(given, inner)?;
        } else {
            return Err(ScheduleError::Shape(s.to_string()));
        }
        Ok(Schedule(given.to_string()))
    }
}

/// `<n> <unit>`: n from 1, the unit singular for 1 and plural otherwise.
fn check_rate(given: &str, inner: &str) -> Result<(), ScheduleError> {
    let bad = || ScheduleError::Rate(given.to_string());
    let (count, unit) = inner.split_once(' ').ok_or_else(bad)?;
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) || count.starts_with('0') {
        return Err(bad());
    }
    let singular = unit.strip_suffix('s').unwrap_or(unit);
    if !["minute", "hour", "day"].contains(&singular) {
        return Err(bad());
    }
    let want = if count == "1" {
        singular.to_string()
    } else {
        format!("{singular}s")
    };
    if unit != want {
        return Err(ScheduleError::RateUnit {
            given: given.to_string(),
            want: format!("{count} {want}"),
        });
    }
    Ok(())
}

/// Six fields of cron characters; exactly one of day-of-month and day-of-week is `?`.
fn check_cron(given: &str, inner: &str) -> Result<(), ScheduleError> {
    let fields: Vec<&str> = inner.split(' ').collect();
    let cron_char = |c: char| c.is_ascii_alphanumeric() || ",-*?/#".contains(c);
    if fields.len() != 6
        || fields
            .iter()
            .any(|f| f.is_empty() || !f.chars().all(cron_char))
    {
        return Err(ScheduleError::Cron(given.to_string()));
    }
    if (fields[2] == "?") == (fields[4] == "?") {
        return Err(ScheduleError::CronDay(given.to_string()));
    }
    Ok(())
}

/// What [`ensure_rules`] creates: the rules' names, the sources they match and the
/// reconcile's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSettings {
    /// Prefix of the rule names (`<prefix>-renewal`, …).
    pub prefix: String,
    /// Event sources the ACM rules match (`aws.acm`, plus e.g. `custom.aws.acm` to test with
    /// events you publish yourself); the new-servers rule matches them besides `aws.ec2`.
    pub sources: Vec<String>,
    /// When the reconcile runs.
    pub reconcile_schedule: Schedule,
    /// The install document whose commands' status changes wake their jobs.
    pub document_name: String,
}

impl RuleSettings {
    /// Rules named `<prefix>-…` matching `sources`, with the default reconcile schedule and
    /// install document name.
    pub fn new(prefix: impl Into<String>, sources: Vec<String>) -> Self {
        RuleSettings {
            prefix: prefix.into(),
            sources,
            reconcile_schedule: Schedule::default(),
            document_name: crate::document::DEFAULT_NAME.to_string(),
        }
    }
}

/// SSM's status changes of `document`'s commands that ended (from `aws.ssm` or one of
/// `sources`).
pub fn commands_pattern(sources: &[String], document: &str) -> serde_json::Value {
    let mut all = vec![SSM_SOURCE.to_string()];
    all.extend(sources.iter().filter(|s| *s != SSM_SOURCE).cloned());
    json!({
        "source": all,
        "detail-type": [COMMAND_STATUS_CHANGE],
        "detail": { "document-name": [document], "status": FINAL_COMMAND_STATUSES }
    })
}

/// The event patterns, by rule-name suffix: renewals, the ACM events that need a person,
/// and EC2 instances entering `running` (from `aws.ec2` or one of `sources`).
pub fn patterns(sources: &[String]) -> [(&'static str, serde_json::Value); 3] {
    [
        (
            suffix::RENEWAL,
            json!({
                "source": sources,
                "detail-type": [acm_event::CERTIFICATE_AVAILABLE],
                "detail": { "Action": ["RENEWAL"] }
            }),
        ),
        (
            suffix::ATTENTION,
            json!({
                "source": sources,
                "detail-type": [
                    acm_event::RENEWAL_ACTION_REQUIRED,
                    acm_event::APPROACHING_EXPIRATION,
                    acm_event::EXPIRED
                ]
            }),
        ),
        (suffix::NEW_SERVERS, new_servers_pattern(sources)),
    ]
}

/// `aws.ec2`'s state changes to `running`; `sources` are matched too, so that a test (or
/// a person) can start the same path with an event of their own.
fn new_servers_pattern(sources: &[String]) -> serde_json::Value {
    let mut all = vec![EC2_SOURCE.to_string()];
    all.extend(sources.iter().filter(|s| *s != EC2_SOURCE).cloned());
    json!({
        "source": all,
        "detail-type": [EC2_STATE_CHANGE],
        "detail": { "state": ["running"] }
    })
}

/// What starts a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Events matching this pattern.
    Pattern(serde_json::Value),
    /// A schedule.
    Schedule(Schedule),
}

/// One rule [`ensure_rules`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The rule's name, `<prefix>-<suffix>`.
    pub name: String,
    /// Its pattern or schedule.
    pub trigger: Trigger,
    /// Its description, saying what it brings to the events queue.
    pub description: &'static str,
}

/// Every rule, in the order [`ensure_rules`] creates them (and returns their ARNs):
/// renewal, attention, new-servers, reconcile, commands.
pub fn rules(settings: &RuleSettings) -> Vec<RuleSpec> {
    let mut out: Vec<RuleSpec> = patterns(&settings.sources)
        .into_iter()
        .map(|(end, pattern)| RuleSpec {
            name: format!("{}-{end}", settings.prefix),
            trigger: Trigger::Pattern(pattern),
            description: if end == suffix::NEW_SERVERS {
                "certflow: EC2 instances entering running to the events queue"
            } else {
                "certflow: ACM certificate events to the events queue"
            },
        })
        .collect();
    out.push(RuleSpec {
        name: format!("{}-{}", settings.prefix, suffix::RECONCILE),
        trigger: Trigger::Schedule(settings.reconcile_schedule.clone()),
        description: "certflow: the reconcile's schedule, to the events queue",
    });
    out.push(RuleSpec {
        name: format!("{}-{}", settings.prefix, suffix::COMMANDS),
        trigger: Trigger::Pattern(commands_pattern(&settings.sources, &settings.document_name)),
        description: "certflow: install commands that ended, to the events queue",
    });
    out
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

/// Creates (or updates) every rule of [`rules`] targeting the events queue, and sets the
/// queue's policy ([`queue_policy`]) to admit all of them. Returns the rule ARNs, in the
/// order of [`rules`].
pub async fn ensure_rules(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    events_url: &str,
    settings: &RuleSettings,
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
    for spec in rules(settings) {
        let name = spec.name;
        let put = events
            .put_rule()
            .name(&name)
            .state(RuleState::Enabled)
            .description(spec.description);
        let put = match &spec.trigger {
            Trigger::Pattern(pattern) => put.event_pattern(pattern.to_string()),
            Trigger::Schedule(schedule) => put.schedule_expression(schedule.as_str()),
        };
        let rule = put.send().await.map_err(eventbridge_error)?;
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

    #[test]
    fn rates_and_crons_of_the_right_shape_are_accepted() {
        for ok in [
            "rate(6 hours)",
            "rate(1 hour)",
            "rate(1 minute)",
            "rate(15 minutes)",
            "rate(1 day)",
            "rate(7 days)",
            "cron(0 */6 * * ? *)",
            "cron(0 6 ? * MON-FRI *)",
            "cron(15 10 ? * 6L 2030)",
            "cron(0/30 8-17 ? * MON#1 *)",
            "cron(0 12 L * ? *)",
        ] {
            let s: Schedule = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(s.as_str(), ok);
        }
        assert_eq!(Schedule::default().as_str(), DEFAULT_RECONCILE_SCHEDULE);
        assert_eq!(
            " rate(2 days) ".parse::<Schedule>().unwrap().as_str(),
            "rate(2 days)"
        );
    }

    #[test]
    fn a_malformed_schedule_is_refused_saying_what_would_do() {
        let err = |s: &str| s.parse::<Schedule>().unwrap_err();
        for shape in [
            "6h",
            "every 6 hours",
            "rate 6 hours",
            "at(2030-01-01T00:00:00)",
            "",
        ] {
            assert!(matches!(err(shape), ScheduleError::Shape(_)), "{shape}");
        }
        assert!(err("6h").to_string().contains("rate(6 hours)"));
        for rate in [
            "rate(6)",
            "rate(hours)",
            "rate(0 hours)",
            "rate(-1 hours)",
            "rate(06 hours)",
            "rate(6 weeks)",
            "rate(6  hours)",
            "rate(1.5 hours)",
        ] {
            assert!(matches!(err(rate), ScheduleError::Rate(_)), "{rate}");
        }
        assert_eq!(
            err("rate(1 hours)"),
            ScheduleError::RateUnit {
                given: "rate(1 hours)".into(),
                want: "1 hour".into()
            }
        );
        assert_eq!(
            err("rate(6 hour)").to_string(),
            "\"rate(6 hour)\": write rate(6 hours) (the unit is singular for 1, plural otherwise)"
        );
        for cron in [
            "cron(0 6 * * ?)",
            "cron(0 6 * * ? * *)",
            "cron(0 6 * * ? $(reboot))",
            "cron(0  6 * * ? *)",
        ] {
            assert!(matches!(err(cron), ScheduleError::Cron(_)), "{cron}");
        }
        for cron in ["cron(0 6 * * * *)", "cron(0 6 ? * ? *)"] {
            assert!(matches!(err(cron), ScheduleError::CronDay(_)), "{cron}");
        }
    }

    #[test]
    fn five_rules_the_acm_ones_unchanged() {
        let sources = vec!["aws.acm".to_string(), "custom.aws.acm".to_string()];
        let mut settings = RuleSettings::new("cf", sources.clone());
        settings.reconcile_schedule = "cron(0 6 * * ? *)".parse().unwrap();
        let rules = rules(&settings);
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cf-renewal",
                "cf-attention",
                "cf-new-servers",
                "cf-reconcile",
                "cf-commands"
            ]
        );
        assert_eq!(
            rules[0].trigger,
            Trigger::Pattern(json!({
                "source": ["aws.acm", "custom.aws.acm"],
                "detail-type": ["ACM Certificate Available"],
                "detail": { "Action": ["RENEWAL"] }
            }))
        );
        assert_eq!(
            rules[1].trigger,
            Trigger::Pattern(json!({
                "source": ["aws.acm", "custom.aws.acm"],
                "detail-type": [
                    "ACM Certificate Renewal Action Required",
                    "ACM Certificate Approaching Expiration",
                    "ACM Certificate Expired"
                ]
            }))
        );
        assert_eq!(
            rules[2].trigger,
            Trigger::Pattern(json!({
                "source": ["aws.ec2", "aws.acm", "custom.aws.acm"],
                "detail-type": ["EC2 Instance State-change Notification"],
                "detail": { "state": ["running"] }
            }))
        );
        assert_eq!(
            rules[3].trigger,
            Trigger::Schedule("cron(0 6 * * ? *)".parse().unwrap())
        );
        assert_eq!(
            rules[4].trigger,
            Trigger::Pattern(json!({
                "source": ["aws.ssm", "aws.acm", "custom.aws.acm"],
                "detail-type": ["EC2 Command Status-change Notification"],
                "detail": {
                    "document-name": ["Install-ACMCertificate"],
                    "status": ["Success", "Failed", "TimedOut", "Cancelled"]
                }
            }))
        );
        // aws.ec2 (aws.ssm) among the sources is not listed twice.
        let with_ec2 = new_servers_pattern(&["aws.ec2".to_string()]);
        assert_eq!(with_ec2["source"], json!(["aws.ec2"]));
        let with_ssm = commands_pattern(&["aws.ssm".to_string()], "D");
        assert_eq!(with_ssm["source"], json!(["aws.ssm"]));
    }
}
