//! A job's page: its record, its timeline as bars per step ([`super::timeline`]) and as
//! the full history, the servers of its rollout a page at a time (failures first), the
//! children of a renewal, and the CLI commands that act on it. The live part refreshes
//! itself when the job's record version changes.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::{Clock, HistoryEvent, JobId, JobRecord, SystemClock};
use serde::Deserialize;
use serde_json::Value;

use super::page::{self, encode, shell_word, PageError, Tab};
use super::timeline::{self, Timeline, AXIS};
use super::Console;
use crate::servers::{self, Which};
use crate::view::{self, ChildView};
use workflows::export_certificate::InstanceStatus;

/// Servers on one page of a job.
const SERVERS_PAGE: usize = 50;
/// Children of a renewal shown (failures first).
const CHILDREN_SHOWN: usize = 50;
/// History events listed (the newest): a job that polled for hours has thousands, which
/// `certflow jobs show` prints whole.
const HISTORY_SHOWN: usize = 200;

/// Which servers, and where the page starts.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Params {
    #[serde(default)]
    servers: String,
    #[serde(default)]
    after: String,
    /// The record version the browser shows (`/live` only).
    #[serde(default)]
    h: String,
}

impl Params {
    fn which(&self) -> Result<Which, PageError> {
        Ok(match self.servers.trim() {
            "" | "failed-first" => Which::FailedFirst,
            "failed" => Which::Failed,
            "ok" => Which::Ok,
            "pending" => Which::Pending,
            "offline" => Which::Offline,
            "all" => Which::All,
            other => {
                return Err(PageError::BadRequest(format!(
                    "no server filter {other:?}: choose failed-first, failed, ok, pending, offline or all"
                )))
            }
        })
    }
}

/// A field of the record, for the facts list.
struct Fact {
    name: String,
    value: String,
}

/// One history event, as the history table shows it.
struct Event {
    seq: u32,
    step: String,
    attempt: String,
    started: String,
    took: String,
    outcome: String,
    class: &'static str,
    error: String,
    note: String,
}

/// One server of the rollout.
struct Server {
    id: String,
    batch: u32,
    status: String,
    class: &'static str,
    serial: String,
    served: String,
    /// Serials clipped for the table (the whole one is the cell's tooltip).
    serial_short: String,
    served_short: String,
    detail: String,
}

impl Server {
    fn with_short_serials(mut self) -> Server {
        self.serial_short = clip_serial(&self.serial);
        self.served_short = clip_serial(&self.served);
        self
    }
}

fn clip_serial(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        view::serial_cell(Some(s))
    }
}

/// One child of a renewal.
struct Child {
    id: String,
    href: String,
    target: String,
    cert_name: String,
    status: String,
    class: &'static str,
    step: String,
    error: String,
}

/// A copyable command line, and what it does.
struct Command {
    what: &'static str,
    line: String,
}

/// Everything below the page's title: the part that refreshes itself.
#[derive(Template)]
#[template(path = "console/job_body.html")]
pub(crate) struct Body {
    id: String,
    /// The page's own path (`/jobs/<id>`), for its links.
    base: String,
    /// What the live part shows: the record's version, and the minute (its "ago" texts).
    hash: String,
    live: String,
    status: String,
    status_class: &'static str,
    terminal: bool,
    facts: Vec<Fact>,
    last_error: Option<String>,
    commands: Vec<Command>,
    timeline: Timeline,
    /// When the timeline's axis starts.
    started: String,
    axis: f64,
    events: Vec<Event>,
    /// Older events not listed.
    events_hidden: usize,
    rollout: Option<String>,
    server_filter: &'static str,
    filters: Vec<(&'static str, &'static str)>,
    servers: Vec<Server>,
    servers_next: Option<String>,
    legacy: Vec<Server>,
    children: Vec<Child>,
    children_total: usize,
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    tab: Tab,
    id: String,
    workflow: String,
    body: Body,
}

/// The CSS class of an SSM invocation status (`None`: not sent yet).
fn ssm_class(s: Option<&InstanceStatus>) -> &'static str {
    match s {
        Some(InstanceStatus::Success) => "ok",
        Some(InstanceStatus::Failed | InstanceStatus::TimedOut | InstanceStatus::Cancelled) => {
            "bad"
        }
        Some(InstanceStatus::InProgress | InstanceStatus::Cancelling) => "run",
        Some(InstanceStatus::Other(_)) => "bad",
        Some(InstanceStatus::Pending | InstanceStatus::Delayed) | None => "wait",
    }
}

/// The CSS class of a child's status as [`ChildView`] words it (`NOT FOUND` when its
/// record is gone).
fn child_class(status: &str) -> &'static str {
    engine::JobStatus::parse(status).map_or("muted", page::status_class)
}

fn facts(rec: &JobRecord, now: engine::Millis) -> Vec<Fact> {
    let mut out = Vec::new();
    let mut add = |k: &str, v: String| {
        out.push(Fact {
            name: k.to_string(),
            value: v,
        })
    };
    add("Workflow", rec.workflow.clone());
    add("Step", format!("{} (attempt {})", rec.step, rec.attempt));
    for (k, v) in &rec.labels {
        add(k, v.clone());
    }
    let at = |t| format!("{} ({})", page::when(t), page::ago(t, now));
    add("Created", at(rec.created_at));
    add("Updated", at(rec.updated_at));
    if rec.status.is_terminal() {
        add(
            "Took",
            view::duration((rec.updated_at - rec.created_at).max(0) as u64),
        );
    } else {
        add("Next wake", page::when(rec.next_wake_at));
        add("Deadline", page::when(rec.deadline_at));
        if let Some(owner) = &rec.lease_owner {
            add("Leased by", owner.clone());
        }
        if rec.cancel_requested {
            add(
                "Cancel",
                "requested: stops at its next step boundary".into(),
            );
        }
    }
    // The request a job was started from (an export's fields; none is secret), as sent:
    // an operator checks what was asked before what went wrong.
    // Fields already shown as labels are not repeated (the target's two are its `Target`).
    if let Some(req) = rec.data.get("request").and_then(Value::as_object) {
        for (k, v) in req {
            if let Some(v) = v.as_str() {
                let shown = rec.labels.contains_key(k)
                    || (k.starts_with("TargetTag") && rec.labels.contains_key("Target"));
                if !shown {
                    add(&format!("Request {k}"), v.to_string());
                }
            }
        }
    }
    for (field, name) in [
        ("not_after", "Cert expires"),
        ("serial", "Serial"),
        ("command_id", "SSM command"),
    ] {
        if let Some(v) = rec.data.get(field).and_then(Value::as_str) {
            add(name, v.to_string());
        }
    }
    out
}

fn commands(rec: &JobRecord) -> Vec<Command> {
    let id = shell_word(rec.job_id.as_str());
    let mut out = vec![Command {
        what: "Show it in the terminal",
        line: format!("certflow jobs show {id}"),
    }];
    match rec.status {
        engine::JobStatus::Failed => out.push(Command {
            what: "Resume it where it failed, once the cause is fixed",
            line: format!("certflow jobs retry {id} --wait"),
        }),
        s if !s.is_terminal() => {
            out.push(Command {
                what: "Follow it",
                line: format!("certflow jobs watch {id}"),
            });
            out.push(Command {
                what: "Stop it at its next step boundary",
                line: format!("certflow jobs cancel {id}"),
            });
        }
        _ => {}
    }
    out
}

fn event(e: &HistoryEvent) -> Event {
    let started = e.at - e.duration_ms.map_or(0, |d| d as engine::Millis);
    Event {
        seq: e.seq,
        step: e.step.clone(),
        attempt: if e.attempt == 0 {
            String::new()
        } else {
            e.attempt.to_string()
        },
        started: page::when(started),
        took: e.duration_ms.map(view::duration).unwrap_or_default(),
        outcome: view::outcome(e),
        class: match e.kind {
            engine::EventKind::Failed => "bad",
            engine::EventKind::RetryScheduled => "retry",
            engine::EventKind::Succeeded => "ok",
            _ => "",
        },
        error: e.error.clone().unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
    }
}

fn server(id: String, r: &workflows::export_certificate::rollout::ServerResult) -> Server {
    let status = r
        .status
        .as_ref()
        .map_or_else(|| "not sent".to_string(), |s| s.to_string());
    Server {
        class: ssm_class(r.status.as_ref()),
        id,
        batch: r.batch,
        status,
        serial: r.serial.clone().unwrap_or_default(),
        served: r.served_serial.clone().unwrap_or_default(),
        serial_short: String::new(),
        served_short: String::new(),
        // SSM's details repeat the status when all went well.
        detail: r
            .detail
            .clone()
            .filter(|d| Some(d.as_str()) != r.status.as_ref().map(|s| s.as_str()))
            .unwrap_or_default(),
    }
    .with_short_serials()
}

fn child(c: ChildView) -> Child {
    Child {
        href: format!("/jobs/{}", encode(&c.job_id)),
        class: child_class(&c.status),
        id: c.job_id,
        target: c.target,
        cert_name: c.cert_name,
        status: c.status,
        step: c.step.unwrap_or_default(),
        error: c.last_error.unwrap_or_default(),
    }
}

const FILTERS: &[(&str, &str)] = &[
    ("failed-first", "failed first"),
    ("failed", "failed"),
    ("ok", "installed"),
    ("pending", "pending"),
    ("offline", "offline"),
    ("all", "all"),
];

async fn body(console: &Console, rec: JobRecord, p: &Params) -> Result<Body, PageError> {
    let now = SystemClock.now();
    let which = p.which()?;
    let store = &console.store;
    let id = rec.job_id.clone();
    let after = p.after.trim();
    let rollout = servers::rollout_of(&rec);
    // Only a job with a rollout has servers, and only a renewal children: the others'
    // pages make no Query for them. The reads go out together (one round trip).
    let renewal = rec.workflow == workflows::renew_certificate::NAME;
    let (history, page, kids) = tokio::join!(
        store.history(&id),
        async {
            match rollout {
                Some(_) => {
                    let after = (!after.is_empty()).then_some(after);
                    servers::page(store, &rec, which, after, SERVERS_PAGE).await
                }
                None => Ok(servers::ServerPage::default()),
            }
        },
        async {
            match renewal {
                true => servers::children(store, &rec, CHILDREN_SHOWN).await,
                false => Ok((Vec::new(), 0)),
            }
        },
    );
    let history = history.map_err(|e| console.failed(e.into()))?;
    let page = page.map_err(|e| console.failed(e))?;
    let (kids, total) = kids.map_err(|e| console.failed(e))?;
    let terminal = rec.status.is_terminal();
    let filter = FILTERS
        .iter()
        .find(|(k, _)| *k == p.servers.trim())
        .map_or("failed-first", |(k, _)| k);
    let base = format!("/jobs/{}", encode(id.as_str()));
    let until = if terminal { rec.updated_at } else { now };
    let current = (!terminal).then_some(rec.step.as_str());
    let mut kids: Vec<Child> = kids.into_iter().map(child).collect();
    // Failures first, whatever order the record kept them in (renewals from before
    // child entries list them as started).
    kids.sort_by_key(|c| c.status != "FAILED");
    let events_hidden = history.len().saturating_sub(HISTORY_SHOWN);
    let mut live = format!("{base}/live?servers={filter}");
    if !after.is_empty() {
        live.push_str(&format!("&after={}", encode(after)));
    }
    let timeline = timeline::build(&history, until, current);
    Ok(Body {
        id: id.to_string(),
        base: base.clone(),
        hash: live_hash(rec.version, now),
        live,
        status: rec.status.to_string(),
        status_class: page::status_class(rec.status),
        terminal,
        facts: facts(&rec, now),
        last_error: rec.last_error.clone(),
        commands: commands(&rec),
        started: page::when(timeline.from),
        timeline,
        axis: AXIS,
        events: history.iter().skip(events_hidden).map(event).collect(),
        events_hidden,
        rollout: rollout.as_ref().map(|r| servers::rollout_line(r, terminal)),
        server_filter: filter,
        filters: FILTERS.to_vec(),
        servers: page
            .rows
            .iter()
            .map(|r| server(r.id.clone(), &r.result))
            .collect(),
        servers_next: page
            .next
            .map(|n| format!("{base}?servers={filter}&after={}", encode(&n))),
        legacy: view::instances(&rec)
            .iter()
            .map(|(id, r)| {
                Server {
                    id: id.clone(),
                    batch: 0,
                    status: r.status.to_string(),
                    class: ssm_class(Some(&r.status)),
                    serial: r.serial.clone().unwrap_or_default(),
                    served: String::new(),
                    serial_short: String::new(),
                    served_short: String::new(),
                    detail: r.detail.clone().unwrap_or_default(),
                }
                .with_short_serials()
            })
            .collect(),
        children: kids,
        children_total: total,
    })
}

async fn read(console: &Console, id: &str) -> Result<JobRecord, PageError> {
    let id = JobId::new(id.to_string());
    match console.store.get(&id).await.map_err(|e| console.failed(e.into()))? {
        Some(rec) => Ok(rec),
        None => Err(PageError::NotFound(format!(
            "job {id} not found: check the id, and that CERTFLOW_JOBS_TABLE ({}) names the table it ran in; finished jobs are kept 30 days",
            console.names.jobs_table
        ))),
    }
}

/// `GET /jobs/{id}`.
pub(crate) async fn page(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Response, PageError> {
    let rec = read(&console, &id).await?;
    let workflow = rec.workflow.clone();
    let body = body(&console, rec, &p).await?;
    page::html(&JobPage {
        tab: Tab::Jobs,
        id: body.id.clone(),
        workflow,
        body,
    })
}

/// `GET /jobs/{id}/live`: the page's live part when the record's version is not `h`
/// (one read of the record when nothing changed), else 204.
pub(crate) async fn live(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Result<Response, PageError> {
    let rec = read(&console, &id).await?;
    if p.h == live_hash(rec.version, SystemClock.now()) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    page::html(&body(&console, rec, &p).await?)
}

/// The live part's fingerprint: a new version, or a new minute, is a new page.
fn live_hash(version: u64, now: engine::Millis) -> String {
    format!("{version}-{}", now / 60_000)
}
