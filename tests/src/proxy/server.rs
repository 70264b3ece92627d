//! The HTTP side of the proxy: the accept loop, one hyper HTTP/1.1 server per client
//! connection (with the socket kept at hand so that a rule can reset it), the request
//! path from the rules' plan to an answer, and forwarding to the upstream.
//!
//! Method, path, query, headers and body go upstream unchanged (the `Host` header too: the
//! emulator builds queue URLs from it and does not check signatures); only hop-by-hop
//! headers are dropped. Connections are kept alive on both sides; bodies are buffered
//! (they are small). Malformed HTTP is answered 400 by hyper and the connection closed;
//! an unreachable upstream is answered 502 (which the SDK treats as transient).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::http::HeaderMap;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::answers::{plain, respond, status_error, throttle, Answer};
use super::route::{self, Protocol};
use super::{ssm, Action, State};
use crate::fleet::{wire, Fleet};

/// The server the proxy forwards to, and the pooled client it does so with.
pub(super) struct Upstream {
    /// `http://host:port`.
    pub(super) uri: Uri,
    pub(super) client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// A client for `uri` (already checked to be `http://host:port`).
    pub(super) fn new(uri: Uri) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build(connector);
        Upstream { uri, client }
    }

    /// Sends the request upstream and reads the whole answer.
    pub(super) async fn forward(
        &self,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Bytes>, String> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut uri = self.uri.clone().into_parts();
        uri.path_and_query = Some(path.parse().map_err(|e| format!("path {path:?}: {e}"))?);
        let uri = Uri::from_parts(uri).map_err(|e| format!("upstream URI: {e}"))?;
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        // Host stays the client's (the emulator builds queue URLs from it); hyper sets the
        // length of the buffered body.
        *req.headers_mut() = end_to_end(&parts.headers);
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        let (mut parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("upstream body: {e}"))?
            .to_bytes();
        parts.headers = end_to_end(&parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

/// The headers without the hop-by-hop ones and the body framing (re-done by hyper).
pub(super) fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    let mut out = headers.clone();
    for h in HOP {
        out.remove(*h);
    }
    out
}

/// Accepts connections until the proxy is dropped (its accept task is aborted).
pub(super) async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                state
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(serve_connection(stream, state.clone(), shutdown.clone()));
            }
            // Out of file descriptors and the like: back off rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Serves one client connection until it closes, a rule resets it, or the proxy stops.
async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, so that a reset can set SO_LINGER 0 on it while hyper
    // owns the stream: closing the last descriptor then sends an RST instead of a FIN.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(handle) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let svc_reset = reset.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let reset = svc_reset.clone();
        async move { Ok::<_, Infallible>(handle_request(state, reset, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // No timer is configured, so no header timeout (hyper would only warn otherwise).
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        () = reset.notified() => {
            let _ = socket2::SockRef::from(&handle).set_linger(Some(Duration::ZERO));
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    drop(handle);
}

/// One request: record it, run the rules over it, then answer in the service's place,
/// forward it, or drop the connection, as they decide.
async fn handle_request(state: Arc<State>, reset: Arc<Notify>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("fault proxy: reading the request body: {e}"),
            )
        }
    };
    let (service, operation) = route::classify(&parts, &body);
    let proto = Protocol::of(&parts, &service);
    let (seq, plan) = state.plan(&service, &operation, &body);
    // The SSM operations the simulated fleet answers in the emulator's place.
    let fleet_op =
        service == "ssm" && matches!(proto, Protocol::Json(_)) && wire::handles(&operation);
    if !plan.delay.is_zero() {
        // If the client gives up meanwhile, hyper drops this future: never forwarded.
        tokio::time::sleep(plan.delay).await;
    }
    let answer = match plan.terminal {
        Some(Action::Throttle) => Some(throttle(&service, &proto)),
        Some(Action::Status(code)) => Some(status_error(code, &service, &proto)),
        Some(Action::Respond { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Some(respond(
                status,
                proto.error_content_type(),
                body.into(),
                &[],
            ))
        }
        Some(Action::ResetBeforeForward) => None,
        Some(Action::ResetAfterForward) if fleet_op => {
            let _ = fleet_answer(&state, &parts, &operation, &body, &proto, &plan.transforms).await;
            state.mark_forwarded(seq);
            None
        }
        Some(Action::ResetAfterForward) => {
            if forward_detached(&state, &service, &operation, &parts, body)
                .await
                .is_ok()
            {
                state.mark_forwarded(seq);
            }
            None
        }
        Some(Action::Replay) => {
            let key = (service.clone(), operation.clone(), canonical(&body));
            let kept = super::lock(&state.replays).get(&key).cloned();
            match kept {
                Some(kept) => Some(kept.answer()),
                None => match forward_detached(&state, &service, &operation, &parts, body).await {
                    Ok(answer) => {
                        state.mark_forwarded(seq);
                        let kept = Kept::of(&answer);
                        if answer.status().is_success() {
                            super::lock(&state.replays).insert(key, kept.clone());
                        }
                        Some(kept.answer())
                    }
                    Err(e) => Some(respond(
                        StatusCode::BAD_GATEWAY,
                        proto.error_content_type(),
                        serde_json::json!({ "__type": "BadGateway", "message": format!("fault proxy: {e}") })
                            .to_string()
                            .into(),
                        &[],
                    )),
                },
            }
        }
        // Delays and rewrites are not terminal; nothing else is.
        Some(_) | None if fleet_op => {
            let answer =
                fleet_answer(&state, &parts, &operation, &body, &proto, &plan.transforms).await;
            state.mark_forwarded(seq);
            Some(answer)
        }
        Some(_) | None => {
            match forward_detached(&state, &service, &operation, &parts, body).await {
                Ok(mut answer) => {
                    state.mark_forwarded(seq);
                    if answer.status() == StatusCode::OK && !plan.transforms.is_empty() {
                        let rewritten =
                            ssm::rewrite_ssm(&operation, answer.body(), &plan.transforms);
                        *answer.body_mut() = rewritten;
                    }
                    Some(answer.map(Full::new))
                }
                Err(e) => {
                    let body = serde_json::json!({
                        "__type": "BadGateway",
                        "message": format!("fault proxy: {e}"),
                    });
                    Some(respond(
                        StatusCode::BAD_GATEWAY,
                        proto.error_content_type(),
                        body.to_string().into(),
                        &[],
                    ))
                }
            }
        }
    };
    if !plan.answer_delay.is_zero() {
        tokio::time::sleep(plan.answer_delay).await;
    }
    match answer {
        Some(answer) => {
            state.answered(seq, answer.status().as_u16());
            answer
        }
        None => drop_connection(&reset).await,
    }
}

/// Makes the connection task drop the client's connection with an RST; never answers.
async fn drop_connection(reset: &Notify) -> Answer {
    reset.notify_one();
    std::future::pending::<()>().await;
    plain(StatusCode::INTERNAL_SERVER_ERROR, String::new())
}

/// The simulated fleet's answer to an SSM call (after reading the secret a `SendCommand`
/// names from the upstream's Secrets Manager, with the caller's credentials).
async fn fleet_answer(
    state: &State,
    parts: &Parts,
    operation: &str,
    body: &Bytes,
    proto: &Protocol,
    transforms: &[Action],
) -> Answer {
    let secret = match (operation, wire::secret_id_of(body)) {
        ("SendCommand", Some(id)) => Some(read_secret(&state.upstream, parts, &id).await),
        _ => None,
    };
    let ct = proto.error_content_type();
    match wire::answer(Fleet::global(), operation, body, secret, transforms) {
        Ok(v) => respond(StatusCode::OK, ct, v.to_string().into(), &[]),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            respond(status, ct, e.body().to_string().into(), &[])
        }
    }
}

/// The serial (openssl's format) in secret `id`, read with `GetSecretValue` from the
/// upstream with the credentials of the request `parts` came with (the emulator keeps an
/// account per access key), or why it could not be read.
async fn read_secret(upstream: &Upstream, parts: &Parts, id: &str) -> Result<String, String> {
    let mut req = Request::post("/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "secretsmanager.GetSecretValue");
    if let Some(host) = parts.headers.get("host") {
        req = req.header("host", host.clone());
    }
    if let Some(auth) = parts
        .headers
        .get("authorization")
        .and_then(|a| a.to_str().ok())
    {
        // The emulator picks the service from the credential scope.
        req = req.header(
            "authorization",
            auth.replace("/ssm/aws4_request", "/secretsmanager/aws4_request"),
        );
    }
    if let Some(date) = parts.headers.get("x-amz-date") {
        req = req.header("x-amz-date", date.clone());
    }
    let (req_parts, ()) = req
        .body(())
        .map_err(|e| format!("GetSecretValue request: {e}"))?
        .into_parts();
    let body = serde_json::json!({ "SecretId": id }).to_string();
    let res = upstream.forward(&req_parts, body.into()).await?;
    let v: serde_json::Value = serde_json::from_slice(res.body())
        .map_err(|e| format!("GetSecretValue answered {}: {e}", res.status()))?;
    if res.status() != StatusCode::OK {
        let code = v.get("__type").and_then(|t| t.as_str()).unwrap_or("error");
        let msg = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        return Err(format!("{code}: {msg}"));
    }
    let secret = v
        .get("SecretString")
        .and_then(|s| s.as_str())
        .ok_or("GetSecretValue: no SecretString")?;
    wire::serial_of_secret(secret)
}

/// Forwards a call upstream in a task of its own, so that a client that goes away mid-call
/// (a killed worker) does not cut it short: hyper drops a request's handler when its
/// connection closes, and the isolator runs a transaction as several single-item calls,
/// which must all happen or be put back, as DynamoDB's would.
async fn forward_detached(
    state: &Arc<State>,
    service: &str,
    operation: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<Response<Bytes>, String> {
    let (st, service, operation, parts) = (
        Arc::clone(state),
        service.to_string(),
        operation.to_string(),
        parts.clone(),
    );
    tokio::spawn(async move {
        st.isolator
            .forward(&st.upstream, &service, &operation, &parts, body)
            .await
    })
    .await
    .map_err(|e| format!("forwarding task: {e}"))?
}

/// An upstream answer kept for [`Action::Replay`].
#[derive(Clone, Debug)]
pub(super) struct Kept {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Kept {
    fn of(answer: &Response<Bytes>) -> Kept {
        Kept {
            status: answer.status(),
            headers: answer.headers().clone(),
            body: answer.body().clone(),
        }
    }

    fn answer(&self) -> Answer {
        let mut res = Response::new(Full::new(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        res
    }
}

/// A request body as a replay key: JSON as its value (the SDK writes a map's entries in
/// any order), anything else as its bytes.
fn canonical(body: &Bytes) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.to_string().into_bytes(),
        Err(_) => body.to_vec(),
    }
}
