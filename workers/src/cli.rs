//! The command line: every flag also reads an environment variable of the same meaning.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Examples and the answers to the common questions, under `certflow --help`.
const TOP_HELP: &str = "\
Common questions:
  Export a certificate now and watch it       certflow submit --certificate-arn ARN --cert-name web --target Environment=Production --wait
  What happened to this job?                  certflow jobs show JOB_ID
  What happened to this certificate?          certflow inventory show --certificate-arn ARN
  What is running or waiting right now?       certflow jobs list
  What failed in the last day?                certflow jobs list --status FAILED --since 24h
  Resume a failed job where it failed         certflow jobs retry JOB_ID --wait
  What expires in the next 30 days?           certflow inventory list --expiring-within 30d
  Is anything stuck in a dead-letter queue?   certflow dlq list
Output is a table on a terminal and JSON otherwise (-o table|json to choose).
Exit codes: 0 success; 1 the command failed or the job did not succeed (the message says why
and what to do); 2 the command line was wrong.";

/// certflow — export ACM certificates and install them on tagged servers, again at every
/// renewal.
#[derive(Debug, Parser)]
#[command(name = "certflow", version, after_help = TOP_HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Settings every command shares.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Output and logging")]
pub(crate) struct Global {
    /// Output: `table` for people, `json` (stable field names) for scripts [default: table
    /// when stdout is a terminal, json otherwise].
    #[arg(short, long, env = "CERTFLOW_OUTPUT", value_enum, global = true)]
    pub(crate) output: Option<Output>,
    /// Log format: human-readable lines or one JSON object per line (on stderr).
    #[arg(long, env = "CERTFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub(crate) log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `engine=debug,info` [default:
    /// info for `worker`, warn for the other commands].
    #[arg(long, env = "CERTFLOW_LOG", global = true)]
    pub(crate) log: Option<String>,
    #[command(flatten)]
    pub(crate) names: Names,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
    #[command(flatten)]
    pub(crate) aws: AwsArgs,
}

impl Global {
    /// The output format: as asked, else a table on a terminal and JSON in a pipe.
    pub(crate) fn output(&self) -> Output {
        self.output.unwrap_or(if std::io::stdout().is_terminal() {
            Output::Table
        } else {
            Output::Json
        })
    }
}
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
        default_value = "certflow-intake",
        global = true
    )]
    pub(crate) intake_queue: String,
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
    /// Prefix of the EventBridge rule names (`<prefix>-renewal`, `<prefix>-attention`).
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
    /// Prefix of the secret names (`<prefix><CertName>/passphrase`, `…/bundle`).
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
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line (for CloudWatch Logs Insights and friends).
    Json,
}

/// Output format of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned text for people.
    Table,
    /// JSON with stable field names, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the worker service: consume export requests and step tasks until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Examples:\n  certflow worker\n  CERTFLOW_CONCURRENCY=8 certflow worker --log-format json"
    )]
    Worker(WorkerArgs),
    /// Create the tables, queues (with their DLQs), EventBridge rules and the SSM document on
    /// the endpoint in use. Idempotent.
    #[command(
        after_help = "Examples:\n  certflow bootstrap\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 certflow bootstrap"
    )]
    Bootstrap,
    /// Send an export request (the reference payload) to the intake queue, and optionally
    /// follow the job it becomes.
    Submit(SubmitArgs),
    /// Inspect and steer jobs: list, show, watch, retry, cancel.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Which certificate is installed where: the inventory table.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Messages in the dead-letter queues: list them, move them back.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run a few jobs of the demo workflow and print how they went (needs a running worker).
    Demo(DemoArgs),
}

/// Worker settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct WorkerArgs {
    /// Messages handled at once: step tasks and intake requests together (2 or more, so
    /// that each queue keeps a slot while the other is long-polled).
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
}

impl WorkerArgs {
    pub(crate) fn config(&self) -> engine::WorkerConfig {
        let mut cfg = engine::WorkerConfig::default();
        if let Some(id) = &self.worker_id {
            cfg.id = id.clone();
        }
        cfg.concurrency = self.concurrency.max(1);
        cfg.lease = Duration::from_secs(self.lease_secs.max(3));
        cfg.visibility = Duration::from_secs(self.visibility_secs.max(3));
        cfg.poll_wait = Duration::from_secs(self.poll_wait_secs.min(20));
        cfg.shutdown_budget = Duration::from_secs(self.shutdown_budget_secs);
        cfg.sweep_every = Duration::from_secs(self.sweep_every_secs);
        cfg.sweep_grace = Duration::from_secs(self.sweep_grace_secs);
        cfg
    }
}

/// A job status on the command line (any case), or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusFilter {
    /// One status.
    One(engine::JobStatus),
    /// Every status.
    All,
}

fn parse_status(s: &str) -> Result<StatusFilter, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(StatusFilter::All);
    }
    engine::JobStatus::parse(s)
        .map(StatusFilter::One)
        .ok_or_else(|| {
            "use PENDING, RUNNING, WAITING, SUCCEEDED, FAILED, CANCELLED or all".to_string()
        })
}

/// A duration such as `30s`, `15m`, `24h`, `7d` or `1h 30m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}: use a duration such as 90s, 15m, 24h or 7d"))
}

/// `TAG_KEY=TAG_VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) key: String,
    pub(crate) value: String,
}

fn parse_target(s: &str) -> Result<Target, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Target {
            key: k.to_string(),
            value: v.to_string(),
        }),
        _ => Err("use TAG_KEY=TAG_VALUE, e.g. Environment=Production".to_string()),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// List jobs, newest first, from the table's indexes (never a scan).
    ///
    /// Without --status and --certificate-arn: the jobs that are not finished (PENDING,
    /// RUNNING, WAITING). With --certificate-arn: that certificate's jobs, in every status
    /// unless --status says otherwise. Ordered by last update (by status) or by creation
    /// (by certificate). When there are more, the last line (table) or `NextCursor` (JSON)
    /// says how to continue.
    #[command(after_help = "Examples:
  certflow jobs list                                  # not finished yet
  certflow jobs list --status FAILED --since 24h      # failed in the last day
  certflow jobs list --status FAILED,CANCELLED --limit 10
  certflow jobs list --certificate-arn arn:aws:acm:us-east-1:111122223333:certificate/…
  certflow jobs list --status all --since 1h -o json | jq '.Jobs[].JobId'")]
    List(ListArgs),
    /// Show one job: record, history as a timeline, per-server install results, child jobs.
    #[command(after_help = "Examples:
  certflow jobs show 3f6c1e2a-…
  certflow jobs show 3f6c1e2a-… -o json | jq '.History[] | select(.Error)'")]
    Show {
        /// The job id.
        job_id: String,
    },
    /// Follow a job until it finishes, showing each step; exit 0 only if it SUCCEEDED.
    #[command(after_help = "Examples:
  certflow jobs watch 3f6c1e2a-…
  certflow jobs watch 3f6c1e2a-… --timeout 2h")]
    Watch {
        /// The job id.
        job_id: String,
        /// Give up following after this long (the job carries on).
        #[arg(long, value_parser = parse_duration, default_value = "30m")]
        timeout: Duration,
    },
    /// Resume a FAILED job from the step that failed (earlier steps do not run again).
    /// Refused for jobs that did not fail.
    #[command(after_help = "Examples:
  certflow jobs retry 3f6c1e2a-…
  certflow jobs retry 3f6c1e2a-… --wait")]
    Retry {
        /// The job id.
        job_id: String,
        /// Follow the job after restarting it; exit 0 only if it SUCCEEDED.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up following after this long.
        #[arg(long, value_parser = parse_duration, default_value = "30m")]
        timeout: Duration,
    },
    /// Stop a PENDING, RUNNING or WAITING job at its next step boundary (in the `wait`
    /// step, the install command is cancelled too).
    #[command(after_help = "Examples:
  certflow jobs cancel 3f6c1e2a-…
  certflow jobs cancel 3f6c1e2a-… --wait     # until it is CANCELLED")]
    Cancel {
        /// The job id.
        job_id: String,
        /// Wait until the job has stopped; exit 0 only if it ended CANCELLED.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long.
        #[arg(long, value_parser = parse_duration, default_value = "5m")]
        timeout: Duration,
    },
}

/// Filters of `jobs list`.
#[derive(Debug, Args, Clone)]
pub(crate) struct ListArgs {
    /// PENDING, RUNNING, WAITING, SUCCEEDED, FAILED, CANCELLED or all; several separated by
    /// commas [default: PENDING,RUNNING,WAITING; with --certificate-arn: all].
    #[arg(long, value_parser = parse_status, value_delimiter = ',')]
    pub(crate) status: Vec<StatusFilter>,
    /// Only jobs of this certificate (the ByCertificateArn index).
    #[arg(long)]
    pub(crate) certificate_arn: Option<String>,
    /// Only jobs updated within this long, e.g. 30m, 24h, 7d.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) since: Option<Duration>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// Continue a listing where the previous page ended (its NextCursor).
    #[arg(long)]
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InventoryCommand {
    /// List inventory rows with their certificate's expiry and the last install's status,
    /// soonest expiry first.
    ///
    /// With --target this is a Query on the table's partition key. Without it, the whole
    /// inventory table is read with a Scan: the inventory has one row per (target,
    /// certificate, name), so it stays small.
    #[command(after_help = "Examples:
  certflow inventory list
  certflow inventory list --target Environment=Production
  certflow inventory list --expiring-within 30d")]
    List {
        /// Only rows of this target, TAG_KEY=TAG_VALUE.
        #[arg(long, value_parser = parse_target)]
        target: Option<Target>,
        /// Only certificates that expire within this long, e.g. 30d.
        #[arg(long, value_parser = parse_duration)]
        expiring_within: Option<Duration>,
    },
    /// Everything about one certificate: where it is installed (the ByCertificateArn index)
    /// and its recent jobs.
    #[command(after_help = "Examples:
  certflow inventory show --certificate-arn arn:aws:acm:us-east-1:111122223333:certificate/…")]
    Show {
        /// The ACM certificate.
        #[arg(long)]
        certificate_arn: String,
    },
}

/// Which queue's dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueueKind {
    /// The intake queue's DLQ: requests and events that could not be read.
    Intake,
    /// The task queue's DLQ: step tasks that could not be handled.
    Tasks,
}

impl QueueKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QueueKind::Intake => "intake",
            QueueKind::Tasks => "tasks",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters: queue, reason, first bytes of the body. Nothing is removed (each
    /// message is hidden for a few seconds while it is read, then made visible again).
    #[command(after_help = "Examples:
  certflow dlq list
  certflow dlq list --queue intake -o json | jq '.[].Reason'")]
    List {
        /// Only this queue's DLQ [default: both].
        #[arg(long, value_enum)]
        queue: Option<QueueKind>,
        /// At most this many messages per queue.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Move every dead letter back to the queue it belongs to (send, then delete), to be
    /// processed again. Fix the cause first: `certflow dlq list` shows the reasons.
    #[command(after_help = "Examples:
  certflow dlq redrive --queue intake
  certflow dlq redrive            # both queues")]
    Redrive {
        /// Only this queue's DLQ [default: both].
        #[arg(long, value_enum)]
        queue: Option<QueueKind>,
    },
}

/// An export request from the command line.
#[derive(Debug, Args, Clone)]
#[command(after_help = "Examples:
  certflow submit --certificate-arn arn:aws:acm:us-east-1:111122223333:certificate/… \\
    --cert-name web --target Environment=Production --wait
  certflow submit … --request-id change-4711     # the same id twice makes one job")]
pub(crate) struct SubmitArgs {
    /// The ACM certificate to export.
    #[arg(long)]
    pub(crate) certificate_arn: String,
    /// File-name stem on the servers.
    #[arg(long)]
    pub(crate) cert_name: String,
    /// The servers, as TAG_KEY=TAG_VALUE.
    #[arg(long, value_parser = parse_target)]
    pub(crate) target: Target,
    /// Idempotency key: the same id twice makes one job.
    #[arg(long)]
    pub(crate) request_id: Option<String>,
    /// Follow the job, showing each step; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up following after this long (the job carries on).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub(crate) timeout: Duration,
}

/// Demo settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct DemoArgs {
    /// How many demo jobs to run (one of them is made to fail, to show a failure).
    #[arg(long, default_value_t = 3)]
    pub(crate) jobs: usize,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_parse() {
        assert_eq!(
            parse_status("failed"),
            Ok(StatusFilter::One(engine::JobStatus::Failed))
        );
        assert_eq!(parse_status("ALL"), Ok(StatusFilter::All));
        assert!(parse_status("done").is_err());
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_target("a=b").is_ok());
        assert!(parse_target("a").is_err());
        assert!(parse_target("=b").is_err());
    }
}
