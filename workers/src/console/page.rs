//! What every page shares: rendering a template into a response, the error page (an
//! error is a page that says what went wrong and what to do, never a bare 500), and the
//! small formatting rules (times, statuses) the templates use.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use engine::clock::rfc3339;
use engine::{JobStatus, Millis};

use super::Console;

/// Which tab of the navigation bar a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Jobs,
    Certificates,
    DeadLetters,
    None,
}

impl Tab {
    /// The tab's name, as the navigation bar's template compares it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tab::Jobs => "jobs",
            Tab::Certificates => "certificates",
            Tab::DeadLetters => "dead-letters",
            Tab::None => "",
        }
    }
}

/// A page that could not be shown, and why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// What was asked for does not exist (a job id, a path).
    #[error("{0}")]
    NotFound(String),
    /// The request itself was wrong (a filter or cursor that does not parse).
    #[error("{0}")]
    BadRequest(String),
    /// Reading AWS failed; the message says what to check.
    #[error("{0}")]
    Failed(String),
    /// The console itself failed (a page that would not render).
    #[error("{0}")]
    Internal(String),
}

impl Console {
    /// A failed read, in the words the CLI would use (a missing table names the setting
    /// and `certflow bootstrap`).
    pub(crate) fn failed(&self, e: anyhow::Error) -> PageError {
        let region = crate::aws::region(&self.sdk);
        let e = crate::explain::explained(e, &self.names, &region);
        PageError::Failed(crate::error_text(&e))
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    tab: Tab,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            PageError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            PageError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            PageError::Failed(_) => (StatusCode::BAD_GATEWAY, "Could not read AWS"),
            PageError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "The console failed"),
        };
        let message = self.to_string();
        let page = ErrorPage {
            tab: Tab::None,
            title,
            message: &message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// A rendered template as an HTML answer.
pub(crate) fn html(t: &impl Template) -> Result<Response, PageError> {
    t.render()
        .map(|s| Html(s).into_response())
        .map_err(|e| PageError::Internal(format!("rendering the page failed: {e}")))
}

/// The fallback route.
pub(crate) async fn not_found() -> PageError {
    PageError::NotFound(
        "no such page: the console has Jobs (/jobs), Certificates (/certificates) and Dead letters (/dead-letters)".into(),
    )
}

/// An instant as the pages show it: UTC to the second.
pub(crate) fn when(ms: Millis) -> String {
    let s = rfc3339(ms);
    // `2026-12-05T17:13:01.123Z` → `2026-12-05 17:13:01Z`: the milliseconds are noise here.
    match s.split_once('.') {
        Some((head, _)) => format!("{}Z", head.replacen('T', " ", 1)),
        None => s.replacen('T', " ", 1),
    }
}

/// How long ago `then` was, in a few characters (`12s ago`, `3m ago`, `5h ago`, `2d ago`).
pub(crate) fn ago(then: Millis, now: Millis) -> String {
    let s = (now - then).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The CSS class of a status badge.
pub(crate) fn status_class(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Succeeded => "ok",
        JobStatus::Failed => "bad",
        JobStatus::Cancelled => "muted",
        JobStatus::Running => "run",
        JobStatus::Pending | JobStatus::Waiting => "wait",
    }
}

/// A CLI command line shown for copying. Values are single-quoted for a POSIX shell
/// when they hold anything but the characters ids and ARNs are made of.
pub(crate) fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/=,@+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What [`encode`] leaves as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A value percent-encoded for a URL's path segment or query (ids, ARNs, cursors).
pub(crate) fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, UNRESERVED).to_string()
}
