//! The jobs page: the jobs table newest first through the same index merge as
//! `certflow jobs list` (`crate::paging`), filtered by status, workflow, certificate and
//! time, a page at a time; its first page refreshes itself while it is open.

use std::hash::{Hash, Hasher};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::{Clock, JobRecord, JobStatus, SystemClock};
use serde::Deserialize;

use super::page::{self, encode, PageError, Tab};
use super::Console;
use crate::paging;

/// Jobs on one page: a screenful, and one index Query per status.
const PAGE_SIZE: usize = 50;
/// Characters of a job's last error shown in the table (the job's page shows all of it).
const ERROR_CHARS: usize = 140;
/// The choices of the time filter (any humantime duration is accepted in the URL).
const SINCE_CHOICES: &[(&str, &str)] = &[
    ("", "any time"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

/// The filters, as the form sends them (every field optional, so a bare `/jobs` works).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Filters {
    /// `all` (or empty), `active`, or one status.
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    certificate: String,
    /// A duration: `1h`, `24h`, `7d`.
    #[serde(default)]
    since: String,
    #[serde(default)]
    cursor: String,
    /// The live part's fingerprint the browser has (`/jobs/live` only).
    #[serde(default)]
    h: String,
}

impl Filters {
    fn query(&self, now: engine::Millis) -> Result<paging::Query, PageError> {
        let status = self.status.trim();
        let statuses = match status.to_ascii_uppercase().as_str() {
            "" | "ALL" => JobStatus::ALL.to_vec(),
            "ACTIVE" => JobStatus::ACTIVE.to_vec(),
            s => match JobStatus::ALL.iter().find(|st| st.as_str() == s) {
                Some(st) => vec![*st],
                None => {
                    return Err(PageError::BadRequest(format!(
                        "no status {status:?}: choose all, active, PENDING, RUNNING, WAITING, SUCCEEDED, FAILED or CANCELLED"
                    )))
                }
            },
        };
        let workflow = match self.workflow.trim() {
            "" => None,
            w => Some(crate::cli::parse_workflow(w).map_err(PageError::BadRequest)?),
        };
        let since = match self.since.trim() {
            "" => None,
            s => {
                let d = humantime::parse_duration(s).map_err(|e| {
                    PageError::BadRequest(format!(
                        "the time filter {s:?} is not a duration ({e}): use 1h, 24h or 7d"
                    ))
                })?;
                // Saturating: `since=1000y` means every job, not an overflow.
                Some(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
            }
        };
        let certificate = self.certificate.trim();
        Ok(paging::Query {
            statuses,
            certificate_arn: (!certificate.is_empty()).then(|| certificate.to_string()),
            since,
            workflow,
            limit: PAGE_SIZE,
        })
    }

    fn selected_workflow(&self, w: &str) -> bool {
        self.workflow.trim() == w
    }

    fn selected_since(&self, v: &str) -> bool {
        self.since.trim() == v
    }

    fn selected_status(&self, s: &str) -> bool {
        let mine = self.status.trim();
        mine.eq_ignore_ascii_case(s) || (mine.is_empty() && s == "all")
    }

    /// The query string of these filters (no cursor), for links and the live part.
    fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("status", &self.status),
            ("workflow", &self.workflow),
            ("certificate", &self.certificate),
            ("since", &self.since),
        ] {
            let v = v.trim();
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        parts.join("&")
    }
}

/// One row of the table.
pub(crate) struct Row {
    id: String,
    workflow: String,
    status: String,
    status_class: &'static str,
    step: String,
    attempt: u32,
    href: String,
    target: String,
    cert_name: String,
    certificate: String,
    /// This certificate's jobs (empty when the job names no certificate).
    certificate_href: String,
    certificate_arn: String,
    updated: String,
    updated_ago: String,
    error: String,
    error_full: String,
}

impl Row {
    fn of(r: &JobRecord, now: engine::Millis) -> Row {
        let label = |k: &str| r.labels.get(k).cloned().unwrap_or_default();
        let error_full = r.last_error.clone().unwrap_or_default();
        let arn = label("CertificateArn");
        Row {
            href: format!("/jobs/{}", encode(r.job_id.as_str())),
            certificate_href: if arn.is_empty() {
                String::new()
            } else {
                format!("/jobs?certificate={}", encode(&arn))
            },
            id: r.job_id.to_string(),
            workflow: r.workflow.clone(),
            status: r.status.to_string(),
            status_class: page::status_class(r.status),
            step: r.step.clone(),
            attempt: r.attempt,
            target: label("Target"),
            cert_name: label("CertName"),
            certificate: crate::view::certificate_id(&arn),
            certificate_arn: arn,
            updated: page::when(r.updated_at),
            updated_ago: page::ago(r.updated_at, now),
            error: crate::view::clip(&error_full, ERROR_CHARS),
            error_full,
        }
    }
}

/// The live part of the page: the table and the link to the next page.
#[derive(Template)]
#[template(path = "console/jobs_table.html")]
pub(crate) struct Table {
    rows: Vec<Row>,
    /// The href of the next page, when there is one.
    next: Option<String>,
    /// Fingerprint of what the table shows (ids and versions).
    hash: String,
    /// Where the browser asks for a fresh copy; empty when the page does not refresh
    /// (a later page: rows moving under the reader would be confusing).
    live: String,
    filtered: bool,
    /// The page ended early: this many jobs of other workflows were read past.
    cut: Option<usize>,
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    tab: Tab,
    f: Filters,
    statuses: Vec<(&'static str, &'static str)>,
    workflows: &'static [&'static str],
    since_choices: &'static [(&'static str, &'static str)],
    table: Table,
}

async fn table(console: &Console, f: &Filters) -> Result<Table, PageError> {
    let now = SystemClock.now();
    let q = f.query(now)?;
    let cursor = f.cursor.trim();
    let listing = paging::list(&console.store, &q, (!cursor.is_empty()).then_some(cursor))
        .await
        .map_err(|e| match e.downcast_ref::<paging::CursorError>() {
            Some(_) => PageError::BadRequest(
                "this page's link belongs to another listing, or was cut short: start again from the first page".into(),
            ),
            None => console.failed(e),
        })?;
    // What the table shows: its jobs, and the minute (its "3m ago" texts age).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (now / 60_000).hash(&mut hasher);
    for j in &listing.jobs {
        (j.job_id.as_str(), j.version).hash(&mut hasher);
    }
    let qs = f.query_string();
    let sep = if qs.is_empty() { "" } else { "&" };
    // Only the first page refreshes itself, and not with a workflow filter: that reads
    // past other workflows' jobs, too much to repeat every two seconds.
    let live = cursor.is_empty() && q.workflow.is_none();
    Ok(Table {
        rows: listing.jobs.iter().map(|r| Row::of(r, now)).collect(),
        next: listing
            .next_cursor
            .map(|c| format!("/jobs?{qs}{sep}cursor={}", encode(&c))),
        hash: format!("{:016x}", hasher.finish()),
        live: if live {
            format!("/jobs/live?{qs}")
        } else {
            String::new()
        },
        filtered: !qs.is_empty(),
        cut: listing.cut.then_some(listing.skipped),
    })
}

/// `GET /jobs`.
pub(crate) async fn page(
    State(console): State<Console>,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    let table = table(&console, &f).await?;
    let mut statuses = vec![
        ("all", "all"),
        ("active", "active (pending, running, waiting)"),
    ];
    statuses.extend(JobStatus::ALL.iter().map(|s| (s.as_str(), s.as_str())));
    page::html(&JobsPage {
        tab: Tab::Jobs,
        f,
        statuses,
        workflows: workflows::WORKFLOW_NAMES,
        since_choices: SINCE_CHOICES,
        table,
    })
}

/// `GET /jobs/live`: the table again when it changed since the fingerprint `h`, else 204.
pub(crate) async fn live(
    State(console): State<Console>,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    let table = table(
        &console,
        &Filters {
            cursor: String::new(),
            ..f.clone()
        },
    )
    .await?;
    if table.hash == f.h {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    page::html(&table)
}
