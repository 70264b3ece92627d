//! The subcommands' own arguments (`jobs`, `inventory`, `dlq`, `submit`, `reconcile`,
//! `demo`) and the parsers of their values: statuses, durations, targets.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

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

/// One of the workflows certflow runs (a typo would list nothing, silently).
pub(crate) fn parse_workflow(s: &str) -> Result<String, String> {
    let s = s.trim();
    if workflows::WORKFLOW_NAMES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "no workflow {s:?}: certflow runs {}",
            workflows::WORKFLOW_NAMES.join(", ")
        ))
    }
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
    /// Show one job: record, history as a timeline, its servers (a page, failures first),
    /// child jobs.
    #[command(after_help = "Examples:
  certflow jobs show 3f6c1e2a-…
  certflow jobs show 3f6c1e2a-… --servers failed
  certflow jobs show 3f6c1e2a-… --servers all --limit 200 --after 'i-0abc…'
  certflow jobs show 3f6c1e2a-… -o json | jq '.History[] | select(.Error)'")]
    Show {
        /// The job id.
        job_id: String,
        /// Which of an export job's servers to list.
        #[arg(long, value_enum, default_value = "failed-first")]
        servers: crate::servers::Which,
        /// Servers (and child jobs) per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Go on after this cursor (printed under the previous page).
        #[arg(long)]
        after: Option<String>,
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
    /// Only jobs of this workflow: export-certificate, renew-certificate, new-server,
    /// reconcile, acm-alert or demo.
    #[arg(long, value_parser = parse_workflow)]
    pub(crate) workflow: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// Continue a listing where the previous page ended (its NextCursor).
    #[arg(long)]
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InventoryCommand {
    /// List inventory rows with their certificate's expiry, the last install's status and
    /// how far each drifted, soonest expiry first.
    ///
    /// With --target this is a Query on the table's partition key. Without it, the whole
    /// inventory table is read with a Scan: the inventory has one row per (target,
    /// certificate, name), so it stays small. ACM is asked for each certificate's serial
    /// now (DescribeCertificate, once per certificate): ACM SERIAL beside the EXPORTED
    /// one (`*`: a renewal not exported), then the servers carrying the target when
    /// certflow last looked (SERVERS), those running the exported serial (CURRENT) and
    /// those behind (LAGGING).
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
    /// Everything about one certificate: where it is installed (the ByCertificateArn index),
    /// how far each row drifted, and its recent jobs.
    #[command(after_help = "Examples:
  certflow inventory show --certificate-arn arn:aws:acm:us-east-1:111122223333:certificate/…")]
    Show {
        /// The ACM certificate.
        #[arg(long)]
        certificate_arn: String,
    },
    /// Copy the rows of the reference solution's inventory table (CertTagMapping) into
    /// certflow's, so that certflow takes those certificates over: the next renewal
    /// exports each row anew, into a secret of certflow's own (the reference's passphrase
    /// secret is never read). Rows already in certflow's inventory are left as they are;
    /// rows that would not pass as an export request are refused with their reason.
    #[command(after_help = "Examples:
  certflow inventory import --from-table CertTagMapping --dry-run
  certflow inventory import --from-table CertTagMapping")]
    Import {
        /// The reference's table (partition key TagKeyValue, sort key CertificateArn#CertName).
        #[arg(long)]
        from_table: String,
        /// Say what would be imported, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which queue's dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueueKind {
    /// The intake queue's DLQ: export requests that could not be read (and events sent
    /// there, where only export requests are accepted).
    Intake,
    /// The events queue's DLQ: ACM events that could not be read. Listed only: nobody
    /// but the EventBridge rules may send to the events queue, so they cannot be redriven.
    Events,
    /// The task queue's DLQ: step tasks that could not be handled.
    Tasks,
}

impl QueueKind {
    /// The name on the command line (`--queue intake`) and in `dlq` output.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QueueKind::Intake => "intake",
            QueueKind::Events => "events",
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
    /// Servers that install first, alone, before any other is sent the command (default:
    /// the deployment's CERTFLOW_INSTALL_CANARY, 1).
    #[arg(long, value_name = "N")]
    pub(crate) canary: Option<u32>,
    /// Servers per batch after the canary: a count or a percentage of the servers (default:
    /// the deployment's CERTFLOW_INSTALL_MAX_CONCURRENCY).
    #[arg(long, value_name = "N|P%")]
    pub(crate) max_concurrency: Option<String>,
    /// Failed servers tolerated before the rollout stops: a count or a percentage (default:
    /// the deployment's CERTFLOW_INSTALL_MAX_ERRORS, 0).
    #[arg(long, value_name = "N|P%")]
    pub(crate) max_errors: Option<String>,
    /// Follow the job, showing each step; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up following after this long (the job carries on).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub(crate) timeout: Duration,
}

/// What `certflow reconcile` does: start a run, follow it, or only say what a run would do.
#[derive(Debug, Args, Clone)]
#[command(after_help = "Examples:
  certflow reconcile --dry-run                    # what a run would do; starts and writes nothing
  certflow reconcile --dry-run -o json | jq '.Rows[] | select(.Group != \"in-sync\")'
  certflow reconcile                              # start a run now (a worker runs it)
  certflow reconcile --wait                       # start one and follow it to the end")]
pub(crate) struct ReconcileArgs {
    /// Read the inventory, ACM and the servers and print what a run would do, row by row:
    /// no job is started and nothing is written.
    #[arg(long, conflicts_with = "wait")]
    pub(crate) dry_run: bool,
    /// Follow the run, then print its summary and the rows that were not in sync; exit 0
    /// unless the run itself failed.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up following after this long (the run carries on).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub(crate) timeout: Duration,
}

/// Console settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct ConsoleArgs {
    /// Address to serve on. Only a loopback address (127.0.0.1, ::1) is accepted unless
    /// --allow-non-loopback is given: the console has no login of its own.
    #[arg(long, env = "CERTFLOW_CONSOLE_ADDRESS", default_value = "127.0.0.1")]
    pub(crate) address: std::net::IpAddr,
    /// Port to serve on (0: any free port; the URL printed at start says which).
    #[arg(long, env = "CERTFLOW_CONSOLE_PORT", default_value_t = 8080)]
    pub(crate) port: u16,
    /// Serve on an address other hosts can reach. Anyone who reaches it reads every job,
    /// server and inventory row with your AWS credentials: prefer an SSH tunnel
    /// (`ssh -L 8080:127.0.0.1:8080 HOST`).
    #[arg(long)]
    pub(crate) allow_non_loopback: bool,
    /// With --allow-non-loopback: a host name (or address) browsers may reach the console
    /// by, e.g. `ops-bastion.internal`. Requests naming any other host are refused, so that
    /// no other site can reach the console through DNS rebinding. The loopback names and
    /// the address served on are always accepted.
    #[arg(long, env = "CERTFLOW_CONSOLE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub(crate) allowed_host: Vec<String>,
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

    #[test]
    fn statuses_parse_in_any_case_and_all_means_every_status() {
        assert_eq!(
            parse_status("failed"),
            Ok(StatusFilter::One(engine::JobStatus::Failed))
        );
        assert_eq!(
            parse_status("Waiting"),
            Ok(StatusFilter::One(engine::JobStatus::Waiting))
        );
        assert_eq!(parse_status("ALL"), Ok(StatusFilter::All));
        assert_eq!(parse_status(" all "), Ok(StatusFilter::All));
        assert_eq!(
            parse_status("done"),
            Err("use PENDING, RUNNING, WAITING, SUCCEEDED, FAILED, CANCELLED or all".into())
        );
    }

    #[test]
    fn durations_parse_as_people_write_them() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("30d"), Ok(30 * 86_400));
        assert_eq!(secs("1h 30m"), Ok(5_400));
        assert_eq!(
            secs(" 7d "),
            Ok(7 * 86_400),
            "surrounding spaces are ignored"
        );
        let err = parse_duration("soon").unwrap_err();
        assert!(
            err.ends_with(": use a duration such as 90s, 15m, 24h or 7d"),
            "{err}"
        );
        assert!(parse_duration("30").is_err(), "a bare number has no unit");
    }

    #[test]
    fn targets_need_a_key_and_a_value() {
        assert_eq!(
            parse_target("Environment=Production"),
            Ok(Target {
                key: "Environment".into(),
                value: "Production".into()
            })
        );
        // Only the first `=` separates: tag values may contain one.
        assert_eq!(
            parse_target("k=a=b").map(|t| t.value),
            Ok("a=b".to_string())
        );
        for bad in ["a", "=b", "a=", ""] {
            assert_eq!(
                parse_target(bad),
                Err("use TAG_KEY=TAG_VALUE, e.g. Environment=Production".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn queue_kinds_print_as_their_flag_values() {
        for kind in [QueueKind::Intake, QueueKind::Events, QueueKind::Tasks] {
            let value = kind.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(value.as_deref(), Some(kind.as_str()));
        }
    }
}
