//! The settings every command shares: resource names, AWS call behaviour, export
//! settings, and the worker service's own settings. Each flag also reads an environment
//! variable of the same meaning.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// Shortest lease and visibility the worker accepts: it heartbeats every third of the
/// shorter of the two, and a heartbeat needs about a second for its DynamoDB and SQS calls.
const MIN_LEASE_SECS: u64 = 3;
/// SQS refuses a receive that waits longer than this (its long-poll maximum).
const MAX_POLL_WAIT_SECS: u64 = 20;
/// The longest time one task may hold waits in-process: beyond a minute a slot and a lease are
/// held for nothing the queue could not do as well.
const MAX_HOLD_WAITS_MS: u64 = 60_000;

/// Names of the AWS resources certflow uses.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Resources (flags or environment variables)")]
pub(crate) struct Names {
    /// DynamoDB table holding job records and their history.
    #[arg(long, env = "CERTFLOW_JOBS_TABLE", default_value = engine::schema::DEFAULT_JOBS_TABLE, global = true)]
    pub(crate) jobs_table: String,
    /// SQS queue carrying step tasks (its DLQ is this name + `-dlq`).
    #[arg(long, env = "CERTFLOW_TASKS_QUEUE", default_value = engine::schema::DEFAULT_TASKS_QUEUE, global = true)]
    pub(crate) tasks_queue: String,
    /// SQS queue producers send export requests to (its DLQ is this name + `-dlq`).
    #[arg(
        long,
        env = "CERTFLOW_INTAKE_QUEUE",
        default_value = engine::schema::DEFAULT_INTAKE_QUEUE,
        global = true
    )]
    pub(crate) intake_queue: String,
    /// SQS queue the EventBridge rules send ACM's events to, and nobody else (its DLQ is
    /// this name + `-dlq`).
    #[arg(
        long,
        env = "CERTFLOW_EVENTS_QUEUE",
        default_value = engine::schema::DEFAULT_EVENTS_QUEUE,
        global = true
    )]
    pub(crate) events_queue: String,
    /// DynamoDB table recording which certificate is installed where.
    #[arg(long, env = "CERTFLOW_INVENTORY_TABLE", default_value = workflows::inventory::DEFAULT_TABLE, global = true)]
    pub(crate) inventory_table: String,
    /// Event sources accepted as ACM events, comma-separated (add e.g. `custom.aws.acm` to
    /// test renewals with events you publish yourself).
    #[arg(
        long,
        env = "CERTFLOW_EVENT_SOURCES",
        default_value = "aws.acm",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) event_sources: Vec<String>,
    /// Prefix of the EventBridge rule names (`<prefix>-renewal`, `<prefix>-attention`,
    /// `<prefix>-new-servers`, `<prefix>-reconcile`).
    #[arg(
        long,
        env = "CERTFLOW_RULE_PREFIX",
        default_value = "certflow",
        global = true
    )]
    pub(crate) rule_prefix: String,
    /// The SSM Command document that installs certificates on servers.
    #[arg(
        long,
        env = "CERTFLOW_DOCUMENT_NAME",
        default_value = "Install-ACMCertificate",
        global = true
    )]
    pub(crate) document_name: String,
    /// The EventBridge bus certflow publishes its outcome events on (failed jobs and
    /// renewals, drift, expiring certificates, reconcile summaries; see docs/events.md): a
    /// name or an ARN, `default` for the account's default bus, `none` to publish nothing.
    #[arg(
        long,
        env = "CERTFLOW_EVENT_BUS",
        default_value = DEFAULT_EVENT_BUS,
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        global = true
    )]
    pub(crate) event_bus: String,
}

/// The bus certflow publishes on unless told otherwise: the one a rule (and the stack's
/// `AlertEmail`) listens on without further set-up.
pub(crate) const DEFAULT_EVENT_BUS: &str = "default";
/// The `--event-bus` value that turns notifications off.
pub(crate) const NO_EVENT_BUS: &str = "none";

impl Names {
    /// The bus to publish certflow's outcome events on, or `None` when `--event-bus` is
    /// `none` (in any case: a bus of that name cannot be chosen).
    pub(crate) fn notification_bus(&self) -> Option<&str> {
        let bus = self.event_bus.trim();
        (!bus.eq_ignore_ascii_case(NO_EVENT_BUS)).then_some(bus)
    }
}

/// How the AWS SDK retries and times out its calls (see "AWS calls: retries and timeouts"
/// in the README for why these defaults).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "AWS calls (flags or environment variables)")]
pub(crate) struct AwsArgs {
    /// Tries per AWS call, the first included; the SDK's standard variable.
    #[arg(long, env = "AWS_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub(crate) aws_max_attempts: u32,
    /// `standard` (exponential backoff with jitter, bounded by a retry quota) or `adaptive`
    /// (also rate-limits the client once throttled); the SDK's standard variable.
    #[arg(long, env = "AWS_RETRY_MODE", value_enum, ignore_case = true, default_value_t = RetryMode::Standard, global = true)]
    pub(crate) aws_retry_mode: RetryMode,
    /// Seconds to open a connection to an AWS endpoint.
    #[arg(long, env = "CERTFLOW_AWS_CONNECT_TIMEOUT_SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub(crate) aws_connect_timeout_secs: u64,
    /// Seconds one attempt of an AWS call may take before it is abandoned and retried (an
    /// SQS long poll gets at least its wait plus 10 s).
    #[arg(long, env = "CERTFLOW_AWS_ATTEMPT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub(crate) aws_attempt_timeout_secs: u64,
    /// Seconds one AWS call may take in all, retries included.
    #[arg(long, env = "CERTFLOW_AWS_OPERATION_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub(crate) aws_operation_timeout_secs: u64,
}

/// The SDK's retry modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RetryMode {
    /// Exponential backoff with jitter, bounded by a retry quota (`legacy`, which other
    /// AWS tools accept, means the same here).
    #[value(alias = "legacy")]
    Standard,
    /// Standard, plus a client-side rate limiter that slows every call once throttled.
    Adaptive,
}

/// Settings of the export workflow.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Export settings (flags or environment variables)")]
pub(crate) struct ExportArgs {
    /// Prefix of the secret names (`<prefix><CertName>/<TagKey>=<TagValue>`, one secret
    /// per target and name).
    #[arg(
        long,
        env = "CERTFLOW_SECRET_PREFIX",
        default_value = "certflow/",
        global = true
    )]
    pub(crate) secret_prefix: String,
    /// KMS key for the secrets (default: the account's aws/secretsmanager key).
    #[arg(long, env = "CERTFLOW_KMS_KEY_ID", global = true)]
    pub(crate) kms_key_id: Option<String>,
    /// Seconds a certificate may stay PENDING_VALIDATION before its job fails.
    #[arg(
        long,
        env = "CERTFLOW_VALIDATION_TIMEOUT_SECS",
        default_value_t = 7200,
        global = true
    )]
    pub(crate) validation_timeout_secs: u64,
    /// Seconds the install command may run before it is cancelled and the job fails.
    #[arg(
        long,
        env = "CERTFLOW_INSTALL_TIMEOUT_SECS",
        default_value_t = 1800,
        global = true
    )]
    pub(crate) install_timeout_secs: u64,
    /// Directory for certificate files on the servers (install document's CertDir).
    #[arg(long, env = "CERTFLOW_CERT_DIR", global = true)]
    pub(crate) cert_dir: Option<String>,
    /// Directory for private keys on the servers (install document's KeyDir).
    #[arg(long, env = "CERTFLOW_KEY_DIR", global = true)]
    pub(crate) key_dir: Option<String>,
    /// Service to reload on the servers after installing (e.g. nginx).
    #[arg(long, env = "CERTFLOW_RELOAD_SERVICE", global = true)]
    pub(crate) reload_service: Option<String>,
    /// Servers that install first, alone; every other server is sent the install only
    /// once they all succeeded (0: no canary). A request's Canary overrides it.
    #[arg(
        long,
        env = "CERTFLOW_INSTALL_CANARY",
        default_value_t = workflows::export_certificate::DEFAULT_CANARY,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(workflows::export_certificate::request::MAX_CANARY)),
        global = true
    )]
    pub(crate) install_canary: u32,
    /// Servers per batch after the canary (a count, or a percentage of the servers; at
    /// most 50, one SSM command). A request's MaxConcurrency overrides it.
    #[arg(
        long,
        env = "CERTFLOW_INSTALL_MAX_CONCURRENCY",
        default_value = workflows::export_certificate::DEFAULT_INSTALL_MAX_CONCURRENCY,
        value_parser = install_limit(workflows::export_certificate::valid_max_concurrency, "a count from 1 or a percentage 1%-100%"),
        global = true
    )]
    pub(crate) install_max_concurrency: String,
    /// Failed servers tolerated before the rollout stops (a count, or a percentage of the
    /// servers; 0 stops at the first failure). A request's MaxErrors overrides it.
    #[arg(
        long,
        env = "CERTFLOW_INSTALL_MAX_ERRORS",
        default_value = workflows::export_certificate::DEFAULT_INSTALL_MAX_ERRORS,
        value_parser = install_limit(workflows::export_certificate::valid_max_errors, "a count from 0 or a percentage 0%-100%"),
        global = true
    )]
    pub(crate) install_max_errors: String,
    /// After the reload, check that each server serves the new certificate on this local
    /// port (install document's VerifyPort); a server still serving another serial is
    /// rolled back and fails.
    #[arg(long, env = "CERTFLOW_VERIFY_PORT", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub(crate) verify_port: Option<u16>,
    /// The name (SNI) the check asks the server for (default: the certificate's domain
    /// name, without a leading `*.`).
    #[arg(long, env = "CERTFLOW_VERIFY_NAME", global = true)]
    pub(crate) verify_name: Option<String>,
    /// A reconcile alerts on a certificate this many days or fewer from its expiry that
    /// ACM is not renewing.
    #[arg(
        long,
        env = "CERTFLOW_EXPIRY_ALERT_DAYS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(1..=3650),
        global = true
    )]
    pub(crate) expiry_alert_days: u32,
    /// Seconds a new server's SSM agent may take to come online before its install job
    /// fails (EC2 `running` events).
    #[arg(
        long,
        env = "CERTFLOW_AGENT_TIMEOUT_SECS",
        default_value_t = 900,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub(crate) agent_timeout_secs: u64,
    /// Milliseconds a reconcile pauses between pages of the inventory (25 rows each), to
    /// keep its reads of DynamoDB, ACM and SSM at a steady rate.
    #[arg(
        long,
        env = "CERTFLOW_RECONCILE_PACE_MS",
        default_value_t = 1000,
        global = true
    )]
    pub(crate) reconcile_pace_ms: u64,
    /// Longest pause, in seconds, between two looks at an install batch. SSM's command
    /// status event (the `<prefix>-commands` rule) wakes the job as soon as a batch ends;
    /// the looks are the fallback when an event is lost.
    #[arg(
        long,
        env = "CERTFLOW_WAIT_POLL_MAX_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(2..=900),
        global = true
    )]
    pub(crate) wait_poll_max_secs: u64,
}

/// A parser for an SSM limit (`MaxConcurrency`, `MaxErrors`) that `valid` accepts.
fn install_limit(
    valid: fn(&str) -> bool,
    what: &'static str,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |v: &str| {
        if valid(v) {
            Ok(v.to_string())
        } else {
            Err(format!("expected {what}"))
        }
    }
}

/// Bootstrap settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct BootstrapArgs {
    /// Services the install document may reload (its ReloadService allow-list, baked into
    /// the document), comma-separated; an empty value allows none.
    #[arg(
        long,
        env = "CERTFLOW_RELOAD_SERVICES",
        value_delimiter = ',',
        default_values_t = workflows::document::DEFAULT_RELOAD_SERVICES.map(String::from)
    )]
    pub(crate) reload_services: Vec<String>,
    /// When the reconcile runs (the `<prefix>-reconcile` rule's schedule): `rate(<n>
    /// <unit>)`, e.g. `rate(6 hours)`, or an EventBridge `cron(...)` of six fields, e.g.
    /// `cron(0 */6 * * ? *)` (UTC).
    #[arg(
        long,
        env = "CERTFLOW_RECONCILE_SCHEDULE",
        default_value = workflows::events::DEFAULT_RECONCILE_SCHEDULE,
        value_parser = parse_schedule
    )]
    pub(crate) reconcile_schedule: workflows::events::Schedule,
}

/// A schedule expression, refused with what EventBridge accepts.
fn parse_schedule(s: &str) -> Result<workflows::events::Schedule, String> {
    s.parse()
        .map_err(|e: workflows::events::ScheduleError| e.to_string())
}

/// Worker settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct WorkerArgs {
    /// Messages handled at once: step tasks, export requests and ACM events together (3 or
    /// more, so that each of the three queues keeps a slot while the others are
    /// long-polled).
    #[arg(long, env = "CERTFLOW_CONCURRENCY", default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// This worker's id on leases and history (default: host, pid and a random tag).
    #[arg(long, env = "CERTFLOW_WORKER_ID")]
    pub(crate) worker_id: Option<String>,
    /// Lease duration, seconds.
    #[arg(long, env = "CERTFLOW_LEASE_SECS", default_value_t = 60)]
    pub(crate) lease_secs: u64,
    /// Visibility timeout of received task messages, seconds.
    #[arg(long, env = "CERTFLOW_VISIBILITY_SECS", default_value_t = 60)]
    pub(crate) visibility_secs: u64,
    /// Long-poll wait of one receive, seconds (at most 20).
    #[arg(long, env = "CERTFLOW_POLL_WAIT_SECS", default_value_t = 20)]
    pub(crate) poll_wait_secs: u64,
    /// On SIGTERM, how long in-flight steps may run before their leases are released.
    /// Keep it below the ECS task's stopTimeout.
    #[arg(long, env = "CERTFLOW_SHUTDOWN_BUDGET_SECS", default_value_t = 25)]
    pub(crate) shutdown_budget_secs: u64,
    /// Mean seconds between sweeps for lost wake-ups (0: no sweeper).
    #[arg(long, env = "CERTFLOW_SWEEP_EVERY_SECS", default_value_t = 60)]
    pub(crate) sweep_every_secs: u64,
    /// A job is considered lost when its step was due this many seconds ago.
    #[arg(long, env = "CERTFLOW_SWEEP_GRACE_SECS", default_value_t = 300)]
    pub(crate) sweep_grace_secs: u64,
    /// Milliseconds of short waits one task may sleep through itself (e.g. the first look
    /// at an install 2 s after sending it) instead of a round trip through the task queue;
    /// longer waits always go through the queue. 0: every wait does (at most 60000).
    #[arg(long, env = "CERTFLOW_HOLD_WAITS_MS", default_value_t = engine::DEFAULT_HOLD_WAITS.as_millis() as u64)]
    pub(crate) hold_waits_ms: u64,
    /// Threads of the worker's async runtime [default: one per CPU the process is shown].
    /// Set it to the task's vCPUs: a container may be shown more CPUs than it may use
    /// (Fargate shows a 0.25 vCPU task its host's), and threads sharing less than a CPU
    /// only hand work to each other, each hand-off a thread wake-up.
    #[arg(long, env = "CERTFLOW_RUNTIME_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) runtime_threads: Option<u16>,
}

impl WorkerArgs {
    /// The engine's worker settings, with values it cannot work with brought into range.
    pub(crate) fn config(&self) -> engine::WorkerConfig {
        let mut cfg = engine::WorkerConfig::default();
        if let Some(id) = &self.worker_id {
            cfg.id = id.clone();
        }
        cfg.concurrency = self.concurrency.max(1);
        cfg.lease = Duration::from_secs(self.lease_secs.max(MIN_LEASE_SECS));
        cfg.visibility = Duration::from_secs(self.visibility_secs.max(MIN_LEASE_SECS));
        cfg.poll_wait = Duration::from_secs(self.poll_wait_secs.min(MAX_POLL_WAIT_SECS));
        cfg.shutdown_budget = Duration::from_secs(self.shutdown_budget_secs);
        cfg.sweep_every = Duration::from_secs(self.sweep_every_secs);
        cfg.sweep_grace = Duration::from_secs(self.sweep_grace_secs);
        cfg.hold_waits = Duration::from_millis(self.hold_waits_ms.min(MAX_HOLD_WAITS_MS));
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(lease: u64, visibility: u64, poll: u64, concurrency: usize) -> WorkerArgs {
        WorkerArgs {
            concurrency,
            worker_id: Some("w-1".into()),
            lease_secs: lease,
            visibility_secs: visibility,
            poll_wait_secs: poll,
            shutdown_budget_secs: 25,
            sweep_every_secs: 0,
            sweep_grace_secs: 300,
            hold_waits_ms: 5_000,
            runtime_threads: None,
        }
    }

    #[test]
    fn worker_settings_pass_through_when_in_range() {
        let cfg = worker(90, 45, 5, 8).config();
        assert_eq!(cfg.id, "w-1");
        assert_eq!(cfg.concurrency, 8);
        assert_eq!(cfg.lease, Duration::from_secs(90));
        assert_eq!(cfg.visibility, Duration::from_secs(45));
        assert_eq!(cfg.poll_wait, Duration::from_secs(5));
        assert_eq!(cfg.shutdown_budget, Duration::from_secs(25));
        assert_eq!(cfg.sweep_every, Duration::ZERO, "0 turns the sweeper off");
        assert_eq!(cfg.sweep_grace, Duration::from_secs(300));
        assert_eq!(cfg.hold_waits, Duration::from_secs(5));
    }

    #[test]
    fn worker_settings_out_of_range_are_brought_into_range() {
        let cfg = worker(1, 0, 60, 0).config();
        assert_eq!(cfg.concurrency, 1);
        assert_eq!(cfg.lease, Duration::from_secs(MIN_LEASE_SECS));
        assert_eq!(cfg.visibility, Duration::from_secs(MIN_LEASE_SECS));
        assert_eq!(cfg.poll_wait, Duration::from_secs(MAX_POLL_WAIT_SECS));
        let mut args = worker(60, 60, 20, 32);
        args.hold_waits_ms = 3_600_000;
        assert_eq!(
            args.config().hold_waits,
            Duration::from_millis(MAX_HOLD_WAITS_MS)
        );
    }

    #[test]
    fn without_a_worker_id_the_engine_picks_one() {
        let mut args = worker(60, 60, 20, 32);
        args.worker_id = None;
        let id = args.config().id;
        assert!(id.contains(&format!("-{}-", std::process::id())), "{id}");
    }
}
