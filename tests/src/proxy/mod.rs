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
//! **The SSM fleet.** The Run Command operations (`DescribeInstanceInformation`,
//! `SendCommand`, `ListCommands`, `ListCommandInvocations`, `GetCommandInvocation`,
//! `CancelCommand`) are not forwarded: the process-wide simulated fleet
//! ([`crate::fleet::Fleet::global`]) answers them, the way AWS does, after the rules ran
//! (a throttle or a reset still applies; [`Action::RewriteSsm`] and [`Action::SetStdout`]
//! rewrite its answers). For `SendCommand` the proxy reads the secret the command names
//! from the upstream's Secrets Manager first, with the caller's credentials. In the call
//! log such a call counts as forwarded: its side effect happened.
//!
//! **Forwarding.** Method, path, query, headers and body go upstream unchanged (the `Host`
//! header too: the emulator builds queue URLs from it and does not check signatures); only
//! hop-by-hop headers are dropped. Connections are kept alive on both sides; bodies are
//! buffered (they are small).
//!
//! **Robustness.** Malformed HTTP is answered 400 by hyper and the connection closed; an
//! unreachable upstream is answered 502 (which the SDK treats as transient). Nothing in
//! here panics on what a client sends.
//!
//! **Layout.** `route` recognises the service, operation and protocol of a request;
//! `faults` holds the rules and decides which fire; `server` accepts connections, answers
//! or forwards each request as the rules decide (or has the fleet answer it); `answers`
//! shapes the errors the proxy gives in a service's place; `ssm` rewrites SSM answers;
//! `transactions` is the DynamoDB transaction isolator.

// The proxy sits between the worker and the emulator in every fault test and bench: a
// panic in it would look like a network fault and mislead the test, so outside its own
// unit tests it has no `unwrap`/`expect`, as the worker crates have none.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod answers;
mod faults;
mod route;
mod server;
pub(crate) mod ssm;
mod transactions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::Uri;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{Action, Rule, RuleId, Trigger};

use faults::{Faults, Plan};
use server::Upstream;
use transactions::Isolator;

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
    /// Whether the upstream (or, for the SSM operations it answers, the simulated fleet)
    /// answered the request: its side effect happened.
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
            .field("upstream", &self.state.upstream.uri)
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.shutdown.send(true);
    }
}

/// What the proxy's connection tasks share.
struct State {
    upstream: Upstream,
    faults: Faults,
    /// See [`FaultProxy::isolate_dynamodb_transactions`].
    isolator: Isolator,
    next_seq: AtomicU64,
    calls: Mutex<Vec<Call>>,
    /// Client connections accepted so far (see [`FaultProxy::client_connections`]).
    connections: AtomicU64,
    /// Answers kept for [`Action::Replay`].
    replays: Mutex<Replays>,
}

/// Answers kept for [`Action::Replay`], by service, operation and request body.
type Replays = std::collections::HashMap<(String, String, Vec<u8>), server::Kept>;

/// The lock, also when a thread panicked holding it (the data stay usable).
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
        let state = Arc::new(State {
            upstream: Upstream::new(uri),
            faults: Faults::new(seed),
            isolator: Isolator::new(),
            next_seq: AtomicU64::new(1),
            calls: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            replays: Mutex::new(std::collections::HashMap::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(server::accept_loop(listener, state.clone(), shutdown_rx));
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
        self.state.upstream.uri.to_string()
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) -> RuleId {
        self.state.faults.add(rule)
    }

    /// Removes one rule; true if it was there.
    pub fn remove_rule(&self, id: RuleId) -> bool {
        self.state.faults.remove(id)
    }

    /// Removes every rule: from now on the proxy only forwards.
    pub fn clear_rules(&self) {
        self.state.faults.clear();
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
        self.state.isolator.set(on);
    }

    /// How many client connections the proxy has accepted since it started. The proxy
    /// keeps a client's connection open across requests whatever the upstream does (the
    /// emulator answers `Connection: close`; that hop-by-hop header is not passed on, and
    /// the proxy opens upstream connections of its own), so a client that keeps its
    /// connections alive opens only a few in all: the difference between two readings is
    /// how many it opened meanwhile.
    pub fn client_connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// How many calls had a fault injected.
    pub fn injected(&self) -> usize {
        lock(&self.state.calls)
            .iter()
            .filter(|c| !c.injected.is_empty())
            .count()
    }
}

impl State {
    /// Runs the rules over one call and records it in the call log.
    fn plan(&self, service: &str, operation: &str, body: &[u8]) -> (u64, Plan) {
        // Numbered under the rules' lock, so the order of calls matches the draws.
        let (seq, mut plan) = self.faults.fire(service, operation, || {
            self.next_seq.fetch_add(1, Ordering::SeqCst)
        });
        lock(&self.calls).push(Call {
            seq,
            service: service.to_string(),
            operation: operation.to_string(),
            injected: std::mem::take(&mut plan.injected),
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
}
