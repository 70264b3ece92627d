//! The servers of an export job and the children of a renewal, as `certflow jobs show`
//! pages them: read from the job's entries (beside its record, `engine::entries`), the
//! failures first, a page at a time, with the command that shows the next page. (Jobs
//! from before entries keep their results in the record, shown by `view::job_text`.)

use std::sync::Arc;

use clap::ValueEnum;
use engine::{Entry, Groups, JobId, JobRecord, JobStore};
use serde_json::{json, Value};
use workflows::export_certificate::rollout::{self, ServerResult};
use workflows::export_certificate::Rollout;
use workflows::renew_certificate::{self, Child};

use crate::view::{self, ChildView};

/// Which servers `jobs show` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Which {
    /// Failed servers first, then the others in id order.
    FailedFirst,
    /// Only the servers whose install failed.
    Failed,
    /// Only the servers that installed the certificate.
    Ok,
    /// Only servers not finished yet (of a finished job: never reached).
    Pending,
    /// Only servers that were offline when the rollout was planned.
    Offline,
    /// Every server, in id order.
    All,
    /// None: the record and the timeline only.
    None,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::FailedFirst => "failed-first",
            Which::Failed => "failed",
            Which::Ok => "ok",
            Which::Pending => "pending",
            Which::Offline => "offline",
            Which::All => "all",
            Which::None => "none",
        }
    }
}

/// One server's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerRow {
    pub(crate) id: String,
    pub(crate) group: String,
    pub(crate) result: ServerResult,
}

/// One page of servers, and the cursor of the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ServerPage {
    pub(crate) rows: Vec<ServerRow>,
    pub(crate) next: Option<String>,
}

fn row(e: Entry) -> ServerRow {
    ServerRow {
        result: ServerResult::of(&e),
        id: e.key,
        group: e.group,
    }
}

/// Cursor of the failed-first listing: which phase, and the last key.
fn split_cursor(after: Option<&str>) -> (bool, Option<&str>) {
    match after {
        None => (true, None),
        Some(c) => match c.split_once(':') {
            Some(("f", k)) => (true, Some(k)),
            Some(("r", k)) => (false, Some(k)),
            _ => (true, Some(c)),
        },
    }
}

/// A page of job `id`'s servers, `which` of them, after cursor `after`.
pub(crate) async fn page(
    store: &Arc<dyn JobStore>,
    rec: &JobRecord,
    which: Which,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<ServerPage> {
    let limit = limit.max(1);
    let id = &rec.job_id;
    let only = |g: &str| Groups::Only(vec![g.to_string()]);
    let failed = || Groups::Only(vec![rollout::FAILED.to_string()]);
    let simple = |groups: Groups| async move {
        let p = store
            .entries(id, rollout::SERVERS, &groups, after, limit)
            .await?;
        Ok::<_, anyhow::Error>(ServerPage {
            rows: p.entries.into_iter().map(row).collect(),
            next: p.next,
        })
    };
    let page = match which {
        Which::None => return Ok(ServerPage::default()),
        Which::All => simple(Groups::All).await?,
        Which::Failed => simple(failed()).await?,
        Which::Ok => simple(only(rollout::OK)).await?,
        Which::Pending => simple(only(rollout::PENDING)).await?,
        Which::Offline => simple(only(rollout::OFFLINE)).await?,
        Which::FailedFirst => {
            let (first_phase, key) = split_cursor(after);
            let mut out = ServerPage::default();
            let mut rest_after = if first_phase { None } else { key };
            if first_phase {
                let p = store
                    .entries(id, rollout::SERVERS, &failed(), key, limit)
                    .await?;
                out.rows.extend(p.entries.into_iter().map(row));
                if let Some(n) = p.next {
                    out.next = Some(format!("f:{n}"));
                    return Ok(out);
                }
                rest_after = None;
            }
            let left = limit - out.rows.len();
            if left == 0 {
                // Nothing of the second phase read yet: it starts from the beginning.
                out.next = Some("r:".into());
                return Ok(out);
            }
            let rest = Groups::Except(vec![rollout::FAILED.to_string()]);
            let p = store
                .entries(
                    id,
                    rollout::SERVERS,
                    &rest,
                    rest_after.filter(|k| !k.is_empty()),
                    left,
                )
                .await?;
            out.rows.extend(p.entries.into_iter().map(row));
            out.next = p.next.map(|n| format!("r:{n}"));
            out
        }
    };
    Ok(page)
}

/// The rollout's counts on the record, if the job has a rollout.
pub(crate) fn rollout_of(rec: &JobRecord) -> Option<Rollout> {
    rec.data
        .get("rollout")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// The rollout as one line for people.
pub(crate) fn rollout_line(r: &Rollout, finished: bool) -> String {
    let mut parts = vec![format!(
        "{} server(s): {} installed, {} failed",
        r.servers, r.succeeded, r.failed
    )];
    let unsent = r.not_reached();
    if unsent > 0 {
        parts.push(format!(
            "{unsent} {}",
            if finished { "not reached" } else { "to go" }
        ));
    }
    if r.offline > 0 {
        parts.push(format!("{} offline (not sent)", r.offline));
    }
    if r.verified > 0 {
        parts.push(format!("{} verified serving", r.verified));
    }
    let whole = finished && r.failed == 0 && unsent == 0;
    let where_ = if whole {
        format!("in {} batch(es)", r.batches)
    } else if finished {
        format!("ended at {}", r.batch_name(r.batch))
    } else {
        format!("at {}", r.batch_name(r.batch))
    };
    format!(
        "{}; {where_}, canary {}, batches of {}, MaxErrors {}",
        parts.join(", "),
        r.canary,
        r.batch_size,
        r.max_errors
    )
}

/// The page as a table. BATCH is counted as notes and errors count it: `canary`, then
/// 1, 2, … (`has_canary`: the rollout had one).
pub(crate) fn table(rows: &[ServerRow], finished: bool, has_canary: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let status = match (&r.result.status, r.group.as_str()) {
                (Some(s), _) => s.to_string(),
                (None, rollout::OFFLINE) => format!(
                    "offline ({})",
                    r.result.ping.as_deref().unwrap_or("not online")
                ),
                (None, _) if finished => "not reached".into(),
                (None, _) => "pending".into(),
            };
            vec![
                r.id.clone(),
                rollout::batch_label(r.result.batch, has_canary),
                status,
                r.result.serial.clone().unwrap_or_else(|| "-".into()),
                r.result.served_serial.clone().unwrap_or_else(|| "-".into()),
                r.result
                    .detail
                    .clone()
                    .filter(|d| r.result.status.as_ref().is_none_or(|s| d != s.as_str()))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    view::table(
        &[
            "INSTANCE",
            "BATCH",
            "STATUS",
            "INSTALLED",
            "SERVED",
            "DETAIL",
        ],
        &cells,
    )
}

/// The page as JSON.
pub(crate) fn json(rows: &[ServerRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "InstanceId": r.id,
                    "Group": r.group,
                    "Batch": r.result.batch,
                    "Status": r.result.status,
                    "Detail": r.result.detail,
                    "Serial": r.result.serial,
                    "ServedSerial": r.result.served_serial,
                    "CommandId": r.result.command_id,
                })
            })
            .collect(),
    )
}

/// The command that shows the next page.
pub(crate) fn next_hint(id: &JobId, which: Which, limit: usize, next: &str) -> String {
    format!(
        "more servers: certflow jobs show {} --servers {} --limit {limit} --after '{}'",
        view::printable(id.as_str()),
        which.name(),
        view::printable(next)
    )
}

/// A page of a renewal's children with their current status: failed ones first.
pub(crate) async fn children(
    store: &Arc<dyn JobStore>,
    rec: &JobRecord,
    limit: usize,
) -> anyhow::Result<(Vec<ChildView>, usize)> {
    let id = &rec.job_id;
    let mut kids: Vec<Child> = view::children_of(rec);
    let mut total = kids.len();
    if kids.is_empty() {
        let not_ok = Groups::Except(vec![renew_certificate::ChildStatus::Succeeded
            .as_str()
            .to_ascii_lowercase()]);
        let mut entries = store
            .entries(id, renew_certificate::CHILDREN, &not_ok, None, limit)
            .await?
            .entries;
        if entries.len() < limit {
            let ok = Groups::Only(vec![renew_certificate::ChildStatus::Succeeded
                .as_str()
                .to_ascii_lowercase()]);
            entries.extend(
                store
                    .entries(
                        id,
                        renew_certificate::CHILDREN,
                        &ok,
                        None,
                        limit - entries.len(),
                    )
                    .await?
                    .entries,
            );
        }
        kids = entries
            .into_iter()
            .filter_map(|e| serde_json::from_value(e.data).ok())
            .collect();
        total = rec
            .data
            .get("started")
            .and_then(Value::as_u64)
            .map_or(kids.len(), |n| n as usize);
    }
    let mut out = Vec::new();
    for c in kids.into_iter().take(limit) {
        let now = store.get(&JobId::new(c.job_id.clone())).await?;
        out.push(ChildView {
            job_id: c.job_id,
            target: c.target,
            cert_name: c.cert_name,
            status: now
                .as_ref()
                .map_or_else(|| "NOT FOUND".to_string(), |r| r.status.to_string()),
            step: now.as_ref().map(|r| r.step.clone()),
            last_error: now.and_then(|r| r.last_error),
        });
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_line_says_where_it_stands() {
        let mut r = Rollout {
            servers: 60,
            succeeded: 60,
            canary: 1,
            batch_size: 6,
            batches: 11,
            batch: 10,
            ..Rollout::default()
        };
        assert_eq!(
            rollout_line(&r, true),
            "60 server(s): 60 installed, 0 failed; in 11 batch(es), canary 1, batches of 6, MaxErrors 0"
        );
        r.succeeded = 7;
        r.batch = 1;
        assert_eq!(
            rollout_line(&r, false),
            "60 server(s): 7 installed, 0 failed, 53 to go; at batch 1 of 10, canary 1, batches of 6, MaxErrors 0"
        );
        r.failed = 1;
        assert!(rollout_line(&r, true).contains("52 not reached; ended at batch 1 of 10"));
    }

    #[test]
    fn the_failed_first_cursor_names_its_phase() {
        assert_eq!(split_cursor(None), (true, None));
        assert_eq!(split_cursor(Some("f:i-1")), (true, Some("i-1")));
        assert_eq!(split_cursor(Some("r:i-9")), (false, Some("i-9")));
        assert_eq!(split_cursor(Some("r:")), (false, Some("")));
    }
}
