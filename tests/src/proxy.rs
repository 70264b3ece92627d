//! A fault-injecting HTTP/1.1 proxy between the AWS SDK and the emulator.
//!
//! The emulator never throttles, never fails and never drops a connection; AWS does all
//! three. [`FaultProxy`] listens on `127.0.0.1` (a free port), forwards every request to the
//! emulator and, per [`Rule`], injects what AWS would do instead: the throttling error of
//! that service, a 5xx, a slow answer, a connection reset before or after the request
//! reached the emulator, or a rewritten SSM answer (a failed, timed-out or still running
//! invocation, the installed serial on standard output). Point an SDK client or the
//! `certflow` binary at [`FaultProxy::url`] instead of the emulator:
//!
//! ```no_run
//! # async fn demo() {
//! use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
//! let sdk = certflow_tests::emulator().await;
//! let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap();
//! let proxy = FaultProxy::start(&upstream, 7).await;
//! proxy.add_rule(Rule::new("dynamodb", Some("PutItem"), Trigger::Nth(1), Action::Throttle));
//! let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
//!     .endpoint_url(proxy.url())
//!     .build();
//! let ddb = aws_sdk_dynamodb::Client::from_conf(conf);
//! // The first attempt answers ProvisionedThroughputExceededException; the SDK retries.
//! ddb.put_item()
//!     .table_name("t")
//!     .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("a".into()))
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(proxy.count("dynamodb", "PutItem"), 2);
//! # }
//! ```
//!
//! **Recognising the call.** JSON-protocol services name the operation in `X-Amz-Target`
//! (`DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`, `AmazonSSM.SendCommand`,
//! `CertificateManager.DescribeCertificate`, `secretsmanager.GetSecretValue`); query-protocol
//! services (EC2, STS, IAM) send `Action=…` in a form body or the query string. The service is
//! the SigV4 credential scope's (`Credential=AKID/20240101/us-east-1/<service>/aws4_request`),
//! else derived from the target prefix. Anything else (REST protocols, the emulator's own
//! `/moto-api`) is recorded as operation `"<METHOD> <path>"`.
//!
//! **Rules.** Every rule whose service and operation match a request counts it; its
//! [`Trigger`] decides whether it fires. Of the rules that fire, the delays
//! ([`Action::Delay`], [`Action::DelayAnswer`]) add up, the SSM rewrites all apply to the
//! answer, and the first (in the order added) of the other actions decides what happens to
//! the request. Probabilities draw from a per-rule RNG seeded from the proxy's seed and the
//! rule's position, so the same seed and the same sequence of calls inject the same faults.
//!
//! **What the Rust SDK does with them** (standard retry mode, 3 attempts, as
//! `BehaviorVersion::latest()` configures it; `tests/tests/proxy.rs` pins each case): it
//! retries the throttling codes ([`Action::Throttle`] for every service), 500/502/503/504
//! ([`Action::Status`]), and every connection error — reset, closed, attempt timeout — on
//! *any* operation, idempotent or not. So one [`Action::ResetAfterForward`] on `SendMessage`
//! or `SendCommand` leaves two messages or two commands behind, and the caller saw success.
//!
//! **Forwarding.** Method, path, query, headers and body go upstream unchanged (the `Host`
//! header too: the emulator builds queue URLs from it and does not check signatures); only
//! hop-by-hop headers are dropped. Connections are kept alive on both sides; bodies are
//! buffered (they are small).
//!
//! **Robustness.** Malformed HTTP is answered 400 by hyper and the connection closed; an
//! unreachable upstream is answered 502 (which the SDK treats as transient). Nothing in
//! here panics on what a client sends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, RwLock};
use tokio::task::JoinHandle;

/// When a matching rule fires.
#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    /// On every matching call.
    Always,
    /// On the n-th matching call only (1-based).
    Nth(u64),
    /// On the first n matching calls.
    FirstN(u64),
    /// On each matching call with this probability (0.0–1.0), from the seeded RNG.
    Probability(f64),
}

/// What a rule does to the request it fires on.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Answer with that service's throttling error, without forwarding: DynamoDB
    /// `ProvisionedThroughputExceededException` (400), SQS `RequestThrottled` (400, with
    /// `x-amzn-query-error`), other JSON services `ThrottlingException` (400), EC2
    /// `RequestLimitExceeded` (503, XML), other query services `Throttling` (400, XML).
    Throttle,
    /// Answer with this HTTP status (500, 503, …) and a plausible error body, without
    /// forwarding.
    Status(u16),
    /// Wait this long, then go on (forward, or whatever else fired). If the client gives
    /// up meanwhile (an attempt timeout), the request is never forwarded.
    Delay(Duration),
    /// Go on (forward, or whatever else fired), then wait this long before answering. If
    /// the client gives up meanwhile, the call has happened all the same.
    DelayAnswer(Duration),
    /// Drop the client's connection with a TCP RST without forwarding: the call never
    /// happened.
    ResetBeforeForward,
    /// Forward, read the whole answer, then drop the client's connection with a TCP RST
    /// without answering: the call happened, the caller saw a network error.
    ResetAfterForward,
    /// Rewrite an SSM `GetCommandInvocation`, `ListCommandInvocations` or `ListCommands`
    /// answer so that the invocation of `instance` (or of every instance when `None`) has
    /// this status (`Failed`, `TimedOut`, `InProgress`, `Cancelled`, `Success`, …);
    /// `ListCommands` gets a consistent command `Status`, `CompletedCount` and `ErrorCount`.
    RewriteSsm {
        /// The instance whose invocation changes; `None` for all.
        instance: Option<String>,
        /// The new invocation status.
        status: String,
    },
    /// Put this text in `StandardOutputContent` of a `GetCommandInvocation` answer (and in
    /// the plugins' `Output` of `ListCommandInvocations`) for `instance` (or all).
    SetStdout {
        /// The instance whose output changes; `None` for all.
        instance: Option<String>,
        /// The standard output to report.
        stdout: String,
    },
    /// Answer with this status and body without forwarding (content type JSON).
    Respond {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl Action {
    /// Whether the action decides the request's fate (as opposed to delaying it or
    /// rewriting its answer).
    fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Action::Delay(_)
                | Action::DelayAnswer(_)
                | Action::RewriteSsm { .. }
                | Action::SetStdout { .. }
        )
    }
}

/// A fault to inject on the requests it matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The service (credential scope name: `dynamodb`, `sqs`, `ssm`, `acm`,
    /// `secretsmanager`, `ec2`, …), case-insensitive; `*` matches every service.
    pub service: String,
    /// The operation (`PutItem`, `SendMessage`, …), case-insensitive; `None` for all.
    pub operation: Option<String>,
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// A rule on `service` (and `operation`, or every operation when `None`).
    pub fn new(service: &str, operation: Option<&str>, trigger: Trigger, action: Action) -> Rule {
        Rule {
            service: service.to_string(),
            operation: operation.map(str::to_string),
            trigger,
            action,
        }
    }

    fn matches(&self, service: &str, operation: &str) -> bool {
        let service_ok = self.service == "*" || self.service.eq_ignore_ascii_case(service);
        let op_ok = self
            .operation
            .as_deref()
            .is_none_or(|o| o == "*" || o.eq_ignore_ascii_case(operation));
        // The SSM rewrites only count the calls whose answers they can rewrite.
        let applicable = match &self.action {
            Action::RewriteSsm { .. } => matches!(
                operation,
                "GetCommandInvocation" | "ListCommandInvocations" | "ListCommands"
            ),
            Action::SetStdout { .. } => {
                matches!(operation, "GetCommandInvocation" | "ListCommandInvocations")
            }
            _ => true,
        };
        service_ok && op_ok && applicable
    }
}

/// Identifies a rule added with [`FaultProxy::add_rule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// One request the proxy received.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Arrival order, from 1.
    pub seq: u64,
    /// The service (lower case credential scope name, or `unknown`).
    pub service: String,
    /// The operation (`PutItem`), or `"<METHOD> <path>"` for non-AWS-protocol requests.
    pub operation: String,
    /// The actions of the rules that fired, in rule order.
    pub injected: Vec<Action>,
    /// Whether the upstream answered the request (its side effect happened).
    pub forwarded: bool,
    /// The status the client received; `None` while pending or when the connection was
    /// dropped instead.
    pub status: Option<u16>,
    /// The request body (lossy UTF-8), for telling calls apart.
    pub body: String,
}

impl Call {
    /// The first fault injected into this call, if any.
    pub fn fault(&self) -> Option<&Action> {
        self.injected.first()
    }
}

/// The fault-injecting proxy. Dropping it stops it and closes its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url())
            .field("upstream", &self.state.upstream)
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.shutdown.send(true);
    }
}

struct RuleState {
    id: RuleId,
    rule: Rule,
    matched: u64,
    rng: StdRng,
}

struct State {
    upstream: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    seed: u64,
    next_rule: AtomicU64,
    next_seq: AtomicU64,
    rules: Mutex<Vec<RuleState>>,
    calls: Mutex<Vec<Call>>,
    /// See [`FaultProxy::isolate_dynamodb_transactions`].
    isolate_transactions: AtomicBool,
    transaction_gate: RwLock<()>,
    /// Key attribute names per DynamoDB table, for the transactions the proxy runs.
    key_schemas: Mutex<HashMap<String, Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    ///
    /// # Panics
    /// When the upstream URL is not `http://…` or no port can be bound; see
    /// [`FaultProxy::try_start`].
    pub async fn start(upstream: &str, seed: u64) -> FaultProxy {
        match FaultProxy::try_start(upstream, seed).await {
            Ok(p) => p,
            Err(e) => panic!("fault proxy to {upstream:?}: {e}"),
        }
    }

    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub async fn try_start(upstream: &str, seed: u64) -> std::io::Result<FaultProxy> {
        let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
        let uri: Uri = upstream
            .trim_end_matches('/')
            .parse()
            .map_err(|e| bad(format!("upstream URL {upstream:?}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(bad(format!(
                "upstream URL {upstream:?} must be http://host:port"
            )));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build(connector);
        let state = Arc::new(State {
            upstream: uri,
            client,
            seed,
            next_rule: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            isolate_transactions: AtomicBool::new(false),
            transaction_gate: RwLock::new(()),
            key_schemas: Mutex::new(HashMap::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, state.clone(), shutdown_rx));
        Ok(FaultProxy {
            addr,
            state,
            accept,
            shutdown,
        })
    }

    /// The proxy's endpoint URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The upstream it forwards to.
    pub fn upstream(&self) -> String {
        self.state.upstream.to_string()
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) -> RuleId {
        let n = self.state.next_rule.fetch_add(1, Ordering::SeqCst);
        let id = RuleId(n);
        let seed = self
            .state
            .seed
            .wrapping_add((n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        lock(&self.state.rules).push(RuleState {
            id,
            rule,
            matched: 0,
            rng: StdRng::seed_from_u64(seed),
        });
        id
    }

    /// Removes one rule; true if it was there.
    pub fn remove_rule(&self, id: RuleId) -> bool {
        let mut rules = lock(&self.state.rules);
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    /// Removes every rule: from now on the proxy only forwards.
    pub fn clear_rules(&self) {
        lock(&self.state.rules).clear();
    }

    /// Every call received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }

    /// Forgets the calls received so far.
    pub fn clear_calls(&self) {
        lock(&self.state.calls).clear();
    }

    /// How many calls of `service` and `operation` were received (`*` matches any).
    pub fn count(&self, service: &str, operation: &str) -> usize {
        lock(&self.state.calls)
            .iter()
            .filter(|c| {
                (service == "*" || c.service.eq_ignore_ascii_case(service))
                    && (operation == "*" || c.operation.eq_ignore_ascii_case(operation))
            })
            .count()
    }

    /// Runs each DynamoDB `TransactWriteItems` in the proxy, alone: it waits for the
    /// DynamoDB calls in flight through the proxy to be answered, and later ones wait for
    /// it; meanwhile the proxy reads each item, makes each write as a single-item
    /// conditional call, and on the first condition that fails puts back what it wrote
    /// and answers `TransactionCanceledException` with the cancellation reasons (and the
    /// old item where `ReturnValuesOnConditionCheckFailure` asked for it), as DynamoDB
    /// does. A request it does not understand goes to the emulator unchanged.
    ///
    /// The emulator's own transactions are not fit for concurrent clients on one table
    /// (several workers on one jobs table). moto 5.2.5 deep-copies every table a
    /// transaction names when the transaction starts (once per item), which costs time
    /// in proportion to the table (130 ms per transaction at 1,000 items, more under
    /// load); when any condition fails it puts the copies back, reverting the writes
    /// other requests made to those tables meanwhile although they were answered 200;
    /// and it answers 500 when a write changes a table while it is being copied. Off by
    /// default; only the calls that go through the proxy are isolated.
    pub fn isolate_dynamodb_transactions(&self, on: bool) {
        self.state.isolate_transactions.store(on, Ordering::SeqCst);
    }

    /// How many calls had a fault injected.
    pub fn injected(&self) -> usize {
        lock(&self.state.calls)
            .iter()
            .filter(|c| !c.injected.is_empty())
            .count()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, shutdown: watch::Receiver<bool>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
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

type Answer = Response<Full<Bytes>>;

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
    let (service, operation) = classify(&parts, &body);
    let proto = Protocol::of(&parts, &service);
    let (seq, plan) = state.plan(&service, &operation, &body);
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
        Some(Action::ResetAfterForward) => {
            if state
                .forward_gated(&service, &operation, &parts, body)
                .await
                .is_ok()
            {
                state.mark_forwarded(seq);
            }
            None
        }
        // Delays and rewrites are not terminal; nothing else is.
        Some(_) | None => match state
            .forward_gated(&service, &operation, &parts, body)
            .await
        {
            Ok(mut answer) => {
                state.mark_forwarded(seq);
                if answer.status() == StatusCode::OK && !plan.transforms.is_empty() {
                    let rewritten = rewrite_ssm(&operation, answer.body(), &plan.transforms);
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
        },
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

struct Plan {
    delay: Duration,
    answer_delay: Duration,
    terminal: Option<Action>,
    transforms: Vec<Action>,
}

impl State {
    /// Runs the rules over one call and records it.
    fn plan(&self, service: &str, operation: &str, body: &[u8]) -> (u64, Plan) {
        let mut plan = Plan {
            delay: Duration::ZERO,
            answer_delay: Duration::ZERO,
            terminal: None,
            transforms: Vec::new(),
        };
        let mut injected = Vec::new();
        let seq = {
            let mut rules = lock(&self.rules);
            for r in rules.iter_mut() {
                if !r.rule.matches(service, operation) {
                    continue;
                }
                r.matched += 1;
                let fired = match r.rule.trigger {
                    Trigger::Always => true,
                    Trigger::Nth(n) => r.matched == n,
                    Trigger::FirstN(n) => r.matched <= n,
                    Trigger::Probability(p) => {
                        // Always draw, so one rule's sequence does not depend on the others.
                        let x: f64 = r.rng.random();
                        x < p
                    }
                };
                if !fired {
                    continue;
                }
                match &r.rule.action {
                    Action::Delay(d) => {
                        plan.delay = plan.delay.saturating_add(*d);
                        injected.push(r.rule.action.clone());
                    }
                    Action::DelayAnswer(d) => {
                        plan.answer_delay = plan.answer_delay.saturating_add(*d);
                        injected.push(r.rule.action.clone());
                    }
                    Action::RewriteSsm { .. } | Action::SetStdout { .. } => {
                        plan.transforms.push(r.rule.action.clone());
                        injected.push(r.rule.action.clone());
                    }
                    a if a.is_terminal() && plan.terminal.is_none() => {
                        plan.terminal = Some(a.clone());
                        injected.push(a.clone());
                    }
                    _ => {}
                }
            }
            // Numbered under the rules' lock, so the order of calls matches the draws.
            self.next_seq.fetch_add(1, Ordering::SeqCst)
        };
        lock(&self.calls).push(Call {
            seq,
            service: service.to_string(),
            operation: operation.to_string(),
            injected,
            forwarded: false,
            status: None,
            body: String::from_utf8_lossy(body).into_owned(),
        });
        (seq, plan)
    }

    fn with_call(&self, seq: u64, f: impl FnOnce(&mut Call)) {
        let mut calls = lock(&self.calls);
        if let Some(c) = calls.iter_mut().rev().find(|c| c.seq == seq) {
            f(c);
        }
    }

    fn mark_forwarded(&self, seq: u64) {
        self.with_call(seq, |c| c.forwarded = true);
    }

    fn answered(&self, seq: u64, status: u16) {
        self.with_call(seq, |c| c.status = Some(status));
    }

    /// [`State::forward`], or, for DynamoDB with transaction isolation on (see
    /// [`FaultProxy::isolate_dynamodb_transactions`]), behind the gate: transactions run
    /// by the proxy alone, every other call beside the others.
    async fn forward_gated(
        &self,
        service: &str,
        operation: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Bytes>, String> {
        if service != "dynamodb" || !self.isolate_transactions.load(Ordering::SeqCst) {
            return self.forward(parts, body).await;
        }
        if operation == "TransactWriteItems" {
            let _alone = self.transaction_gate.write().await;
            match self.parse_transaction(&parts.headers, &body).await {
                Some(items) => self.run_transaction(&parts.headers, &items).await,
                None => self.forward(parts, body).await,
            }
        } else {
            let _shared = self.transaction_gate.read().await;
            self.forward(parts, body).await
        }
    }

    /// Sends the request upstream and reads the whole answer.
    async fn forward(&self, parts: &Parts, body: Bytes) -> Result<Response<Bytes>, String> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut uri = self.upstream.clone().into_parts();
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
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
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

// ---------------------------------------------------------------------------------------
// Recognising the service and operation.

/// The service and operation of a request.
fn classify(parts: &Parts, body: &[u8]) -> (String, String) {
    let scope = credential_scope(parts);
    if let Some(target) = header(&parts.headers, "x-amz-target") {
        let (prefix, op) = target.split_once('.').unwrap_or(("", target));
        let service = scope.unwrap_or_else(|| service_from_target(prefix));
        return (service, op.to_string());
    }
    let action = parts
        .uri
        .query()
        .and_then(|q| form_param(q.as_bytes(), "Action"))
        .or_else(|| {
            let form = header(&parts.headers, "content-type")
                .is_some_and(|c| c.contains("x-www-form-urlencoded"));
            if form {
                form_param(body, "Action")
            } else {
                None
            }
        });
    if let Some(action) = action {
        return (scope.unwrap_or_else(|| "unknown".into()), action);
    }
    let path = parts.uri.path();
    let service = scope.unwrap_or_else(|| {
        if path.starts_with("/moto-api") {
            "moto-api".into()
        } else {
            "unknown".into()
        }
    });
    (service, format!("{} {path}", parts.method))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The service of the SigV4 credential scope (`AKID/date/region/<service>/aws4_request`),
/// from the `Authorization` header or a presigned URL's `X-Amz-Credential`.
fn credential_scope(parts: &Parts) -> Option<String> {
    let credential = match header(&parts.headers, "authorization") {
        Some(auth) => {
            let start = auth.find("Credential=")? + "Credential=".len();
            let rest = &auth[start..];
            rest[..rest.find([',', ' ']).unwrap_or(rest.len())].to_string()
        }
        None => form_param(parts.uri.query()?.as_bytes(), "X-Amz-Credential")?,
    };
    let fields: Vec<&str> = credential.split('/').collect();
    match fields.as_slice() {
        [.., service, "aws4_request"] if fields.len() >= 5 && !service.is_empty() => {
            Some(service.to_ascii_lowercase())
        }
        _ => None,
    }
}

fn service_from_target(prefix: &str) -> String {
    let known = [
        ("DynamoDB_", "dynamodb"),
        ("DynamoDBStreams_", "dynamodb"),
        ("AmazonSSM", "ssm"),
        ("CertificateManager", "acm"),
        ("secretsmanager", "secretsmanager"),
        ("AmazonSQS", "sqs"),
        ("AWSEvents", "events"),
        ("TrentService", "kms"),
        ("AmazonEC2ContainerServiceV", "ecs"),
        ("Logs_", "logs"),
    ];
    known
        .iter()
        .find(|(p, _)| prefix.starts_with(p))
        .map_or_else(|| prefix.to_ascii_lowercase(), |(_, s)| (*s).to_string())
}

/// The (percent-decoded) value of `key` in a `k=v&k=v` form.
fn form_param(form: &[u8], key: &str) -> Option<String> {
    form.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let k = percent_decode(kv.next()?);
        (k == key).then(|| percent_decode(kv.next().unwrap_or_default()))
    })
}

fn percent_decode(s: &[u8]) -> String {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Error answers, in each protocol's own shape.

/// How the service speaks, for shaping error answers.
enum Protocol {
    /// awsJson 1.0/1.1 (`X-Amz-Target`), with the request's content type.
    Json(String),
    /// EC2's query dialect (`<Response><Errors>…`).
    Ec2,
    /// awsQuery (`<ErrorResponse>…`).
    Query,
    /// REST protocols and anything else.
    Other,
}

impl Protocol {
    fn of(parts: &Parts, service: &str) -> Protocol {
        if parts.headers.contains_key("x-amz-target") {
            let ct = header(&parts.headers, "content-type")
                .filter(|c| c.starts_with("application/x-amz-json"))
                .unwrap_or("application/x-amz-json-1.1");
            return Protocol::Json(ct.to_string());
        }
        let query_action = parts
            .uri
            .query()
            .is_some_and(|q| form_param(q.as_bytes(), "Action").is_some());
        let form = header(&parts.headers, "content-type")
            .is_some_and(|c| c.contains("x-www-form-urlencoded"));
        match (service, form || query_action) {
            ("ec2", true) => Protocol::Ec2,
            (_, true) => Protocol::Query,
            _ => Protocol::Other,
        }
    }

    fn error_content_type(&self) -> &str {
        match self {
            Protocol::Json(ct) => ct,
            Protocol::Ec2 | Protocol::Query => "text/xml",
            Protocol::Other => "application/json",
        }
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    extra: &[(&str, String)],
) -> Answer {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert("content-type", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-amzn-requestid", v);
    }
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(*k), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    res
}

fn plain(status: StatusCode, text: String) -> Answer {
    respond(status, "text/plain", text.into(), &[])
}

fn json_error(status: StatusCode, ct: &str, typ: &str, message: &str) -> Answer {
    let body = serde_json::json!({ "__type": typ, "message": message }).to_string();
    respond(status, ct, body.into(), &[])
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ec2_error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        xml_escape(message),
        request_id()
    );
    respond(status, "text/xml;charset=UTF-8", body.into(), &[])
}

fn query_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml_escape(message),
        request_id()
    );
    respond(status, "text/xml", body.into(), &[])
}

/// That service's throttling error.
fn throttle(service: &str, proto: &Protocol) -> Answer {
    let bad = StatusCode::BAD_REQUEST;
    match proto {
        Protocol::Json(ct) => match service {
            "dynamodb" => json_error(
                bad,
                ct,
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. \
                 Consider increasing your provisioning level with the UpdateTable API.",
            ),
            // SQS speaks JSON but is query-compatible: the SDK takes the error code from
            // `x-amzn-query-error` when present.
            "sqs" => {
                let body = serde_json::json!({
                    "__type": "com.amazonaws.sqs#RequestThrottled",
                    "message": "Rate exceeded",
                })
                .to_string();
                respond(
                    bad,
                    ct,
                    body.into(),
                    &[("x-amzn-query-error", "RequestThrottled;Sender".into())],
                )
            }
            _ => json_error(bad, ct, "ThrottlingException", "Rate exceeded"),
        },
        Protocol::Ec2 => ec2_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        Protocol::Query => query_error(bad, "Sender", "Throttling", "Rate exceeded"),
        Protocol::Other => respond(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            serde_json::json!({ "message": "Rate exceeded" })
                .to_string()
                .into(),
            &[("x-amzn-errortype", "ThrottlingException".into())],
        ),
    }
}

/// A server-side error with this status.
fn status_error(code: u16, service: &str, proto: &Protocol) -> Answer {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (json_type, ec2_code, message) = match status.as_u16() {
        500 => (
            "InternalFailure",
            "InternalError",
            "An internal error occurred.",
        ),
        502 => ("BadGateway", "InternalError", "Bad gateway."),
        503 => ("ServiceUnavailable", "Unavailable", "Service unavailable."),
        504 => ("GatewayTimeout", "InternalError", "Gateway timeout."),
        _ => ("InternalFailure", "InternalError", "Injected error."),
    };
    let message = format!("{message} (fault proxy)");
    match proto {
        Protocol::Json(ct) => match service {
            "dynamodb" => {
                let typ = if status.as_u16() == 500 {
                    "com.amazonaws.dynamodb.v20120810#InternalServerError".to_string()
                } else {
                    format!("com.amazonaws.dynamodb.v20120810#{json_type}")
                };
                json_error(status, ct, &typ, &message)
            }
            "sqs" => {
                let body = serde_json::json!({
                    "__type": format!("com.amazonaws.sqs#{json_type}"),
                    "message": message,
                })
                .to_string();
                respond(
                    status,
                    ct,
                    body.into(),
                    &[("x-amzn-query-error", format!("{json_type};Receiver"))],
                )
            }
            _ => json_error(status, ct, json_type, &message),
        },
        Protocol::Ec2 => ec2_error(status, ec2_code, &message),
        Protocol::Query => query_error(status, "Receiver", json_type, &message),
        Protocol::Other => respond(
            status,
            "application/json",
            serde_json::json!({ "message": message }).to_string().into(),
            &[("x-amzn-errortype", json_type.to_string())],
        ),
    }
}

// ---------------------------------------------------------------------------------------
// DynamoDB transactions run by the proxy (see `FaultProxy::isolate_dynamodb_transactions`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxKind {
    Put,
    Update,
    Delete,
    ConditionCheck,
}

/// One item of a `TransactWriteItems` request.
struct TxItem {
    kind: TxKind,
    table: String,
    key: serde_json::Map<String, Value>,
    /// The item's own request fields (`TableName`, `Item` or `Key`, the condition, …).
    spec: serde_json::Map<String, Value>,
    wants_old: bool,
}

const DYNAMODB_JSON: &str = "application/x-amz-json-1.0";

fn json_answer(status: u16, body: &Value) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = res.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(DYNAMODB_JSON));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-amzn-requestid", v);
    }
    res
}

impl State {
    /// One DynamoDB call upstream, with the client's headers but this operation and body
    /// (the emulator does not check signatures). Returns the status and the JSON answer.
    async fn dynamodb(
        &self,
        headers: &HeaderMap,
        operation: &str,
        body: &Value,
    ) -> Result<(u16, Value), String> {
        let mut uri = self.upstream.clone().into_parts();
        uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(uri).map_err(|e| format!("upstream URI: {e}"))?;
        let mut req = Request::builder()
            .method("POST")
            .uri(uri)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("request: {e}"))?;
        let mut h = end_to_end(headers);
        let target = HeaderValue::from_str(&format!("DynamoDB_20120810.{operation}"))
            .map_err(|e| format!("target: {e}"))?;
        h.insert("x-amz-target", target);
        *req.headers_mut() = h;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("upstream body: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// The key attribute names of a table (asked once).
    async fn key_schema(&self, headers: &HeaderMap, table: &str) -> Option<Vec<String>> {
        if let Some(k) = lock(&self.key_schemas).get(table) {
            return Some(k.clone());
        }
        let (status, v) = self
            .dynamodb(
                headers,
                "DescribeTable",
                &serde_json::json!({ "TableName": table }),
            )
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let names: Vec<String> = v["Table"]["KeySchema"]
            .as_array()?
            .iter()
            .filter_map(|k| k["AttributeName"].as_str().map(str::to_string))
            .collect();
        lock(&self.key_schemas).insert(table.to_string(), names.clone());
        Some(names)
    }

    /// The items of a `TransactWriteItems` request; `None` for anything it does not
    /// understand (the emulator then gets the request as it is).
    async fn parse_transaction(&self, headers: &HeaderMap, body: &[u8]) -> Option<Vec<TxItem>> {
        let req: Value = serde_json::from_slice(body).ok()?;
        let raw = req.get("TransactItems")?.as_array()?;
        let mut items: Vec<TxItem> = Vec::new();
        for entry in raw {
            let entry = entry.as_object()?;
            if entry.len() != 1 {
                return None;
            }
            let (kind, spec) = entry.iter().next()?;
            let kind = match kind.as_str() {
                "Put" => TxKind::Put,
                "Update" => TxKind::Update,
                "Delete" => TxKind::Delete,
                "ConditionCheck" => TxKind::ConditionCheck,
                _ => return None,
            };
            let spec = spec.as_object()?.clone();
            let table = spec.get("TableName")?.as_str()?.to_string();
            let key = if kind == TxKind::Put {
                let item = spec.get("Item")?.as_object()?;
                let mut key = serde_json::Map::new();
                for name in self.key_schema(headers, &table).await? {
                    let v = item.get(&name)?.clone();
                    key.insert(name, v);
                }
                key
            } else {
                spec.get("Key")?.as_object()?.clone()
            };
            // Two operations on one item: the emulator's own validation error.
            if items.iter().any(|i| i.table == table && i.key == key) {
                return None;
            }
            let wants_old = spec
                .get("ReturnValuesOnConditionCheckFailure")
                .and_then(Value::as_str)
                == Some("ALL_OLD");
            items.push(TxItem {
                kind,
                table,
                key,
                spec,
                wants_old,
            });
        }
        (!items.is_empty()).then_some(items)
    }

    /// Runs the items one by one as conditional single-item calls; on the first that
    /// fails, puts back what the earlier ones changed.
    async fn run_transaction(
        &self,
        headers: &HeaderMap,
        items: &[TxItem],
    ) -> Result<Response<Bytes>, String> {
        let mut done: Vec<(&TxItem, Option<Value>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let step = self.run_item(headers, item).await;
            let (old, status, answer) = match step {
                Ok(r) => r,
                Err(e) => {
                    self.undo(headers, &done).await;
                    return Err(e);
                }
            };
            if status == 200 {
                if item.kind == TxKind::ConditionCheck {
                    // The check wrote the item back unchanged, or wrote its bare key:
                    // remove that at once.
                    if old.is_none() {
                        self.undo(headers, &[(item, None)]).await;
                    }
                } else {
                    done.push((item, old));
                }
                continue;
            }
            self.undo(headers, &done).await;
            let failed = answer["__type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ConditionalCheckFailedException"));
            if !failed {
                // The emulator's own error (validation and the like), as it gave it.
                return Ok(json_answer(status, &answer));
            }
            let mut reasons = vec![serde_json::json!({ "Code": "None" }); items.len()];
            let mut reason = serde_json::json!({
                "Code": "ConditionalCheckFailed",
                "Message": "The conditional request failed",
            });
            if let (true, Some(old)) = (item.wants_old, answer.get("Item")) {
                reason["Item"] = old.clone();
            }
            reasons[i] = reason;
            let codes: Vec<&str> = reasons
                .iter()
                .map(|r| r["Code"].as_str().unwrap_or("None"))
                .collect();
            let body = serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": format!(
                    "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                    codes.join(", ")
                ),
                "CancellationReasons": reasons,
            });
            return Ok(json_answer(400, &body));
        }
        Ok(json_answer(200, &serde_json::json!({})))
    }

    /// One item: reads its old image, then makes its write under its condition. Returns
    /// the old image (`None`: no item, or nothing to put back) and the write's answer.
    async fn run_item(
        &self,
        headers: &HeaderMap,
        item: &TxItem,
    ) -> Result<(Option<Value>, u16, Value), String> {
        let (status, got) = self
            .dynamodb(
                headers,
                "GetItem",
                &serde_json::json!({
                    "TableName": item.table,
                    "Key": item.key,
                    "ConsistentRead": true,
                }),
            )
            .await?;
        if status != 200 {
            return Ok((None, status, got));
        }
        let old = got.get("Item").cloned();
        let mut spec = item.spec.clone();
        spec.insert(
            "ReturnValuesOnConditionCheckFailure".into(),
            "ALL_OLD".into(),
        );
        let op = match item.kind {
            TxKind::Put => "PutItem",
            TxKind::Update => "UpdateItem",
            TxKind::Delete => "DeleteItem",
            TxKind::ConditionCheck => {
                // No write of its own: the item is put back as it is, under the condition.
                spec.remove("Key");
                let image = old.clone().unwrap_or(Value::Object(item.key.clone()));
                spec.insert("Item".into(), image);
                "PutItem"
            }
        };
        let (status, answer) = self.dynamodb(headers, op, &Value::Object(spec)).await?;
        Ok((old, status, answer))
    }

    /// Puts back the items a cancelled transaction changed, last first.
    async fn undo(&self, headers: &HeaderMap, done: &[(&TxItem, Option<Value>)]) {
        for (item, old) in done.iter().rev() {
            let _ = match old {
                Some(image) => {
                    self.dynamodb(
                        headers,
                        "PutItem",
                        &serde_json::json!({ "TableName": item.table, "Item": image }),
                    )
                    .await
                }
                None => {
                    self.dynamodb(
                        headers,
                        "DeleteItem",
                        &serde_json::json!({ "TableName": item.table, "Key": item.key }),
                    )
                    .await
                }
            };
        }
    }
}

// ---------------------------------------------------------------------------------------
// SSM rewrites.

/// `Status`, `StatusDetails` and `ResponseCode` of an invocation in `status`.
fn invocation_fields(status: &str) -> (&str, &str, i64) {
    match status {
        "Success" => ("Success", "Success", 0),
        "Failed" => ("Failed", "Failed", 1),
        "TimedOut" => ("TimedOut", "ExecutionTimedOut", -1),
        "InProgress" => ("InProgress", "InProgress", -1),
        "Pending" => ("Pending", "Pending", -1),
        "Delayed" => ("Delayed", "Delayed", -1),
        "Cancelled" | "Canceled" => ("Cancelled", "Canceled", -1),
        "Cancelling" => ("Cancelling", "Cancelling", -1),
        other => (other, other, -1),
    }
}

fn is_terminal_status(status: &str) -> bool {
    !matches!(status, "Pending" | "InProgress" | "Delayed" | "Cancelling")
}

fn set_invocation(inv: &mut serde_json::Map<String, Value>, status: &str) {
    let (st, detail, code) = invocation_fields(status);
    inv.insert("Status".into(), st.into());
    inv.insert("StatusDetails".into(), detail.into());
    if inv.contains_key("ResponseCode") || inv.contains_key("StandardOutputContent") {
        inv.insert("ResponseCode".into(), code.into());
    }
    if !is_terminal_status(st) && inv.contains_key("ExecutionEndDateTime") {
        inv.insert("ExecutionEndDateTime".into(), "".into());
    }
    if st == "Failed" || st == "TimedOut" {
        let err = inv
            .get("StandardErrorContent")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if err.is_empty() && inv.contains_key("StandardErrorContent") {
            inv.insert(
                "StandardErrorContent".into(),
                format!("{detail} (fault proxy)").into(),
            );
        }
    }
    if let Some(Value::Array(plugins)) = inv.get_mut("CommandPlugins") {
        for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
            p.insert("Status".into(), st.into());
            p.insert("StatusDetails".into(), detail.into());
            p.insert("ResponseCode".into(), code.into());
        }
    }
}

fn instance_matches(want: &Option<String>, inv: &serde_json::Map<String, Value>) -> bool {
    match want {
        None => true,
        Some(w) => inv.get("InstanceId").and_then(Value::as_str) == Some(w.as_str()),
    }
}

fn rewrite_invocation(inv: &mut serde_json::Map<String, Value>, transforms: &[Action]) {
    for t in transforms {
        match t {
            Action::RewriteSsm { instance, status } if instance_matches(instance, inv) => {
                set_invocation(inv, status);
            }
            Action::SetStdout { instance, stdout } if instance_matches(instance, inv) => {
                inv.insert("StandardOutputContent".into(), stdout.clone().into());
                if let Some(Value::Array(plugins)) = inv.get_mut("CommandPlugins") {
                    for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
                        p.insert("Output".into(), stdout.clone().into());
                    }
                }
            }
            _ => {}
        }
    }
}

/// A command's aggregate after some of its invocations were rewritten.
fn rewrite_command(cmd: &mut serde_json::Map<String, Value>, transforms: &[Action]) {
    let ids: Vec<String> = cmd
        .get("InstanceIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let target_count = cmd.get("TargetCount").and_then(Value::as_u64).unwrap_or(0) as usize;
    let base = cmd
        .get("Status")
        .and_then(Value::as_str)
        .unwrap_or("Success")
        .to_string();
    // One entry per invocation: the named instances, or as many anonymous ones as targets
    // (AWS names no instances for tag targets).
    let mut entries: Vec<(Option<String>, String, bool)> = if ids.is_empty() {
        (0..target_count.max(1))
            .map(|_| (None, base.clone(), false))
            .collect()
    } else {
        ids.iter()
            .map(|i| (Some(i.clone()), base.clone(), false))
            .collect()
    };
    let mut touched = false;
    for t in transforms {
        let Action::RewriteSsm { instance, status } = t else {
            continue;
        };
        let st = invocation_fields(status).0.to_string();
        match instance {
            None => {
                for e in entries.iter_mut() {
                    e.1 = st.clone();
                    e.2 = true;
                }
                touched = true;
            }
            Some(want) => {
                let hit = if ids.is_empty() {
                    entries.iter_mut().find(|e| !e.2)
                } else {
                    entries
                        .iter_mut()
                        .find(|e| e.0.as_deref() == Some(want.as_str()))
                };
                if let Some(e) = hit {
                    e.1 = st.clone();
                    e.2 = true;
                    touched = true;
                }
            }
        }
    }
    if !touched {
        return;
    }
    let has = |s: &str| entries.iter().any(|e| e.1 == s);
    let (status, detail) = if entries.iter().any(|e| !is_terminal_status(&e.1)) {
        ("InProgress", "In Progress")
    } else if has("Failed") {
        ("Failed", "Failed")
    } else if has("TimedOut") {
        ("TimedOut", "Execution Timed Out")
    } else if has("Cancelled") {
        ("Cancelled", "Canceled")
    } else {
        ("Success", "Success")
    };
    let completed = entries.iter().filter(|e| is_terminal_status(&e.1)).count();
    let errors = entries
        .iter()
        .filter(|e| e.1 == "Failed" || e.1 == "TimedOut")
        .count();
    cmd.insert("Status".into(), status.into());
    cmd.insert("StatusDetails".into(), detail.into());
    cmd.insert("CompletedCount".into(), completed.into());
    cmd.insert("ErrorCount".into(), errors.into());
    cmd.insert("TargetCount".into(), target_count.max(entries.len()).into());
}

/// Applies the SSM rewrites to an answer; anything it cannot parse passes unchanged.
fn rewrite_ssm(operation: &str, body: &Bytes, transforms: &[Action]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    match operation {
        "GetCommandInvocation" => {
            if let Some(inv) = v.as_object_mut() {
                rewrite_invocation(inv, transforms);
            }
        }
        "ListCommandInvocations" => {
            if let Some(Value::Array(invs)) = v.get_mut("CommandInvocations") {
                for inv in invs.iter_mut().filter_map(Value::as_object_mut) {
                    rewrite_invocation(inv, transforms);
                }
            }
        }
        "ListCommands" => {
            if let Some(Value::Array(cmds)) = v.get_mut("Commands") {
                for cmd in cmds.iter_mut().filter_map(Value::as_object_mut) {
                    rewrite_command(cmd, transforms);
                }
            }
        }
        _ => return body.clone(),
    }
    match serde_json::to_vec(&v) {
        Ok(b) => b.into(),
        Err(_) => body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn recognises_json_query_and_rest_calls() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ssm/aws4_request, \
                    SignedHeaders=host, Signature=abc";
        let p = parts(
            Request::post("/")
                .header("x-amz-target", "AmazonSSM.SendCommand")
                .header("authorization", auth)
                .body(())
                .unwrap(),
        );
        assert_eq!(classify(&p, b"{}"), ("ssm".into(), "SendCommand".into()));
        let p = parts(
            Request::post("/")
                .header("x-amz-target", "DynamoDB_20120810.PutItem")
                .body(())
                .unwrap(),
        );
        assert_eq!(classify(&p, b"{}"), ("dynamodb".into(), "PutItem".into()));
        let p = parts(
            Request::post("/")
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .header("authorization", auth.replace("/ssm/", "/ec2/").as_str())
                .body(())
                .unwrap(),
        );
        assert_eq!(
            classify(&p, b"Version=2016-11-15&Action=DescribeInstances"),
            ("ec2".into(), "DescribeInstances".into())
        );
        let p = parts(Request::post("/moto-api/reset").body(()).unwrap());
        assert_eq!(
            classify(&p, b""),
            ("moto-api".into(), "POST /moto-api/reset".into())
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        assert_eq!(percent_decode(b"a%2"), "a%2");
        assert_eq!(percent_decode(b"%"), "%");
        assert_eq!(percent_decode(b"%zz%41+b"), "%zzA b");
        assert_eq!(form_param(b"=&&Action", "Action"), Some(String::new()));
        let p = parts(
            Request::post("/")
                .header("authorization", "Credential=/")
                .header("x-amz-target", "")
                .body(())
                .unwrap(),
        );
        assert_eq!(classify(&p, b""), (String::new(), String::new()));
        let body = Bytes::from_static(b"not json");
        let t = [Action::RewriteSsm {
            instance: None,
            status: "Failed".into(),
        }];
        assert_eq!(rewrite_ssm("ListCommands", &body, &t), body);
    }

    #[test]
    fn list_commands_aggregate_follows_the_invocations() {
        let body = Bytes::from(
            serde_json::json!({"Commands": [{
                "CommandId": "c", "Status": "Success", "StatusDetails": "Success",
                "InstanceIds": ["i-1", "i-2"], "TargetCount": 2,
                "CompletedCount": 2, "ErrorCount": 0,
            }]})
            .to_string(),
        );
        let failed_one = [Action::RewriteSsm {
            instance: Some("i-2".into()),
            status: "Failed".into(),
        }];
        let v: Value =
            serde_json::from_slice(&rewrite_ssm("ListCommands", &body, &failed_one)).unwrap();
        let c = &v["Commands"][0];
        assert_eq!(c["Status"], "Failed");
        assert_eq!(c["CompletedCount"], 2);
        assert_eq!(c["ErrorCount"], 1);
        let running = [Action::RewriteSsm {
            instance: Some("i-1".into()),
            status: "InProgress".into(),
        }];
        let v: Value =
            serde_json::from_slice(&rewrite_ssm("ListCommands", &body, &running)).unwrap();
        let c = &v["Commands"][0];
        assert_eq!(c["Status"], "InProgress");
        assert_eq!(c["CompletedCount"], 1);
        assert_eq!(c["ErrorCount"], 0);
        let other = [Action::RewriteSsm {
            instance: Some("i-9".into()),
            status: "Failed".into(),
        }];
        let v: Value = serde_json::from_slice(&rewrite_ssm("ListCommands", &body, &other)).unwrap();
        assert_eq!(v["Commands"][0]["Status"], "Success");
    }
}
