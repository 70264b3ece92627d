//! Who may reach the console, and what a browser may do with its pages: the bind policy
//! (loopback unless told otherwise), the `Host` check against DNS rebinding, and the
//! headers every answer carries (rules 1, 3 and 4 of the module doc).

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// Only the console's own stylesheet and script; no frames, no plugins, no form posts
/// anywhere else, no inline script (so markup that slipped into a value could not run).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Refuses an address other hosts can reach unless `allowed`, and says why; when allowed,
/// the warning to print.
pub(crate) fn check_bind(addr: SocketAddr, allowed: bool) -> anyhow::Result<Option<String>> {
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    let risk = format!(
        "the console has no login of its own: anyone who can reach {addr} reads every job, server, inventory row and dead letter with your AWS credentials"
    );
    let tunnel = format!(
        "ssh -L {port}:127.0.0.1:{port} THIS_HOST, then open http://127.0.0.1:{port}/",
        port = addr.port()
    );
    if !allowed {
        anyhow::bail!(
            "refusing to serve the console on {addr}, which is not a loopback address: {risk}. Serve it on 127.0.0.1 (the default) and reach it through an SSH tunnel ({tunnel}), or pass --allow-non-loopback if you mean it"
        );
    }
    Ok(Some(format!(
        "warning: serving the console on {addr} (--allow-non-loopback): {risk}; keep it behind a firewall or a VPN, or use an SSH tunnel instead ({tunnel})"
    )))
}

/// Where the console listens, for the `Host` check.
#[derive(Clone, Copy)]
struct Bound(SocketAddr);

/// Wraps `app` in the `Host` check and the headers every answer carries.
pub(crate) fn layer(app: Router, bound: SocketAddr) -> Router {
    app.layer(middleware::from_fn_with_state(Bound(bound), guard))
}

async fn guard(State(Bound(bound)): State<Bound>, req: Request, next: Next) -> Response {
    if bound.ip().is_loopback() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !host_is_loopback(host, bound.port()) {
            let mut r = (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this console answers only to http://127.0.0.1:{port}/ or http://localhost:{port}/ (the request named host {host:?})",
                    port = bound.port(),
                    host = crate::view::printable(host)
                ),
            )
                .into_response();
            secure(&mut r);
            return r;
        }
    }
    let mut r = next.run(req).await;
    secure(&mut r);
    r
}

/// A `Host` header that names this machine's loopback at the console's port.
pub(crate) fn host_is_loopback(host: &str, port: u16) -> bool {
    let (name, given) = match host.rsplit_once(':') {
        // `[::1]:8080`, `127.0.0.1:8080`, `localhost:8080`; a bare `[::1]` has no port.
        Some((name, p)) if !p.ends_with(']') => (name, p.parse::<u16>().ok()),
        _ => (host, None),
    };
    let port_ok = match given {
        Some(p) => p == port,
        None => port == 80 && !host.is_empty(),
    };
    let name = name.to_ascii_lowercase();
    port_ok && matches!(name.as_str(), "127.0.0.1" | "localhost" | "[::1]")
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
    // The pages show live state read with the operator's credentials: never cached.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
