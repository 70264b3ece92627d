//! The console's pages over a job store in memory, through its router (no socket, no
//! AWS): what is escaped, what is refused, what the live parts answer. The pages over
//! the emulator, in a real browser, are `tests/tests/console.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use engine::backend::memory::MemoryJobStore;
use engine::{EventKind, JobStatus, JobStore};
use tower::ServiceExt;

use super::*;
use crate::cli::Cli;
use crate::testing::{event, job_at};

const BOUND: &str = "127.0.0.1:8080";
const SCRIPT: &str = "<script>document.title='pwned'</script>";
const IMG: &str = "<img src=x onerror=alert(1)>";

fn names() -> Names {
    Cli::parse_from(["certflow", "console"]).global.names
}

/// A store with a failed job whose error and labels hold markup, and a running one.
async fn store() -> Arc<dyn JobStore> {
    let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new());
    let mut failed = job_at("j-failed", JobStatus::Failed, 2_000);
    failed.last_error = Some(format!("install failed on i-1: {SCRIPT}"));
    failed.labels.insert("CertName".into(), IMG.into());
    failed
        .labels
        .insert("Target".into(), "Environment=Production".into());
    let mut created = event(1, 0, EventKind::Created, "check");
    created.to_status = JobStatus::Pending;
    store.create(&failed, &created).await.unwrap();
    let running = job_at("j-running", JobStatus::Running, 1_000);
    store.create(&running, &created).await.unwrap();
    store
}

/// The console's app over `store`, served on [`BOUND`].
fn app(store: &Arc<dyn JobStore>) -> axum::Router {
    let console = Console {
        sdk: aws_config::SdkConfig::builder().build(),
        names: names(),
        store: store.clone(),
    };
    let bound: SocketAddr = BOUND.parse().unwrap();
    guard::layer(router(console), guard::Hosts::new(bound.ip(), &[]))
}

/// Sends `method uri` with `headers` (a `Host` among them, as browsers always send one).
async fn send(
    store: &Arc<dyn JobStore>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = app(store)
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap(), headers)
}

async fn get(
    store: &Arc<dyn JobStore>,
    uri: &str,
    host: &str,
) -> (StatusCode, String, axum::http::HeaderMap) {
    send(store, "GET", uri, &[("host", host)]).await
}

/// HTML text as a browser shows it (the entities askama writes).
fn unescape(html: &str) -> String {
    [
        ("&#60;", "<"),
        ("&#62;", ">"),
        ("&#39;", "'"),
        ("&#34;", "\""),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#x27;", "'"),
        ("&#38;", "&"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(html.to_string(), |s, (from, to)| s.replace(from, to))
}

#[tokio::test]
async fn markup_in_a_job_is_shown_as_text_on_every_page_that_shows_it() {
    let store = store().await;
    for uri in ["/jobs", "/jobs?status=FAILED", "/jobs/j-failed"] {
        let (status, html, headers) = get(&store, uri, BOUND).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {html}");
        assert!(
            !html.contains(SCRIPT) && !html.contains(IMG),
            "{uri} holds raw markup:\n{html}"
        );
        let text = unescape(&html);
        assert!(
            text.contains(&format!("install failed on i-1: {SCRIPT}")),
            "{uri} shows the error as text:\n{html}"
        );
        assert!(text.contains(IMG), "{uri} shows the name as text:\n{html}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
    }
}

#[tokio::test]
async fn only_get_is_answered_only_for_this_machine_and_only_from_its_own_pages() {
    let store = store().await;
    let (status, body, _) = get(&store, "/jobs", "evil.example:8080").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "DNS rebinding");
    assert!(body.contains("127.0.0.1, localhost, [::1]"), "{body}");
    // Any port: an SSH tunnel's local port may differ from the console's.
    for host in ["localhost:8080", "127.0.0.1:9000", "[::1]:8080"] {
        let (status, _, _) = get(&store, "/jobs", host).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    for site in ["cross-site", "same-site"] {
        let (status, _, _) = send(
            &store,
            "GET",
            "/dead-letters",
            &[("host", BOUND), ("sec-fetch-site", site)],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{site}");
    }
    for site in ["same-origin", "none"] {
        let (status, _, _) = send(
            &store,
            "GET",
            "/jobs",
            &[("host", BOUND), ("sec-fetch-site", site)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{site}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (status, _, _) = send(&store, method, "/jobs/j-failed", &[("host", BOUND)]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
}

#[tokio::test]
async fn a_missing_job_or_a_bad_filter_says_what_to_do() {
    let store = store().await;
    let (status, html, _) = get(&store, "/jobs/nope", BOUND).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("job nope not found: check the id"), "{html}");
    let (status, html, _) = get(&store, "/jobs?status=DONE", BOUND).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        unescape(&html).contains(r#"no status "DONE": choose all, active"#),
        "{html}"
    );
    let (status, html, _) = get(&store, "/jobs?workflow=export", BOUND).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("certflow runs export-certificate, renew-certificate"),
        "{html}"
    );
    let (status, _, _) = get(&store, "/nowhere", BOUND).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_live_parts_answer_204_until_something_changed() {
    let store = store().await;
    let (_, html, _) = get(&store, "/jobs/j-failed", BOUND).await;
    assert!(
        html.contains(r#"data-live="/jobs/j-failed/live?servers=failed-first""#),
        "{html}"
    );
    // What the page shows: version 1, this minute.
    let shown = hash_of(&html);
    assert!(shown.starts_with("1-"), "{shown}");
    let (status, _, _) = get(
        &store,
        &format!("/jobs/j-failed/live?servers=failed-first&h={shown}"),
        BOUND,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "nothing changed");
    let (status, part, _) = get(
        &store,
        "/jobs/j-failed/live?servers=failed-first&h=0-0",
        BOUND,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(part.starts_with(r#"<section id="job""#), "{part}");

    let (_, list, _) = get(&store, "/jobs", BOUND).await;
    let hash = hash_of(&list);
    let (status, _, _) = get(&store, &format!("/jobs/live?h={hash}"), BOUND).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A job appears: the list's part comes back, with it.
    let mut created = event(1, 0, EventKind::Created, "check");
    created.to_status = JobStatus::Pending;
    store
        .create(&job_at("j-new", JobStatus::Pending, 9_000), &created)
        .await
        .unwrap();
    let (status, part, _) = get(&store, &format!("/jobs/live?h={hash}"), BOUND).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        part.starts_with(r#"<section id="jobs""#) && part.contains("j-new"),
        "{part}"
    );
}

/// The `data-hash` of a page's live part.
fn hash_of(html: &str) -> String {
    html.split(r#"data-hash=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string()
}

#[test]
fn the_host_check_accepts_this_machine_and_the_names_given() {
    let loopback = guard::Hosts::new("127.0.0.1".parse().unwrap(), &[]);
    for ok in [
        "127.0.0.1:8080",
        "localhost:1",
        "LOCALHOST",
        "[::1]:8080",
        "[::1]",
    ] {
        assert!(loopback.allows(ok), "{ok}");
    }
    for bad in [
        "evil.example:8080",
        "127.0.0.1.evil.example:8080",
        "",
        ":8080",
        "10.0.0.5:8080",
    ] {
        assert!(!loopback.allows(bad), "{bad}");
    }
    let served = guard::Hosts::new("10.0.0.5".parse().unwrap(), &["Ops.Internal".into()]);
    for ok in ["10.0.0.5:8080", "ops.internal:8080", "localhost:8080"] {
        assert!(served.allows(ok), "{ok}");
    }
    assert!(!served.allows("evil.example:8080"));
    let any = guard::Hosts::new("0.0.0.0".parse().unwrap(), &[]);
    assert!(
        !any.allows("0.0.0.0:8080"),
        "no browser names 0.0.0.0 for a machine"
    );
}

#[test]
fn an_address_other_hosts_reach_is_refused_unless_asked_for_and_then_warned_about() {
    let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let e = guard::check_bind(any, false).unwrap_err().to_string();
    assert!(e.starts_with("refusing to serve the console on 0.0.0.0:8080, which is not a loopback address: the console has no login of its own"), "{e}");
    assert!(
        e.contains("--allow-non-loopback") && e.contains("ssh -L 8080:127.0.0.1:8080"),
        "{e}"
    );
    let w = guard::check_bind(any, true).unwrap().unwrap();
    assert!(
        w.starts_with("warning: serving the console on 0.0.0.0:8080 (--allow-non-loopback)"),
        "{w}"
    );
    assert_eq!(
        guard::check_bind("127.0.0.1:0".parse().unwrap(), false).unwrap(),
        None
    );
    assert_eq!(
        guard::check_bind("[::1]:0".parse().unwrap(), false).unwrap(),
        None
    );
}

#[test]
fn values_in_links_are_percent_encoded_whole() {
    assert_eq!(
        page::encode("arn:aws:acm:us-east-1:1:certificate/a b+c&d=é"),
        "arn%3Aaws%3Aacm%3Aus-east-1%3A1%3Acertificate%2Fa%20b%2Bc%26d%3D%C3%A9"
    );
    assert_eq!(page::encode("job-1_2.3~"), "job-1_2.3~");
}
