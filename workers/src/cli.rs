//! The command line: every flag also reads an environment variable of the same meaning.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// certflow — export ACM certificates and install them on tagged servers, again at every
/// renewal.
#[derive(Debug, Parser)]
#[command(name = "certflow", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Settings every command shares.
#[derive(Debug, Args, Clone)]
pub(crate) struct Global {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, env = "CERTFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub(crate) log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `engine=debug,info`.
    #[arg(long, env = "CERTFLOW_LOG", default_value = "info", global = true)]
    pub(crate) log: String,
    #[command(flatten)]
    pub(crate) names: Names,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
}

/// Names of the AWS resources certflow uses.
#[derive(Debug, Args, Clone)]
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

/// Settings of the export workflow.
#[derive(Debug, Args, Clone)]
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

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the worker service: consume export requests and step tasks until SIGTERM or Ctrl-C.
    Worker(WorkerArgs),
    /// Create the tables, queues (with their DLQs) and the SSM document on the endpoint in
    /// use. Idempotent.
    Bootstrap,
    /// Send an export request (the reference payload) to the intake queue.
    Submit(SubmitArgs),
    /// Inspect and steer jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Run a few jobs of the demo workflow and print how they went (needs a running worker).
    Demo(DemoArgs),
}

/// Worker settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct WorkerArgs {
    /// Step tasks handled at once.
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

/// Output format of inspection commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned text for people.
    Table,
    /// JSON with stable field names, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Show one job: its record and its history as a timeline.
    Show {
        /// The job id.
        job_id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List jobs in a status, most recently updated first (an index query, never a scan).
    List {
        /// PENDING, RUNNING, WAITING, SUCCEEDED, FAILED or CANCELLED (default: all active).
        #[arg(long)]
        status: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Stop a pending, running or waiting job at its next step boundary.
    Cancel {
        /// The job id.
        job_id: String,
    },
    /// Resume a FAILED job from the step that failed (earlier steps do not run again).
    Retry {
        /// The job id.
        job_id: String,
    },
}

/// An export request from the command line.
#[derive(Debug, Args, Clone)]
#[command(
    after_help = "Example:\n  certflow submit --certificate-arn arn:aws:acm:us-east-1:111122223333:certificate/… \\\n    --cert-name web --target Environment=Production --wait"
)]
pub(crate) struct SubmitArgs {
    /// The ACM certificate to export.
    #[arg(long)]
    pub(crate) certificate_arn: String,
    /// File-name stem on the servers.
    #[arg(long)]
    pub(crate) cert_name: String,
    /// The servers, as TAG_KEY=TAG_VALUE.
    #[arg(long)]
    pub(crate) target: String,
    /// Idempotency key: the same id twice makes one job.
    #[arg(long)]
    pub(crate) request_id: Option<String>,
    /// Follow the job until it ends; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Give up following after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub(crate) timeout_secs: u64,
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
