//! Fault rules and their firing: which calls a [`Rule`] matches, when its [`Trigger`]
//! fires (every call, the n-th, the first n, or with a seeded probability), and how the
//! actions of the rules that fire combine into one [`Plan`] for the request.
//!
//! Every rule whose service and operation match a request counts it. Of the rules that
//! fire, the delays add up, the SSM rewrites all apply to the answer, and the first (in
//! the order added) of the other actions decides what happens to the request.
//! Probabilities draw from a per-rule RNG seeded from the proxy's seed and the rule's
//! position, so the same seed and the same sequence of calls inject the same faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lock;

/// When a matching rule fires.
#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    /// On every matching call.
    Always,
    /// On the n-th matching call only (1-based).
    Nth(u64),
    /// On the first n matching calls.
    FirstN(u64),
    /// On each matching call with this probability (0.0–1.0), from the seeded RNG.
    Probability(f64),
}

/// What a rule does to the request it fires on.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Answer with that service's throttling error, without forwarding: DynamoDB
    /// `ProvisionedThroughputExceededException` (400), SQS `RequestThrottled` (400, with
    /// `x-amzn-query-error`), other JSON services `ThrottlingException` (400), EC2
    /// `RequestLimitExceeded` (503, XML), other query services `Throttling` (400, XML).
    Throttle,
    /// Answer with this HTTP status (500, 503, …) and a plausible error body, without
    /// forwarding.
    Status(u16),
    /// Wait this long, then go on (forward, or whatever else fired). If the client gives
    /// up meanwhile (an attempt timeout), the request is never forwarded.
    Delay(Duration),
    /// Go on (forward, or whatever else fired), then wait this long before answering. If
    /// the client gives up meanwhile, the call has happened all the same.
    DelayAnswer(Duration),
    /// Drop the client's connection with a TCP RST without forwarding: the call never
    /// happened.
    ResetBeforeForward,
    /// Forward, read the whole answer, then drop the client's connection with a TCP RST
    /// without answering: the call happened, the caller saw a network error.
    ResetAfterForward,
    /// Rewrite an SSM `GetCommandInvocation`, `ListCommandInvocations` or `ListCommands`
    /// answer so that the invocation of `instance` (or of every instance when `None`) has
    /// this status (`Failed`, `TimedOut`, `InProgress`, `Cancelled`, `Success`, …);
    /// `ListCommands` gets a consistent command `Status`, `CompletedCount` and `ErrorCount`
    /// (the fleet recomputes them from its rewritten invocations).
    RewriteSsm {
        /// The instance whose invocation changes; `None` for all.
        instance: Option<String>,
        /// The new invocation status.
        status: String,
    },
    /// Put this text in `StandardOutputContent` of a `GetCommandInvocation` answer (and in
    /// the plugins' `Output` of `ListCommandInvocations`) for `instance` (or all).
    SetStdout {
        /// The instance whose output changes; `None` for all.
        instance: Option<String>,
        /// The standard output to report.
        stdout: String,
    },
    /// Forward the first request with this service, operation and body (JSON compared
    /// as values, not bytes) and keep its answer; answer every later such request with it,
    /// without forwarding. With a [`Action::Delay`] beside it, a client meets answers the
    /// upstream gave at the speed the delay says: a benchmark's reads at AWS's latency
    /// rather than an emulator's.
    Replay,
    /// Answer with this status and body without forwarding (content type JSON).
    Respond {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl Action {
    /// Whether the action decides the request's fate (as opposed to delaying it or
    /// rewriting its answer).
    fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Action::Delay(_)
                | Action::DelayAnswer(_)
                | Action::RewriteSsm { .. }
                | Action::SetStdout { .. }
        )
    }
}

/// A fault to inject on the requests it matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The service (credential scope name: `dynamodb`, `sqs`, `ssm`, `acm`,
    /// `secretsmanager`, `ec2`, …), case-insensitive; `*` matches every service.
    pub service: String,
    /// The operation (`PutItem`, `SendMessage`, …), case-insensitive; `None` for all.
    pub operation: Option<String>,
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// A rule on `service` (and `operation`, or every operation when `None`).
    pub fn new(service: &str, operation: Option<&str>, trigger: Trigger, action: Action) -> Rule {
        Rule {
            service: service.to_string(),
            operation: operation.map(str::to_string),
            trigger,
            action,
        }
    }

    fn matches(&self, service: &str, operation: &str) -> bool {
        let service_ok = self.service == "*" || self.service.eq_ignore_ascii_case(service);
        let op_ok = self
            .operation
            .as_deref()
            .is_none_or(|o| o == "*" || o.eq_ignore_ascii_case(operation));
        // The SSM rewrites only count the calls whose answers they can rewrite.
        let applicable = match &self.action {
            Action::RewriteSsm { .. } => matches!(
                operation,
                "GetCommandInvocation" | "ListCommandInvocations" | "ListCommands"
            ),
            Action::SetStdout { .. } => {
                matches!(operation, "GetCommandInvocation" | "ListCommandInvocations")
            }
            _ => true,
        };
        service_ok && op_ok && applicable
    }
}

/// Identifies a rule added with [`FaultProxy::add_rule`](super::FaultProxy::add_rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// A rule as the proxy holds it: how many calls it matched, and its own RNG.
struct RuleState {
    id: RuleId,
    rule: Rule,
    matched: u64,
    rng: StdRng,
}

/// The rules of one proxy, in the order they were added.
pub(super) struct Faults {
    seed: u64,
    next_rule: AtomicU64,
    rules: Mutex<Vec<RuleState>>,
}

/// What the rules that fired on one request make of it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// Wait this long before going on ([`Action::Delay`]s, summed).
    pub(super) delay: Duration,
    /// Wait this long before answering ([`Action::DelayAnswer`]s, summed).
    pub(super) answer_delay: Duration,
    /// The action that decides the request's fate, if any fired; else it is forwarded.
    pub(super) terminal: Option<Action>,
    /// The SSM rewrites to apply to the answer.
    pub(super) transforms: Vec<Action>,
    /// Every action that fired, in rule order (what the call log records).
    pub(super) injected: Vec<Action>,
}

impl Faults {
    /// No rules yet; `seed` seeds every rule's RNG (with the rule's position).
    pub(super) fn new(seed: u64) -> Faults {
        Faults {
            seed,
            next_rule: AtomicU64::new(0),
            rules: Mutex::new(Vec::new()),
        }
    }

    /// Adds a rule after the existing ones.
    pub(super) fn add(&self, rule: Rule) -> RuleId {
        let n = self.next_rule.fetch_add(1, Ordering::SeqCst);
        let id = RuleId(n);
        let seed = self
            .seed
            .wrapping_add((n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        lock(&self.rules).push(RuleState {
            id,
            rule,
            matched: 0,
            rng: StdRng::seed_from_u64(seed),
        });
        id
    }

    /// Removes one rule; true if it was there.
    pub(super) fn remove(&self, id: RuleId) -> bool {
        let mut rules = lock(&self.rules);
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    /// Removes every rule.
    pub(super) fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// Runs the rules over one call of `service` and `operation`. `number` is called under
    /// the rules' lock, so that the order in which calls are numbered is the order of the
    /// draws; returns its number and the plan.
    pub(super) fn fire(
        &self,
        service: &str,
        operation: &str,
        number: impl FnOnce() -> u64,
    ) -> (u64, Plan) {
        let mut plan = Plan::default();
        let mut rules = lock(&self.rules);
        for r in rules.iter_mut() {
            if !r.rule.matches(service, operation) {
                continue;
            }
            r.matched += 1;
            let fired = match r.rule.trigger {
                Trigger::Always => true,
                Trigger::Nth(n) => r.matched == n,
                Trigger::FirstN(n) => r.matched <= n,
                Trigger::Probability(p) => {
                    // Always draw, so one rule's sequence does not depend on the others.
                    let x: f64 = r.rng.random();
                    x < p
                }
            };
            if !fired {
                continue;
            }
            match &r.rule.action {
                Action::Delay(d) => {
                    plan.delay = plan.delay.saturating_add(*d);
                    plan.injected.push(r.rule.action.clone());
                }
                Action::DelayAnswer(d) => {
                    plan.answer_delay = plan.answer_delay.saturating_add(*d);
                    plan.injected.push(r.rule.action.clone());
                }
                Action::RewriteSsm { .. } | Action::SetStdout { .. } => {
                    plan.transforms.push(r.rule.action.clone());
                    plan.injected.push(r.rule.action.clone());
                }
                a if a.is_terminal() && plan.terminal.is_none() => {
                    plan.terminal = Some(a.clone());
                    plan.injected.push(a.clone());
                }
                _ => {}
            }
        }
        let seq = number();
        drop(rules);
        (seq, plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `n` calls of `service`/`operation` a proxy with these rules injects into.
    fn fired(faults: &Faults, service: &str, operation: &str, n: u64) -> Vec<bool> {
        (1..=n)
            .map(|i| !faults.fire(service, operation, || i).1.injected.is_empty())
            .collect()
    }

    fn throttle(trigger: Trigger) -> Rule {
        Rule::new("dynamodb", Some("PutItem"), trigger, Action::Throttle)
    }

    #[test]
    fn nth_fires_once_and_first_n_fires_on_the_first_n() {
        let f = Faults::new(1);
        f.add(throttle(Trigger::Nth(3)));
        assert_eq!(
            fired(&f, "dynamodb", "PutItem", 5),
            [false, false, true, false, false]
        );
        let f = Faults::new(1);
        f.add(throttle(Trigger::FirstN(2)));
        assert_eq!(
            fired(&f, "dynamodb", "PutItem", 4),
            [true, true, false, false]
        );
        let f = Faults::new(1);
        f.add(throttle(Trigger::Always));
        assert_eq!(fired(&f, "DynamoDB", "putitem", 2), [true, true]);
    }

    #[test]
    fn only_matching_calls_count() {
        let f = Faults::new(1);
        f.add(throttle(Trigger::Nth(2)));
        assert!(fired(&f, "dynamodb", "GetItem", 3).iter().all(|x| !x));
        assert!(fired(&f, "sqs", "PutItem", 3).iter().all(|x| !x));
        assert_eq!(fired(&f, "dynamodb", "PutItem", 2), [false, true]);
        // An SSM rewrite counts only the calls whose answers it can rewrite.
        let f = Faults::new(1);
        f.add(Rule::new(
            "ssm",
            None,
            Trigger::Nth(1),
            Action::SetStdout {
                instance: None,
                stdout: "x".into(),
            },
        ));
        assert_eq!(fired(&f, "ssm", "SendCommand", 2), [false, false]);
        assert_eq!(fired(&f, "ssm", "GetCommandInvocation", 2), [true, false]);
    }

    #[test]
    fn probabilities_repeat_with_the_seed_and_do_not_depend_on_other_rules() {
        // A throttle with p = 0.3, after a rule (a zero delay, which never decides the
        // request's fate) that fires with probability `other`.
        let draws = |seed: u64, other: Option<f64>| {
            let f = Faults::new(seed);
            if let Some(p) = other {
                f.add(Rule::new(
                    "*",
                    None,
                    Trigger::Probability(p),
                    Action::Delay(Duration::ZERO),
                ));
            }
            f.add(throttle(Trigger::Probability(0.3)));
            (1..=200)
                .map(|i| {
                    f.fire("dynamodb", "PutItem", || i)
                        .1
                        .injected
                        .contains(&Action::Throttle)
                })
                .collect::<Vec<bool>>()
        };
        assert_eq!(draws(7, None), draws(7, None));
        assert_ne!(draws(7, None), draws(8, None));
        let hits = draws(7, None).iter().filter(|x| **x).count();
        assert!((30..=90).contains(&hits), "{hits} of 200 at p = 0.3");
        // Each rule draws from its own RNG, seeded by its position: what the rule before
        // it draws does not change its sequence.
        assert_eq!(draws(7, Some(0.0)), draws(7, Some(0.9)));
    }

    #[test]
    fn delays_add_up_rewrites_all_apply_and_the_first_terminal_action_decides() {
        let f = Faults::new(1);
        let second = Duration::from_secs(1);
        f.add(Rule::new("*", None, Trigger::Always, Action::Delay(second)));
        f.add(Rule::new("*", None, Trigger::Always, Action::Status(500)));
        f.add(Rule::new("*", None, Trigger::Always, Action::Delay(second)));
        f.add(Rule::new("*", None, Trigger::Always, Action::Throttle));
        f.add(Rule::new(
            "*",
            None,
            Trigger::Always,
            Action::DelayAnswer(second),
        ));
        let (seq, plan) = f.fire("acm", "ExportCertificate", || 41);
        assert_eq!(seq, 41);
        assert_eq!(plan.delay, 2 * second);
        assert_eq!(plan.answer_delay, second);
        assert_eq!(plan.terminal, Some(Action::Status(500)));
        assert!(plan.transforms.is_empty());
        assert_eq!(
            plan.injected,
            [
                Action::Delay(second),
                Action::Status(500),
                Action::Delay(second),
                Action::DelayAnswer(second),
            ]
        );
    }

    #[test]
    fn removed_and_cleared_rules_no_longer_fire() {
        let f = Faults::new(1);
        let id = f.add(throttle(Trigger::Always));
        assert!(f.remove(id));
        assert!(!f.remove(id));
        assert_eq!(fired(&f, "dynamodb", "PutItem", 1), [false]);
        f.add(throttle(Trigger::Always));
        f.clear();
        assert_eq!(fired(&f, "dynamodb", "PutItem", 1), [false]);
    }
}
