//! A fake AWS for benchmarks: one in-process HTTP/1.1 server (hyper, keep-alive, loopback)
//! that answers every call the export workflow makes, after a latency drawn around AWS's
//! typical figures ([`LatencyModel`]), and counts them by service and operation.
//!
//! Point an SDK configuration at [`FakeAws::url`]; every service the workflows use speaks a
//! JSON protocol (`X-Amz-Target: <prefix>.<Operation>`), which is how a call is recognised:
//!
//! - **ACM** (`CertificateManager.*`): `DescribeCertificate`, `ListTagsForCertificate`,
//!   `ExportCertificate`, for the certificates registered with [`FakeAws::add_certificate`]
//!   (ISSUED, exportable, their `certflow:targets` tag as given; the exported PEM is a
//!   minimal DER whose serial is the certificate's, so fingerprints and the fleet's serial
//!   check work); any other ARN is `ResourceNotFoundException`.
//! - **Secrets Manager** (`secretsmanager.*`): `DescribeSecret`, `CreateSecret`,
//!   `PutSecretValue`, `GetSecretValue`, on an in-memory map of secrets, versions named by
//!   their client request token, with AWS's errors (`ResourceNotFoundException`,
//!   `ResourceExistsException`).
//! - **DynamoDB** (`DynamoDB_20120810.*`, the inventory table): answered generically, as
//!   for a fresh table: writes succeed (`{}`), `GetItem` finds nothing, `Query`/`Scan`
//!   return no items, `BatchWriteItem` leaves nothing unprocessed. A fresh row is what a
//!   storm of first exports writes, and the workflow's conditional writes all pass then.
//! - **SSM** (`AmazonSSM.*`): `DescribeDocument` (a SHA-256 hash, the install document's
//!   parameters with `CertflowJob`); Run Command by the process-wide simulated fleet
//!   ([`crate::fleet::Fleet::global`], as the fault proxy does), which reads the secret a
//!   `SendCommand` names from this fake's Secrets Manager. Every command sent is reported
//!   on [`FakeAws::commands`] (its id, the job it names, when), so a bench can publish
//!   SSM's status-change event when it ends.
//! - **EventBridge** (`AWSEvents.PutEvents`): accepted, an event id per entry.
//!
//! Anything else is answered 400 `UnknownOperationException` and counted, so a call the
//! fake does not know shows in the counts instead of hiding.

mod answers;
mod latency;
mod slow;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use latency::{LatencyModel, SOURCES as LATENCY_SOURCES};
pub use slow::{Counts, SlowQueue, SlowStore};

/// A certificate the fake ACM knows.
#[derive(Clone, Debug)]
struct Certificate {
    domain: String,
    /// ACM's format: `0a:1b:…`.
    serial: String,
    /// The `certflow:targets` tag's value.
    targets: String,
    pem: String,
}

/// A secret of the fake Secrets Manager.
#[derive(Clone, Debug, Default)]
struct Secret {
    tags: Vec<(String, String)>,
    /// Version id (the client request token) → value.
    versions: HashMap<String, String>,
    current: String,
}

/// An install command the fleet accepted.
#[derive(Clone, Debug)]
pub struct CommandSent {
    /// SSM's command id.
    pub command_id: String,
    /// The job its `CertflowJob` parameter names, if any.
    pub job: Option<String>,
    /// The command's parameters as sent (for the status-change event).
    pub parameters: serde_json::Value,
    /// The document.
    pub document: String,
}

struct State {
    latency: LatencyModel,
    calls: Mutex<BTreeMap<String, u64>>,
    certificates: Mutex<HashMap<String, Certificate>>,
    secrets: Mutex<HashMap<String, Secret>>,
    commands: Option<mpsc::UnboundedSender<CommandSent>>,
    connections: AtomicU64,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake AWS server. Dropping it stops accepting connections.
pub struct FakeAws {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeAws {
    /// Starts the fake on a free loopback port, on the current tokio runtime (its
    /// connections are served there too). With `commands`, every command the fleet accepts
    /// is reported on it.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(
        latency: LatencyModel,
        commands: Option<mpsc::UnboundedSender<CommandSent>>,
    ) -> FakeAws {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port for the fake AWS");
        let addr = listener.local_addr().expect("the fake AWS's address");
        let state = Arc::new(State {
            latency,
            calls: Mutex::new(BTreeMap::new()),
            certificates: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            commands,
            connections: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        FakeAws {
            addr,
            state,
            accept,
        }
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers an ISSUED, exportable certificate whose `certflow:targets` tag is
    /// `targets` (`Key=Value` entries separated by spaces); `n` makes its serial.
    pub fn add_certificate(&self, arn: &str, targets: &str, n: u64) {
        let serial_bytes = answers::serial_bytes(n);
        let serial = serial_bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let cert = Certificate {
            domain: format!("www{n}.example.com"),
            serial,
            targets: targets.to_string(),
            pem: answers::pem(&serial_bytes),
        };
        lock(&self.state.certificates).insert(arn.to_string(), cert);
    }

    /// Calls answered so far, by `"<service> <Operation>"` (`acm DescribeCertificate`).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        lock(&self.state.calls).clone()
    }

    /// Forgets the counts, the secrets and the certificates.
    pub fn reset(&self) {
        lock(&self.state.calls).clear();
        lock(&self.state.secrets).clear();
        lock(&self.state.certificates).clear();
    }

    /// Forgets the counts only.
    pub fn reset_calls(&self) {
        lock(&self.state.calls).clear();
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// The latency model in use.
    pub fn latency(&self) -> &LatencyModel {
        &self.state.latency
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                state.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .header_read_timeout(None)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// An answer: the JSON body, or an AWS error (status, code, message).
type Answer = Result<serde_json::Value, (u16, &'static str, String)>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-amz-json-1.1")
        .to_string();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (prefix, op) = target.split_once('.').unwrap_or(("", target.as_str()));
    let service = match prefix {
        "CertificateManager" => "acm",
        "secretsmanager" => "secretsmanager",
        "AmazonSSM" => "ssm",
        "AWSEvents" => "events",
        p if p.starts_with("DynamoDB_") => "dynamodb",
        _ => "unknown",
    };
    *lock(&state.calls)
        .entry(format!("{service} {op}"))
        .or_insert(0) += 1;
    let delay = state.latency.draw(service, op);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = match service {
        "acm" => state.acm(op, &req),
        "secretsmanager" => state.secretsmanager(op, &req),
        "dynamodb" => answers::dynamodb(op),
        "ssm" => state.ssm(op, &req, &body),
        "events" => state.events(op, &req),
        _ => Err((
            400,
            "UnknownOperationException",
            format!("the fake AWS does not answer {target:?}"),
        )),
    };
    let (status, json) = match answer {
        Ok(v) => (StatusCode::OK, v),
        Err((status, code, message)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            serde_json::json!({ "__type": code, "message": message }),
        ),
    };
    let mut res = Response::new(Full::new(Bytes::from(json.to_string())));
    *res.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        res.headers_mut().insert("content-type", v);
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    if let Ok(v) = answers::uuid(id).parse() {
        res.headers_mut().insert("x-amzn-requestid", v);
    }
    res
}

fn text<'a>(req: &'a serde_json::Value, field: &str) -> &'a str {
    req.get(field).and_then(|v| v.as_str()).unwrap_or("")
}

impl State {
    fn acm(&self, op: &str, req: &serde_json::Value) -> Answer {
        let arn = text(req, "CertificateArn");
        let Some(cert) = lock(&self.certificates).get(arn).cloned() else {
            return Err((
                400,
                "ResourceNotFoundException",
                format!("Could not find certificate {arn}."),
            ));
        };
        Ok(match op {
            "DescribeCertificate" => answers::describe_certificate(arn, &cert),
            "ListTagsForCertificate" => serde_json::json!({
                "Tags": [{ "Key": "certflow:targets", "Value": cert.targets }]
            }),
            "ExportCertificate" => serde_json::json!({
                "Certificate": cert.pem,
                "CertificateChain": cert.pem,
                "PrivateKey": answers::ENCRYPTED_KEY,
            }),
            other => return Err(unknown("acm", other)),
        })
    }

    fn secretsmanager(&self, op: &str, req: &serde_json::Value) -> Answer {
        let not_found = |id: &str| {
            (
                400,
                "ResourceNotFoundException",
                format!("Secrets Manager can't find the specified secret: {id}"),
            )
        };
        let arn = |name: &str| {
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
        };
        let mut secrets = lock(&self.secrets);
        match op {
            "DescribeSecret" => {
                let id = text(req, "SecretId");
                let s = secrets.get(id).ok_or_else(|| not_found(id))?;
                let tags: Vec<_> = s
                    .tags
                    .iter()
                    .map(|(k, v)| serde_json::json!({ "Key": k, "Value": v }))
                    .collect();
                Ok(serde_json::json!({
                    "ARN": arn(id), "Name": id, "Description": "Managed by certflow",
                    "Tags": tags,
                    "VersionIdsToStages": { s.current.clone(): ["AWSCURRENT"] },
                }))
            }
            "CreateSecret" => {
                let name = text(req, "Name");
                if secrets.contains_key(name) {
                    return Err((
                        400,
                        "ResourceExistsException",
                        format!("The operation failed because the secret {name} already exists."),
                    ));
                }
                let token = text(req, "ClientRequestToken").to_string();
                let tags = req
                    .get("Tags")
                    .and_then(|t| t.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|t| (text(t, "Key").to_string(), text(t, "Value").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut versions = HashMap::new();
                versions.insert(token.clone(), text(req, "SecretString").to_string());
                secrets.insert(
                    name.to_string(),
                    Secret {
                        tags,
                        versions,
                        current: token.clone(),
                    },
                );
                Ok(serde_json::json!({ "ARN": arn(name), "Name": name, "VersionId": token }))
            }
            "PutSecretValue" => {
                let id = text(req, "SecretId");
                let s = secrets.get_mut(id).ok_or_else(|| not_found(id))?;
                let token = text(req, "ClientRequestToken").to_string();
                let value = text(req, "SecretString").to_string();
                match s.versions.get(&token) {
                    Some(v) if *v != value => {
                        return Err((
                            400,
                            "ResourceExistsException",
                            format!("A version with VersionId {token} already exists with different contents."),
                        ))
                    }
                    _ => {}
                }
                s.versions.insert(token.clone(), value);
                s.current = token.clone();
                Ok(serde_json::json!({
                    "ARN": arn(id), "Name": id, "VersionId": token, "VersionStages": ["AWSCURRENT"],
                }))
            }
            "GetSecretValue" => {
                let id = text(req, "SecretId");
                let s = secrets.get(id).ok_or_else(|| not_found(id))?;
                let version = match text(req, "VersionId") {
                    "" => s.current.clone(),
                    v => v.to_string(),
                };
                let value = s.versions.get(&version).ok_or_else(|| not_found(id))?;
                Ok(serde_json::json!({
                    "ARN": arn(id), "Name": id, "VersionId": version, "SecretString": value,
                    "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9,
                }))
            }
            other => Err(unknown("secretsmanager", other)),
        }
    }

    /// The serial (openssl's format) in the current version of secret `id`, as the install
    /// document would read it.
    fn serial_in_secret(&self, id: &str) -> Result<String, String> {
        let secrets = lock(&self.secrets);
        let s = secrets
            .get(id)
            .ok_or_else(|| format!("ResourceNotFoundException: no secret {id}"))?;
        let value = s
            .versions
            .get(&s.current)
            .ok_or_else(|| format!("secret {id} has no current version"))?;
        crate::fleet::wire::serial_of_secret(value)
    }

    fn ssm(&self, op: &str, req: &serde_json::Value, body: &Bytes) -> Answer {
        use crate::fleet::{wire, Fleet};
        if op == "DescribeDocument" {
            return Ok(answers::describe_document(text(req, "Name")));
        }
        if !wire::handles(op) {
            return Err(unknown("ssm", op));
        }
        let secret = match (op, wire::secret_id_of(body)) {
            ("SendCommand", Some(id)) => Some(self.serial_in_secret(&id)),
            _ => None,
        };
        match wire::answer(Fleet::global(), op, body, secret, &[]) {
            Ok(v) => {
                if op == "SendCommand" {
                    self.report_command(req, &v);
                }
                Ok(v)
            }
            Err(e) => {
                let code = match e.code {
                    "ValidationException" => "ValidationException",
                    "InvalidCommandId" => "InvalidCommandId",
                    "InvalidInstanceId" => "InvalidInstanceId",
                    _ => "InvalidParameters",
                };
                Err((e.status, code, e.message))
            }
        }
    }

    fn report_command(&self, req: &serde_json::Value, answer: &serde_json::Value) {
        let Some(tx) = &self.commands else {
            return;
        };
        let Some(id) = answer
            .get("Command")
            .and_then(|c| c.get("CommandId"))
            .and_then(|c| c.as_str())
        else {
            return;
        };
        let parameters = req.get("Parameters").cloned().unwrap_or_default();
        let job = parameters
            .get(workflows::export_certificate::JOB_PARAMETER)
            .and_then(|j| j.get(0))
            .and_then(|j| j.as_str())
            .map(str::to_string);
        let _ = tx.send(CommandSent {
            command_id: id.to_string(),
            job,
            parameters,
            document: text(req, "DocumentName").to_string(),
        });
    }

    fn events(&self, op: &str, req: &serde_json::Value) -> Answer {
        if op != "PutEvents" {
            return Err(unknown("events", op));
        }
        let n = req
            .get("Entries")
            .and_then(|e| e.as_array())
            .map_or(0, Vec::len);
        let entries: Vec<_> = (0..n)
            .map(|_| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                serde_json::json!({ "EventId": answers::uuid(id) })
            })
            .collect();
        Ok(serde_json::json!({ "FailedEntryCount": 0, "Entries": entries }))
    }
}

fn unknown(service: &str, op: &str) -> (u16, &'static str, String) {
    (
        400,
        "UnknownOperationException",
        format!("the fake AWS does not answer {service} {op}"),
    )
}
