//! Who may reach the console, and what a browser may do with its pages: the bind policy
//! (loopback unless told otherwise), the `Host` check against DNS rebinding, the refusal
//! of requests another site makes the browser send, and the headers every answer carries
//! (rules 1, 3 and 4 of the module doc).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// Only the console's own stylesheet and script; no frames, no plugins, no form posts
/// anywhere else, no inline script (so markup that slipped into a value could not run).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Host names that always mean this machine.
const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost", "[::1]"];

/// An address the console will not serve on without being told to.
#[derive(Debug, thiserror::Error)]
#[error("refusing to serve the console on {addr}, which is not a loopback address: {risk}. Serve it on 127.0.0.1 (the default) and reach it through an SSH tunnel ({tunnel}), or pass --allow-non-loopback if you mean it")]
pub(crate) struct NotLoopback {
    addr: SocketAddr,
    risk: String,
    tunnel: String,
}

fn risk(addr: SocketAddr) -> String {
    format!(
        "the console has no login of its own: anyone who can reach {addr} reads every job, server, inventory row and dead letter with your AWS credentials"
    )
}

fn tunnel(addr: SocketAddr) -> String {
    format!(
        "ssh -L {port}:127.0.0.1:{port} THIS_HOST, then open http://127.0.0.1:{port}/",
        port = addr.port()
    )
}

/// Refuses an address other hosts can reach unless `allowed`; when allowed, the warning
/// to print.
pub(crate) fn check_bind(addr: SocketAddr, allowed: bool) -> Result<Option<String>, NotLoopback> {
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    if !allowed {
        return Err(NotLoopback {
            addr,
            risk: risk(addr),
            tunnel: tunnel(addr),
        });
    }
    Ok(Some(format!(
        "warning: serving the console on {addr} (--allow-non-loopback): {}; keep it behind a firewall or a VPN, or use an SSH tunnel instead ({}). Browsers must name it by the address served on or a host given with --allowed-host",
        risk(addr),
        tunnel(addr)
    )))
}

/// The host names requests may carry.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    /// The loopback names, the address served on (unless it is `0.0.0.0` or `::`), and
    /// the names given.
    pub(crate) fn new(bound: IpAddr, extra: &[String]) -> Hosts {
        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        if !bound.is_unspecified() && !bound.is_loopback() {
            names.push(match bound {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        names.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()));
        Hosts { names }
    }

    /// Whether a `Host` header names one of them, at any port: a tunnel's local port may
    /// differ from the console's, and the port adds nothing against rebinding (the other
    /// site's requests carry its own name).
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            // `[::1]:8080`, `127.0.0.1:8080`, `localhost:8080`; a bare `[::1]` has no port.
            Some((name, port)) if !port.ends_with(']') => name,
            _ => host,
        };
        let name = name.to_ascii_lowercase();
        !name.is_empty() && self.names.contains(&name)
    }
}

/// Wraps `app` in the checks and the headers every answer carries.
pub(crate) fn layer(app: Router, hosts: Hosts) -> Router {
    app.layer(middleware::from_fn_with_state(Arc::new(hosts), guard))
}

async fn guard(State(hosts): State<Arc<Hosts>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !hosts.allows(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this console answers to {} (the request named host {:?}); another name needs --allowed-host",
                hosts.names.join(", "),
                crate::view::printable(host)
            ),
        );
    }
    // A page of another site cannot read the console's answers, but could still make the
    // browser send requests that cost reads on production tables: browsers say where a
    // request comes from, and only the console's own pages (or a typed address) count.
    let site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("none");
    if matches!(site, "cross-site" | "same-site") {
        return refuse(
            StatusCode::FORBIDDEN,
            "the console answers only its own pages and addresses typed into the browser, not requests another site makes".to_string(),
        );
    }
    let mut r = next.run(req).await;
    secure(&mut r);
    r
}

fn refuse(status: StatusCode, why: String) -> Response {
    let mut r = (status, why).into_response();
    secure(&mut r);
    r
}

fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    // The pages show live state read with the operator's credentials: never cached (the
    // assets set their own lifetime).
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
