//! AWS clients and the engine handles built on them, and `bootstrap`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use engine::backend::dynamodb::{create_job_table, DynamoJobStore};
use engine::backend::sqs::{create_queue_with_dlq, SqsTaskQueue};
use engine::schema::JobTableSpec;
use engine::{JobStore, Jobs, SystemClock};

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;

use crate::cli::{AwsArgs, BootstrapArgs, Global, Names, Output, RetryMode};

/// First backoff of an SDK retry (jittered, doubling up to [`MAX_BACKOFF`]).
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest backoff of an SDK retry: longer waits are the engine's job (a durable retry that
/// frees the worker's slot), not the SDK's.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Default visibility timeout `bootstrap` gives the queues it creates: the worker names its
/// own (`--visibility-secs`) on every receive, so this only covers a reader that does not,
/// and matches the worker's default.
const QUEUE_VISIBILITY: Duration = Duration::from_secs(60);

/// The SDK configuration from the standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`,
/// credentials, profiles), as every AWS tool reads it, with certflow's retries and
/// timeouts.
///
/// The SDK retries what is safe to retry at once (throttling, 5xx, timeouts, dropped
/// connections) a few times with short jittered backoffs; what it gives up on becomes a
/// step error that the engine retries later with the step's own durable backoff. Every
/// attempt has a timeout so that a hung connection cannot hold a lease heartbeat or a
/// commit past the lease.
///
/// Stalled-stream protection is off. certflow sends and receives only small JSON bodies,
/// never a stream, and reads every answer whole inside the attempt, so the attempt timeout
/// already ends a stalled download (and a stalled upload). The protection's checks cost
/// CPU on every call: the upload check woke the runtime every few tens of milliseconds for
/// as long as a request was in flight — the whole 20 s of each idle long poll, most of an
/// idle worker's CPU — and the download check wraps every answer's body in a throughput
/// meter and a timer (about 3 % of a busy worker's CPU; docs/benchmarks-profile.md).
pub(crate) async fn sdk_config(args: &AwsArgs) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry_config(args))
        .timeout_config(timeout_config(args))
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

fn retry_config(args: &AwsArgs) -> RetryConfig {
    let base = match args.aws_retry_mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Adaptive => RetryConfig::adaptive(),
    };
    base.with_max_attempts(args.aws_max_attempts.max(1))
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

fn timeout_config(args: &AwsArgs) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(args.aws_connect_timeout_secs))
        .operation_attempt_timeout(Duration::from_secs(args.aws_attempt_timeout_secs))
        .operation_timeout(Duration::from_secs(args.aws_operation_timeout_secs))
        .build()
}

/// The export workflow's dependencies from the command line.
pub(crate) fn export_deps(
    sdk: &aws_config::SdkConfig,
    global: &Global,
) -> workflows::export_certificate::Deps {
    let e = &global.export;
    let mut config = workflows::export_certificate::ExportConfig::new(
        sdk.region().map(|r| r.to_string()).unwrap_or_default(),
    );
    config.secret_prefix = e.secret_prefix.clone();
    config.kms_key_id = e.kms_key_id.clone();
    config.document_name = global.names.document_name.clone();
    config.inventory_table = global.names.inventory_table.clone();
    config.validation_timeout = Duration::from_secs(e.validation_timeout_secs);
    config.install_timeout = Duration::from_secs(e.install_timeout_secs);
    config.cert_dir = e.cert_dir.clone();
    config.key_dir = e.key_dir.clone();
    config.reload_service = e.reload_service.clone();
    config.install_max_concurrency = e.install_max_concurrency.clone();
    config.install_max_errors = e.install_max_errors.clone();
    config.install_canary = e.install_canary;
    config.verify_port = e.verify_port;
    config.verify_name = e.verify_name.clone();
    config.reconcile.rules.expiry_alert_days = e.expiry_alert_days;
    config.reconcile.pace = Duration::from_millis(e.reconcile_pace_ms);
    config.agent_timeout = Duration::from_secs(e.agent_timeout_secs);
    config.event_bus = global.names.notification_bus().map(str::to_string);
    config.wait_poll_max = Duration::from_secs(e.wait_poll_max_secs);
    workflows::export_certificate::Deps {
        clients: workflows::aws::Clients::new(sdk),
        config,
    }
}

/// The jobs table alone, for commands that only read it (no task queue needed).
pub(crate) fn store(sdk: &aws_config::SdkConfig, names: &Names) -> Arc<dyn JobStore> {
    Arc::new(DynamoJobStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &names.jobs_table,
    ))
}

/// The job operations over the configured table and task queue.
pub(crate) async fn jobs(sdk: &aws_config::SdkConfig, global: &Global) -> anyhow::Result<Jobs> {
    let names = &global.names;
    let store = DynamoJobStore::new(aws_sdk_dynamodb::Client::new(sdk), &names.jobs_table);
    let queue = SqsTaskQueue::connect(aws_sdk_sqs::Client::new(sdk), &names.tasks_queue)
        .await
        .with_context(|| {
            format!(
                "connecting to task queue {} in {}",
                names.tasks_queue,
                region(sdk)
            )
        })?;
    Ok(Jobs::new(
        Arc::new(store),
        Arc::new(queue),
        workflows::registry(export_deps(sdk, global)),
        Arc::new(SystemClock),
    ))
}

/// The region in use, or what to set when there is none (for error messages).
pub(crate) fn region(sdk: &aws_config::SdkConfig) -> String {
    sdk.region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "(no region set: AWS_REGION)".to_string())
}

/// One resource `bootstrap` made ready.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ready {
    kind: &'static str,
    name: String,
    detail: String,
}

/// Creates every resource certflow needs on the endpoint in use; safe to run again.
pub(crate) async fn bootstrap(
    sdk: &aws_config::SdkConfig,
    global: &Global,
    args: &BootstrapArgs,
    output: Output,
) -> anyhow::Result<()> {
    let names = &global.names;
    // Checked before anything is created: a document that would refuse the workers'
    // own ReloadService is a deployment mistake.
    let document = document_content(args, global.export.reload_service.as_deref())?;
    let mut ready = Vec::new();
    let mut done = |kind: &'static str, name: &str, detail: String| {
        if output == Output::Table {
            println!(
                "{kind:<8} {name} ready{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            );
        }
        ready.push(Ready {
            kind,
            name: name.to_string(),
            detail,
        });
    };
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let spec = JobTableSpec::new(&names.jobs_table, workflows::JOB_LABELS);
    create_job_table(&ddb, &spec)
        .await
        .with_context(|| format!("creating table {}", names.jobs_table))?;
    done("table", &names.jobs_table, "jobs".into());
    let url = create_queue_with_dlq(
        &sqs,
        &names.tasks_queue,
        QUEUE_VISIBILITY,
        engine::schema::MAX_RECEIVES,
    )
    .await
    .with_context(|| format!("creating queue {}", names.tasks_queue))?;
    done(
        "queue",
        &names.tasks_queue,
        format!(
            "dead letters: {}; {url}",
            engine::schema::dlq_name(&names.tasks_queue)
        ),
    );
    for queue in [&names.intake_queue, &names.events_queue] {
        let url =
            create_queue_with_dlq(&sqs, queue, QUEUE_VISIBILITY, engine::schema::MAX_RECEIVES)
                .await
                .with_context(|| format!("creating queue {queue}"))?;
        done(
            "queue",
            queue,
            format!("dead letters: {}; {url}", engine::schema::dlq_name(queue)),
        );
    }
    let events_url = SqsTaskQueue::connect(sqs.clone(), &names.events_queue)
        .await
        .with_context(|| format!("connecting to events queue {}", names.events_queue))?
        .url()
        .to_string();
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let settings = rule_settings(global, args);
    let arns = workflows::events::ensure_rules(&events, &sqs, &events_url, &settings)
        .await
        .context("creating the EventBridge rules")?;
    for (arn, spec) in arns.iter().zip(workflows::events::rules(&settings)) {
        let trigger = match spec.trigger {
            workflows::events::Trigger::Schedule(s) => format!("{s} "),
            workflows::events::Trigger::Pattern(_) => String::new(),
        };
        done("rule", arn, format!("{trigger}→ {}", names.events_queue));
    }
    workflows::inventory::create_table(&ddb, &names.inventory_table)
        .await
        .with_context(|| format!("creating table {}", names.inventory_table))?;
    done("table", &names.inventory_table, "inventory".into());
    let ssm = aws_sdk_ssm::Client::new(sdk);
    workflows::document::ensure_content(&ssm, &names.document_name, &document)
        .await
        .with_context(|| format!("creating SSM document {}", names.document_name))?;
    done(
        "document",
        &names.document_name,
        format!(
            "SSM install document; ReloadService may be: {}",
            reload_list(&args.reload_services)
        ),
    );
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&ready)?);
    }
    Ok(())
}

/// The EventBridge rules bootstrap creates: named after `--rule-prefix`, matching
/// `--event-sources`, the reconcile on `--reconcile-schedule`, and the status changes of
/// `--document-name`'s commands.
fn rule_settings(global: &Global, args: &BootstrapArgs) -> workflows::events::RuleSettings {
    let mut settings = workflows::events::RuleSettings::new(
        global.names.rule_prefix.clone(),
        global.names.event_sources.clone(),
    );
    settings.reconcile_schedule = args.reconcile_schedule.clone();
    settings.document_name = global.names.document_name.clone();
    settings
}

/// The allow-list as bootstrap prints it.
fn reload_list(services: &[String]) -> String {
    let names: Vec<&str> = services
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

/// The install document with `--reload-services` baked in; refused when the workers'
/// `--reload-service` is not on that list (every install would be refused).
fn document_content(args: &BootstrapArgs, reload_service: Option<&str>) -> anyhow::Result<String> {
    let content = workflows::document::content(&args.reload_services)
        .context("--reload-services (CERTFLOW_RELOAD_SERVICES)")?;
    if let Some(service) = reload_service.filter(|s| !s.is_empty()) {
        if !args.reload_services.iter().any(|s| s == service) {
            anyhow::bail!(
                "CERTFLOW_RELOAD_SERVICE {service:?} is not in --reload-services \
                 (CERTFLOW_RELOAD_SERVICES: {}): the install document would refuse it",
                reload_list(&args.reload_services)
            );
        }
    }
    Ok(content)
}

/// The queues `certflow worker` turns into jobs, each with its parser: the intake queue
/// (export requests) and the events queue (ACM events).
pub(crate) async fn intakes(
    sdk: &aws_config::SdkConfig,
    names: &Names,
) -> anyhow::Result<Vec<engine::Intake>> {
    use workflows::intake::IntakeConfig;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut intakes = Vec::new();
    for (what, name, config) in [
        ("intake", &names.intake_queue, IntakeConfig::requests()),
        (
            "events",
            &names.events_queue,
            IntakeConfig::events(names.event_sources.clone()),
        ),
    ] {
        let queue = SqsTaskQueue::connect(sqs.clone(), name)
            .await
            .with_context(|| format!("connecting to {what} queue {name}"))?;
        intakes.push(engine::Intake {
            queue: Arc::new(queue),
            parse: config.parser(),
        });
    }
    Ok(intakes)
}

#[cfg(test)]
mod tests {
    use aws_config::retry::RetryMode as SdkRetryMode;

    use super::*;

    fn args(mode: RetryMode, attempts: u32) -> AwsArgs {
        AwsArgs {
            aws_max_attempts: attempts,
            aws_retry_mode: mode,
            aws_connect_timeout_secs: 2,
            aws_attempt_timeout_secs: 7,
            aws_operation_timeout_secs: 25,
        }
    }

    #[test]
    fn retries_follow_the_mode_and_attempts_asked_for() {
        let standard = retry_config(&args(RetryMode::Standard, 5));
        assert_eq!(standard.mode(), SdkRetryMode::Standard);
        assert_eq!(standard.max_attempts(), 5);
        let adaptive = retry_config(&args(RetryMode::Adaptive, 1));
        assert_eq!(adaptive.mode(), SdkRetryMode::Adaptive);
        assert_eq!(adaptive.max_attempts(), 1);
    }

    #[test]
    fn backoffs_stay_short_whatever_the_mode() {
        for mode in [RetryMode::Standard, RetryMode::Adaptive] {
            let c = retry_config(&args(mode, 3));
            assert_eq!(c.initial_backoff(), Duration::from_millis(200), "{mode:?}");
            assert_eq!(c.max_backoff(), Duration::from_secs(5), "{mode:?}");
        }
    }

    #[test]
    fn zero_attempts_still_make_one() {
        // The command line refuses 0; this is the second line of defence.
        assert_eq!(
            retry_config(&args(RetryMode::Standard, 0)).max_attempts(),
            1
        );
    }

    #[test]
    fn every_call_and_attempt_has_a_timeout() {
        let t = timeout_config(&args(RetryMode::Standard, 3));
        assert_eq!(t.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(25)));
    }
}

#[cfg(test)]
mod notifier_tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn global(args: &[&str]) -> Global {
        let argv = ["certflow"].iter().chain(args).chain(&["worker"]);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.global,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_workflows_publish_on_the_bus_unless_it_is_none() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let bus = |args: &[&str]| export_deps(&sdk, &global(args)).config.event_bus;
        assert_eq!(bus(&["--event-bus", "default"]).as_deref(), Some("default"));
        assert_eq!(bus(&["--event-bus", "ops-bus"]).as_deref(), Some("ops-bus"));
        assert_eq!(bus(&["--event-bus", "none"]), None);
        assert_eq!(bus(&["--event-bus", "NONE"]), None);
    }

    #[test]
    fn bootstrap_makes_five_rules_with_the_schedule_asked_for() {
        let cli = Cli::try_parse_from([
            "certflow",
            "--rule-prefix",
            "cf",
            "--event-sources",
            "aws.acm,custom.aws.acm",
            "bootstrap",
            "--reconcile-schedule",
            "rate(30 minutes)",
        ])
        .unwrap();
        let crate::cli::Command::Bootstrap(args) = &cli.command else {
            panic!("not bootstrap");
        };
        let settings = rule_settings(&cli.global, args);
        assert_eq!(settings.prefix, "cf");
        assert_eq!(settings.sources, ["aws.acm", "custom.aws.acm"]);
        assert_eq!(settings.reconcile_schedule.as_str(), "rate(30 minutes)");
        let names: Vec<String> = workflows::events::rules(&settings)
            .into_iter()
            .map(|r| r.name)
            .collect();
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
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

    fn args(list: &[&str]) -> BootstrapArgs {
        BootstrapArgs {
            reload_services: list.iter().map(|s| s.to_string()).collect(),
            reconcile_schedule: workflows::events::Schedule::default(),
        }
    }

    #[test]
    fn the_document_allows_the_listed_services_only() {
        let c = document_content(&args(&["nginx", "caddy"]), Some("caddy")).unwrap();
        assert!(c.contains("allowedPattern: \"^(nginx|caddy)?$\""));
        assert!(c.contains("RELOAD_ALLOWED='nginx|caddy'"));
        assert!(document_content(&args(&[""]), None)
            .unwrap()
            .contains("RELOAD_ALLOWED=''"));
    }

    #[test]
    fn a_reload_service_off_the_list_or_a_bad_name_is_refused() {
        let e = document_content(&args(&["nginx"]), Some("haproxy")).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"haproxy\" is not in --reload-services"),
            "{e}"
        );
        let e = document_content(&args(&["reboot target"]), None).unwrap_err();
        assert!(format!("{e:#}").contains("is not a unit name"), "{e:#}");
    }
}
