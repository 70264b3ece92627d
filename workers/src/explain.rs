//! What a failed command tells the operator: for the errors operators meet first (a table
//! or queue that does not exist, an endpoint that cannot be reached), a message that says
//! what to do instead of the SDK's chain of causes.

use engine::{JobsError, QueueError, StoreError};

use crate::cli::Names;

/// `e`, or in its place a message that says what to check when it is one of the errors
/// [`explain`] knows.
pub(crate) fn explained(e: anyhow::Error, names: &Names, region: &str) -> anyhow::Error {
    match explain(&e, names, region, &endpoint_note()) {
        Some(msg) => anyhow::Error::msg(msg),
        None => e,
    }
}

/// A message that says what to do, for a table or queue that does not exist (bootstrap
/// not run, wrong name, wrong region or endpoint) or an endpoint that cannot be reached.
/// `endpoint` is [`endpoint_note`]'s text.
fn explain(e: &anyhow::Error, names: &Names, region: &str, endpoint: &str) -> Option<String> {
    for cause in e.chain() {
        let store = cause.downcast_ref::<StoreError>().or_else(|| {
            match cause.downcast_ref::<JobsError>() {
                Some(JobsError::Store(s)) => Some(s),
                _ => None,
            }
        });
        if let Some(StoreError::TableNotFound { table }) = store {
            let setting = if *table == names.inventory_table {
                "CERTFLOW_INVENTORY_TABLE (--inventory-table)"
            } else {
                "CERTFLOW_JOBS_TABLE (--jobs-table)"
            };
            return Some(format!(
                "table {table} not found in {region}{endpoint} — run `certflow bootstrap` or check {setting}"
            ));
        }
        let queue = cause.downcast_ref::<QueueError>().or_else(|| {
            match cause.downcast_ref::<JobsError>() {
                Some(JobsError::Queue(q)) => Some(q),
                _ => None,
            }
        });
        if let Some(QueueError::QueueNotFound { queue }) = queue {
            let base = queue
                .strip_suffix(engine::schema::DLQ_SUFFIX)
                .unwrap_or(queue);
            let setting = if base == names.intake_queue {
                "CERTFLOW_INTAKE_QUEUE (--intake-queue)"
            } else if base == names.events_queue {
                "CERTFLOW_EVENTS_QUEUE (--events-queue)"
            } else {
                "CERTFLOW_TASKS_QUEUE (--tasks-queue)"
            };
            return Some(format!(
                "queue {queue} not found in {region}{endpoint} — run `certflow bootstrap` or check {setting}"
            ));
        }
    }
    let text = format!("{e:#}");
    if text.contains("dispatch failure") || text.contains("connection failed") {
        return Some(format!(
            "{text}\n  cannot reach AWS{endpoint}: check AWS_ENDPOINT_URL, AWS_REGION ({region}) and the network"
        ));
    }
    None
}

/// ` at <endpoint>` when AWS_ENDPOINT_URL points somewhere other than AWS.
fn endpoint_note() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| format!(" at {u}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn names() -> Names {
        let cli = Cli::parse_from([
            "certflow",
            "--jobs-table",
            "jobs-t",
            "--inventory-table",
            "inv-t",
            "--tasks-queue",
            "tasks-q",
            "--intake-queue",
            "intake-q",
            "bootstrap",
        ]);
        cli.global.names
    }

    fn said(e: anyhow::Error) -> Option<String> {
        explain(&e, &names(), "eu-west-1", " at http://127.0.0.1:5000")
    }

    #[test]
    fn a_missing_table_names_the_setting_to_check() {
        let e = anyhow::Error::from(StoreError::TableNotFound {
            table: "inv-t".into(),
        })
        .context("reading the inventory");
        assert_eq!(
            said(e).as_deref(),
            Some("table inv-t not found in eu-west-1 at http://127.0.0.1:5000 — run `certflow bootstrap` or check CERTFLOW_INVENTORY_TABLE (--inventory-table)")
        );
        let e = anyhow::Error::from(JobsError::Store(StoreError::TableNotFound {
            table: "jobs-t".into(),
        }));
        assert_eq!(
            said(e).as_deref(),
            Some("table jobs-t not found in eu-west-1 at http://127.0.0.1:5000 — run `certflow bootstrap` or check CERTFLOW_JOBS_TABLE (--jobs-table)")
        );
    }

    #[test]
    fn a_missing_queue_or_dead_letter_queue_names_the_queue_setting() {
        let dlq = format!("intake-q{}", engine::schema::DLQ_SUFFIX);
        let e = anyhow::Error::from(QueueError::QueueNotFound { queue: dlq.clone() });
        assert_eq!(
            said(e),
            Some(format!("queue {dlq} not found in eu-west-1 at http://127.0.0.1:5000 — run `certflow bootstrap` or check CERTFLOW_INTAKE_QUEUE (--intake-queue)"))
        );
        let e = anyhow::Error::from(JobsError::Queue(QueueError::QueueNotFound {
            queue: "tasks-q".into(),
        }));
        assert_eq!(
            said(e).as_deref(),
            Some("queue tasks-q not found in eu-west-1 at http://127.0.0.1:5000 — run `certflow bootstrap` or check CERTFLOW_TASKS_QUEUE (--tasks-queue)")
        );
    }

    #[test]
    fn an_unreachable_endpoint_keeps_the_cause_and_says_what_to_check() {
        let e = Err::<(), _>(anyhow::anyhow!("dispatch failure: connection refused"))
            .context("job store: list_by_status")
            .unwrap_err();
        assert_eq!(
            said(e).as_deref(),
            Some("job store: list_by_status: dispatch failure: connection refused\n  cannot reach AWS at http://127.0.0.1:5000: check AWS_ENDPOINT_URL, AWS_REGION (eu-west-1) and the network")
        );
    }

    #[test]
    fn other_errors_are_left_as_they_are() {
        assert_eq!(said(anyhow::anyhow!("job j1 not found")), None);
        let e = explained(anyhow::anyhow!("job j1 not found"), &names(), "eu-west-1");
        assert_eq!(format!("{e:#}"), "job j1 not found");
    }
}
