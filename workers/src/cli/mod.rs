//! The command line: every flag also reads an environment variable of the same meaning.
//!
//! This file holds the top level (the global flags and the list of commands); the shared
//! settings are in [`settings`], each command's own arguments in [`commands`].

mod commands;
mod settings;

use std::io::IsTerminal;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(crate) use commands::{
    parse_workflow, ConsoleArgs, DemoArgs, DlqCommand, InventoryCommand, JobsCommand, ListArgs,
    QueueKind, ReconcileArgs, StatusFilter, SubmitArgs, Target,
};
pub(crate) use settings::{AwsArgs, BootstrapArgs, ExportArgs, Names, RetryMode, WorkerArgs};

/// The log filter of the worker service: its progress is what its logs are for.
const WORKER_LOG: &str = "info";
/// The log filter of the other commands: their output is the answer, so logs stay quiet
/// unless something is wrong.
const COMMAND_LOG: &str = "warn";

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
  Does every server run ACM's certificate?    certflow reconcile --dry-run
  Is anything stuck in a dead-letter queue?   certflow dlq list
  All of that in a browser                    certflow console
Output is a table on a terminal and JSON otherwise (-o table|json to choose).
Exit codes: 0 success; 1 the command failed or the job did not succeed (the message says why
and what to do); 2 the command line was wrong.";

/// certflow — export ACM certificates and install them on tagged servers, again at every
/// renewal.
#[derive(Debug, Parser)]
#[command(name = "certflow", version, after_help = TOP_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// The log filter: `--log` if given, else one that suits the command.
    pub(crate) fn log_filter(&self) -> &str {
        let default = match self.command {
            Command::Worker(_) => WORKER_LOG,
            _ => COMMAND_LOG,
        };
        self.global.log.as_deref().unwrap_or(default)
    }

    /// Threads the async runtime should have: `worker --runtime-threads` when given, else
    /// `None` (one per CPU the process is shown).
    pub fn runtime_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Worker(w) => w.runtime_threads.map(usize::from),
            _ => None,
        }
    }
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
        after_help = "Examples:\n  certflow bootstrap\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 certflow bootstrap\n  certflow bootstrap --reload-services nginx,php8.2-fpm"
    )]
    Bootstrap(BootstrapArgs),
    /// Send an export request (the reference payload) to the intake queue, and optionally
    /// follow the job it becomes.
    Submit(SubmitArgs),
    /// Inspect and steer jobs: list, show, watch, retry, cancel.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Which certificate is installed where: the inventory table.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Compare the inventory with ACM and the servers, and fix what drifted (--dry-run:
    /// only say what a run would do).
    ///
    /// A renewal ACM issued that a target was not sent is exported to it; servers carrying
    /// a target that do not run its certificate get an install, on them only; certificates
    /// gone, not issued, or near expiry without a renewal are alerts for a person. A job
    /// that already ended without fixing its row is not run again: it is reported.
    Reconcile(ReconcileArgs),
    /// Messages in the dead-letter queues: list them, move them back.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run a few jobs of the demo workflow and print how they went (needs a running worker).
    Demo(DemoArgs),
    /// Serve a read-only web console on 127.0.0.1: jobs and their timelines, servers,
    /// certificates and dead letters, with your AWS credentials, live-updating.
    ///
    /// Nothing in the console changes anything: retry, cancel and redrive stay commands
    /// of this CLI, which the console shows ready to copy.
    #[command(
        after_help = "Examples:\n  certflow console\n  certflow console --port 9000\n  ssh -L 8080:127.0.0.1:8080 bastion   # then certflow console there, open http://127.0.0.1:8080 here"
    )]
    Console(ConsoleArgs),
}

#[cfg(test)]
mod tests;
