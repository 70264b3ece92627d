//! The command line as parsed: every flag given explicitly, so that whatever `CERTFLOW_*`
//! or `AWS_*` variables the test run has set cannot change the result.

use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;

fn parse(args: &[&str]) -> Cli {
    let argv = std::iter::once("certflow").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => panic!("{args:?} does not parse: {e}"),
    }
}

fn refused(args: &[&str]) -> clap::Error {
    let argv = std::iter::once("certflow").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn the_aws_settings_read_the_sdks_standard_variables() {
    let cmd = Cli::command();
    let env_of = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .and_then(|e| e.to_str())
            .map(str::to_string)
    };
    assert_eq!(
        env_of("aws_max_attempts").as_deref(),
        Some("AWS_MAX_ATTEMPTS")
    );
    assert_eq!(env_of("aws_retry_mode").as_deref(), Some("AWS_RETRY_MODE"));
    assert_eq!(
        env_of("aws_attempt_timeout_secs").as_deref(),
        Some("CERTFLOW_AWS_ATTEMPT_TIMEOUT_SECS")
    );
}

#[test]
fn retry_modes_parse_in_any_case_and_legacy_means_standard() {
    for (given, want) in [
        ("standard", RetryMode::Standard),
        ("STANDARD", RetryMode::Standard),
        ("legacy", RetryMode::Standard),
        ("Legacy", RetryMode::Standard),
        ("adaptive", RetryMode::Adaptive),
        ("ADAPTIVE", RetryMode::Adaptive),
    ] {
        let cli = parse(&["--aws-retry-mode", given, "bootstrap"]);
        assert_eq!(cli.global.aws.aws_retry_mode, want, "{given}");
    }
    let e = refused(&["--aws-retry-mode", "aggressive", "bootstrap"]);
    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
}

#[test]
fn attempts_and_timeouts_must_be_at_least_one() {
    let cli = parse(&[
        "--aws-max-attempts",
        "1",
        "--aws-connect-timeout-secs",
        "2",
        "--aws-attempt-timeout-secs",
        "4",
        "--aws-operation-timeout-secs",
        "8",
        "bootstrap",
    ]);
    let aws = &cli.global.aws;
    assert_eq!(aws.aws_max_attempts, 1);
    assert_eq!(
        (
            aws.aws_connect_timeout_secs,
            aws.aws_attempt_timeout_secs,
            aws.aws_operation_timeout_secs
        ),
        (2, 4, 8)
    );
    for flag in [
        "--aws-max-attempts",
        "--aws-connect-timeout-secs",
        "--aws-attempt-timeout-secs",
        "--aws-operation-timeout-secs",
    ] {
        let e = refused(&[flag, "0", "bootstrap"]);
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
    }
}

#[test]
fn global_flags_may_follow_the_subcommand() {
    let cli = parse(&["jobs", "list", "-o", "json", "--jobs-table", "t1"]);
    assert_eq!(cli.global.output, Some(Output::Json));
    assert_eq!(cli.global.names.jobs_table, "t1");
}

#[test]
fn the_log_filter_suits_the_command_unless_given() {
    assert_eq!(parse(&["--log", "warn", "worker"]).log_filter(), "warn");
    assert_eq!(
        parse(&["--log", "debug", "bootstrap"]).log_filter(),
        "debug"
    );
    // Without --log the default depends on the command (CERTFLOW_LOG may be set in the
    // environment of the test run, so only check the defaults when it is not).
    if std::env::var_os("CERTFLOW_LOG").is_none() {
        assert_eq!(parse(&["worker"]).log_filter(), WORKER_LOG);
        assert_eq!(parse(&["jobs", "show", "j"]).log_filter(), COMMAND_LOG);
    }
}

#[test]
fn the_worker_runtime_takes_its_thread_count_from_the_command_line() {
    assert_eq!(
        parse(&["worker", "--runtime-threads", "1"]).runtime_threads(),
        Some(1)
    );
    assert_eq!(
        parse(&["worker", "--runtime-threads", "4"]).runtime_threads(),
        Some(4)
    );
    // Other commands keep tokio's default (one thread per CPU) whatever they are given.
    assert_eq!(parse(&["jobs", "show", "j"]).runtime_threads(), None);
    for bad in ["0", "257", "two"] {
        let e = refused(&["worker", "--runtime-threads", bad]).to_string();
        assert!(e.contains("--runtime-threads"), "{bad}: {e}");
    }
    let cmd = Cli::command();
    let worker = cmd
        .find_subcommand("worker")
        .expect("the worker subcommand");
    let env = worker
        .get_arguments()
        .find(|a| a.get_id() == "runtime_threads")
        .and_then(|a| a.get_env())
        .and_then(|e| e.to_str());
    assert_eq!(env, Some("CERTFLOW_RUNTIME_THREADS"));
    if std::env::var_os("CERTFLOW_RUNTIME_THREADS").is_none() {
        assert_eq!(parse(&["worker"]).runtime_threads(), None);
    }
}

#[test]
fn follow_timeouts_have_their_defaults_and_take_durations() {
    match parse(&["jobs", "watch", "j1"]).command {
        Command::Jobs(JobsCommand::Watch { job_id, timeout }) => {
            assert_eq!(job_id, "j1");
            assert_eq!(timeout, Duration::from_secs(30 * 60));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["jobs", "cancel", "j1", "--wait"]).command {
        Command::Jobs(JobsCommand::Cancel { wait, timeout, .. }) => {
            assert!(wait);
            assert_eq!(timeout, Duration::from_secs(5 * 60));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["jobs", "retry", "j1", "--wait", "--timeout", "2h"]).command {
        Command::Jobs(JobsCommand::Retry { wait, timeout, .. }) => {
            assert!(wait);
            assert_eq!(timeout, Duration::from_secs(2 * 3600));
        }
        other => panic!("{other:?}"),
    }
    let e = refused(&["jobs", "watch", "j1", "--timeout", "soon"]);
    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
}

#[test]
fn list_filters_parse() {
    let cli = parse(&[
        "jobs",
        "list",
        "--status",
        "failed,CANCELLED",
        "--since",
        "24h",
        "--limit",
        "10",
    ]);
    let Command::Jobs(JobsCommand::List(args)) = cli.command else {
        panic!("not jobs list");
    };
    assert_eq!(
        args.status,
        vec![
            StatusFilter::One(engine::JobStatus::Failed),
            StatusFilter::One(engine::JobStatus::Cancelled)
        ]
    );
    assert_eq!(args.since, Some(Duration::from_secs(86_400)));
    assert_eq!(args.limit, 10);
    assert_eq!(args.cursor, None);
    let Command::Jobs(JobsCommand::List(args)) = parse(&["jobs", "list"]).command else {
        panic!("not jobs list");
    };
    assert!(args.status.is_empty(), "jobs.rs picks the default statuses");
    assert_eq!(args.limit, 50);
}

#[test]
fn submit_needs_a_well_formed_target() {
    let cli = parse(&[
        "submit",
        "--certificate-arn",
        "arn:aws:acm:us-east-1:111122223333:certificate/x",
        "--cert-name",
        "web",
        "--target",
        "Environment=Production",
    ]);
    let Command::Submit(args) = cli.command else {
        panic!("not submit");
    };
    assert_eq!(args.target.key, "Environment");
    assert_eq!(args.target.value, "Production");
    assert!(!args.wait);
    assert_eq!(args.timeout, Duration::from_secs(30 * 60));
    let e = refused(&[
        "submit",
        "--certificate-arn",
        "a",
        "--cert-name",
        "b",
        "--target",
        "Production",
    ]);
    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
}

#[test]
fn bootstrap_takes_the_reload_allow_list_comma_separated() {
    let list = |cli: Cli| match cli.command {
        Command::Bootstrap(args) => args.reload_services,
        other => panic!("not bootstrap: {other:?}"),
    };
    assert_eq!(
        list(parse(&[
            "bootstrap",
            "--reload-services",
            "nginx,php8.2-fpm"
        ])),
        ["nginx", "php8.2-fpm"]
    );
    assert_eq!(list(parse(&["bootstrap", "--reload-services", ""])), [""]);
    let cmd = Cli::command();
    let bootstrap = cmd.find_subcommand("bootstrap").unwrap();
    let arg = bootstrap
        .get_arguments()
        .find(|a| a.get_id() == "reload_services")
        .unwrap();
    assert_eq!(
        arg.get_env().and_then(|e| e.to_str()),
        Some("CERTFLOW_RELOAD_SERVICES")
    );
    let defaults: Vec<_> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(defaults, workflows::document::DEFAULT_RELOAD_SERVICES);
}

/// The setting `id`'s environment variable and default, as `certflow --help` shows them.
fn env_and_default(cmd: &clap::Command, id: &str) -> (Option<String>, Vec<String>) {
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == id)
        .unwrap_or_else(|| panic!("no argument {id}"));
    (
        arg.get_env().and_then(|e| e.to_str()).map(str::to_string),
        arg.get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect(),
    )
}

#[test]
fn the_event_bus_defaults_to_the_default_bus_and_none_turns_it_off() {
    assert_eq!(
        env_and_default(&Cli::command(), "event_bus"),
        (
            Some("CERTFLOW_EVENT_BUS".to_string()),
            vec!["default".to_string()]
        )
    );
    for (given, want) in [
        ("default", Some("default")),
        ("certflow-alerts", Some("certflow-alerts")),
        (
            "arn:aws:events:us-east-1:111122223333:event-bus/ops",
            Some("arn:aws:events:us-east-1:111122223333:event-bus/ops"),
        ),
        ("none", None),
        ("NONE", None),
        ("None", None),
    ] {
        // A global setting: before or after the command.
        for cli in [
            parse(&["--event-bus", given, "worker"]),
            parse(&["jobs", "list", "--event-bus", given]),
        ] {
            assert_eq!(cli.global.names.event_bus, given);
            assert_eq!(cli.global.names.notification_bus(), want, "{given}");
        }
    }
    let e = refused(&["--event-bus", "", "worker"]);
    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
}

#[test]
fn bootstrap_takes_the_reconcile_schedule_and_refuses_a_malformed_one() {
    let schedule = |cli: Cli| match cli.command {
        Command::Bootstrap(args) => args.reconcile_schedule,
        other => panic!("not bootstrap: {other:?}"),
    };
    for given in ["rate(6 hours)", "rate(1 day)", "cron(0 */6 * * ? *)"] {
        assert_eq!(
            schedule(parse(&["bootstrap", "--reconcile-schedule", given])).as_str(),
            given
        );
    }
    for (given, says) in [
        ("6h", "rate(6 hours)"),
        ("rate(1 hours)", "write rate(1 hour)"),
        ("rate(0 hours)", "a whole number from 1"),
        ("cron(0 6 * * *)", "six fields"),
        ("cron(0 6 * * MON *)", "exactly one of day-of-month"),
    ] {
        let e = refused(&["bootstrap", "--reconcile-schedule", given]);
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{given}");
        assert!(e.to_string().contains(says), "{given}: {e}");
    }
    let cmd = Cli::command();
    let bootstrap = cmd.find_subcommand("bootstrap").unwrap();
    assert_eq!(
        env_and_default(bootstrap, "reconcile_schedule"),
        (
            Some("CERTFLOW_RECONCILE_SCHEDULE".to_string()),
            vec![workflows::events::DEFAULT_RECONCILE_SCHEDULE.to_string()]
        )
    );
    // Only bootstrap creates the rule; the other commands do not take the setting.
    let e = refused(&["worker", "--reconcile-schedule", "rate(1 hour)"]);
    assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
}
