//! A whole certflow on the emulator for one test: its own jobs table, task, intake and
//! events queues, inventory table, SSM document, secret prefix and EventBridge rules, the real
//! workflows over them, and workers running in this process.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use engine::backend::dynamodb::{create_job_table, DynamoJobStore};
use engine::backend::sqs::{create_queue_with_dlq, SqsTaskQueue};
use engine::schema::{self, JobTableSpec};
use engine::{Intake, JobId, JobRecord, Jobs, SystemClock, Worker, WorkerConfig};
use workflows::export_certificate::rollout;
use workflows::export_certificate::{self, Deps, ExportConfig, ServerResult};

use crate::fleet::{Fleet, Kind};
use crate::{emulator, unique, RunningWorker};

/// One test's certflow.
pub struct Env {
    /// SDK configuration (the emulator).
    pub sdk: aws_config::SdkConfig,
    /// Job operations.
    pub jobs: Jobs,
    /// The intake queue (export requests).
    pub intake: SqsTaskQueue,
    /// The events queue (ACM events, from the EventBridge rules).
    pub events: SqsTaskQueue,
    /// The export workflow's dependencies (names of its resources).
    pub deps: Deps,
    /// The jobs table.
    pub table: String,
    /// Event source accepted by this certflow (unique per test).
    pub source: String,
    /// The task queue's name.
    pub tasks_queue: String,
    /// The endpoint the workflows' and workers' clients talk to: always a fault proxy in
    /// front of the emulator (the test's, or [`Env`]'s own), so that SSM is answered by
    /// the simulated fleet ([`crate::fleet`]).
    pub endpoint: String,
    /// The proxy started when the test gave no endpoint; lives as long as the `Env`.
    own_proxy: Option<crate::proxy::FaultProxy>,
}

/// The names of a certflow's resources, as `certflow worker` reads them from its
/// `CERTFLOW_*` settings (e.g. a CloudFormation stack's outputs).
#[derive(Debug, Clone)]
pub struct Names {
    /// `CERTFLOW_JOBS_TABLE`.
    pub jobs_table: String,
    /// `CERTFLOW_TASKS_QUEUE` (its DLQ is this name + `-dlq`).
    pub tasks_queue: String,
    /// `CERTFLOW_INTAKE_QUEUE` (its DLQ is this name + `-dlq`).
    pub intake_queue: String,
    /// `CERTFLOW_EVENTS_QUEUE` (its DLQ is this name + `-dlq`).
    pub events_queue: String,
    /// `CERTFLOW_INVENTORY_TABLE`.
    pub inventory_table: String,
    /// `CERTFLOW_DOCUMENT_NAME`.
    pub document_name: String,
    /// `CERTFLOW_SECRET_PREFIX`.
    pub secret_prefix: String,
    /// `CERTFLOW_KMS_KEY_ID`.
    pub kms_key_id: Option<String>,
    /// An event source accepted besides `aws.acm` (in `CERTFLOW_EVENT_SOURCES`).
    pub source: String,
}

/// `sdk` with every client's endpoint replaced by `url`. `sdk.to_builder().endpoint_url(url)`
/// is not enough: a configuration loaded from the environment keeps `AWS_ENDPOINT_URL` in
/// its service config, which takes precedence over the configured endpoint when a client is
/// built. So the configuration is rebuilt without one.
fn via_endpoint(sdk: &aws_config::SdkConfig, url: &str) -> aws_config::SdkConfig {
    let mut b = aws_config::SdkConfig::builder().endpoint_url(url);
    b.set_region(sdk.region().cloned());
    b.set_credentials_provider(sdk.credentials_provider());
    b.set_behavior_version(sdk.behavior_version());
    b.set_retry_config(sdk.retry_config().cloned());
    b.set_timeout_config(sdk.timeout_config().cloned());
    b.set_sleep_impl(sdk.sleep_impl());
    b.set_time_source(sdk.time_source());
    b.set_identity_cache(sdk.identity_cache());
    b.set_http_client(sdk.http_client());
    b.set_stalled_stream_protection(sdk.stalled_stream_protection());
    b.build()
}

impl Env {
    /// Creates every resource.
    pub async fn new() -> Env {
        Env::with_config(None, |_| {}).await
    }

    /// Like [`Env::new`], but the workflows' and workers' clients (jobs table, task and
    /// intake queues, ACM, Secrets Manager, SSM, inventory) talk to `endpoint` when given
    /// (e.g. a [`crate::proxy::FaultProxy`] URL), and `configure` adjusts the export
    /// workflow's settings (not the names of its resources: those exist already). The
    /// resources are created, and [`Env::sdk`] talks, straight to the emulator; queue URLs
    /// therefore name the emulator's host (the SDK sends every request to its endpoint and
    /// the emulator finds queues by name, so they work through the proxy too).
    pub async fn with_config(
        endpoint: Option<&str>,
        configure: impl FnOnce(&mut ExportConfig),
    ) -> Env {
        let sdk = emulator().await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let table = unique("x-jobs");
        create_job_table(&ddb, &JobTableSpec::new(&table, workflows::JOB_LABELS))
            .await
            .unwrap();
        let tasks = unique("x-tasks");
        create_queue_with_dlq(&sqs, &tasks, Duration::from_secs(30), 5)
            .await
            .unwrap();
        let intake = unique("x-intake");
        let events = unique("x-events");
        for queue in [&intake, &events] {
            create_queue_with_dlq(&sqs, queue, Duration::from_secs(30), schema::MAX_RECEIVES)
                .await
                .unwrap();
        }
        let names = Names {
            jobs_table: table,
            tasks_queue: tasks,
            intake_queue: intake,
            events_queue: events,
            inventory_table: unique("x-inventory"),
            document_name: unique("Install-ACMCertificate"),
            secret_prefix: format!("{}/", unique("certflow-test")),
            kms_key_id: None,
            source: format!("custom.aws.acm.{}", unique("t")),
        };
        workflows::inventory::create_table(&ddb, &names.inventory_table)
            .await
            .unwrap();
        workflows::document::ensure(&aws_sdk_ssm::Client::new(&sdk), &names.document_name)
            .await
            .unwrap();
        Env::connect(sdk, &names, endpoint, configure).await
    }

    /// The certflow whose resources already exist under `names` (nothing is created):
    /// the engine and the workflows configured as `certflow worker` configures them.
    pub async fn from_names(sdk: aws_config::SdkConfig, names: &Names) -> Env {
        Env::connect(sdk, names, None, |_| {}).await
    }

    async fn connect(
        sdk: aws_config::SdkConfig,
        names: &Names,
        endpoint: Option<&str>,
        configure: impl FnOnce(&mut ExportConfig),
    ) -> Env {
        // The workers' clients always go through a proxy: SSM is the simulated fleet's.
        let (endpoint, own_proxy) = match endpoint {
            Some(url) => (url.to_string(), None),
            None => {
                let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
                let proxy = crate::proxy::FaultProxy::start(&upstream, 0).await;
                (proxy.url(), Some(proxy))
            }
        };
        let client_sdk = via_endpoint(&sdk, &endpoint);
        let ddb = aws_sdk_dynamodb::Client::new(&client_sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let mut config = ExportConfig::new("us-east-1");
        config.secret_prefix = names.secret_prefix.clone();
        config.kms_key_id = names.kms_key_id.clone();
        config.inventory_table = names.inventory_table.clone();
        config.document_name = names.document_name.clone();
        // Nothing sends SSM's command status events here unless a test publishes them:
        // the looks at a batch stay as frequent as before wake-ups (tests/tests/wake.rs
        // sets its own ceiling).
        config.wait_poll_max = Duration::from_secs(15);
        configure(&mut config);
        let deps = Deps {
            clients: workflows::aws::Clients::new(&client_sdk),
            config,
        };
        // Queues are looked up on the emulator, then used through the clients' endpoint.
        let connect = |name: &str| {
            let (sqs, client, name) = (
                sqs.clone(),
                aws_sdk_sqs::Client::new(&client_sdk),
                name.to_string(),
            );
            async move {
                let q = SqsTaskQueue::connect(sqs, &name).await.unwrap();
                SqsTaskQueue::from_urls(client, q.url(), q.dlq_url().map(str::to_string))
            }
        };
        let jobs = Jobs::new(
            Arc::new(DynamoJobStore::new(ddb, &names.jobs_table)),
            Arc::new(connect(&names.tasks_queue).await),
            workflows::registry(deps.clone()),
            Arc::new(SystemClock),
        );
        let intake = connect(&names.intake_queue).await;
        let events = connect(&names.events_queue).await;
        Env {
            sdk,
            jobs,
            intake,
            events,
            deps,
            table: names.jobs_table.clone(),
            source: names.source.clone(),
            tasks_queue: names.tasks_queue.clone(),
            endpoint,
            own_proxy,
        }
    }

    /// The proxy [`Env`] started itself (when the test gave no endpoint).
    pub fn own_proxy(&self) -> Option<&crate::proxy::FaultProxy> {
        self.own_proxy.as_ref()
    }

    /// The simulated fleet the workers' SSM calls reach ([`Fleet::global`]).
    pub fn fleet(&self) -> &'static Fleet {
        Fleet::global()
    }

    /// An SSM client through [`Env::endpoint`]: Run Command answered by the fleet, as the
    /// workers see it.
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        self.deps.clients.ssm.clone()
    }

    /// Every SSM command of this certflow's install document, newest first (ListCommands
    /// through [`Env::endpoint`], every page).
    pub async fn ssm_commands(&self) -> Vec<aws_sdk_ssm::types::Command> {
        use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};
        let filter = CommandFilter::builder()
            .key(CommandFilterKey::DocumentName)
            .value(&self.deps.config.document_name)
            .build()
            .expect("a ListCommands filter");
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ssm()
                .list_commands()
                .filters(filter.clone())
                .set_next_token(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListCommands: {e:?}"));
            out.extend(page.commands().iter().cloned());
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return out;
            }
        }
    }

    /// Starts a worker consuming the intake, events and task queues.
    pub fn worker(&self, id: &str) -> RunningWorker {
        self.worker_with(crate::Stack::worker_config(id))
    }

    /// Starts a worker with its own configuration.
    pub fn worker_with(&self, config: WorkerConfig) -> RunningWorker {
        let worker = Worker::new(self.jobs.clone(), config);
        let intakes = vec![
            Intake {
                queue: Arc::new(self.intake.clone()),
                parse: workflows::intake::IntakeConfig::requests().parser(),
            },
            Intake {
                queue: Arc::new(self.events.clone()),
                parse: workflows::intake::IntakeConfig::events(vec![
                    "aws.acm".into(),
                    self.source.clone(),
                ])
                .parser(),
            },
        ];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let w = worker.clone();
        let handle = tokio::spawn(async move {
            w.run_with_intakes(intakes, async {
                let _ = rx.await;
            })
            .await
        });
        RunningWorker::new(worker, tx, handle)
    }

    /// Sends a body to the intake queue; returns the id of the job it makes.
    pub async fn submit(&self, body: &str) -> JobId {
        let id = self.send_to(self.intake.url(), body).await;
        JobId::from_key(export_certificate::NAME, &id)
    }

    /// Sends an EventBridge envelope to the events queue, as the rules do (the emulator
    /// does not enforce the queue policy that keeps everyone else out); returns the
    /// message id.
    pub async fn submit_event(&self, envelope: &str) -> String {
        self.send_to(self.events.url(), envelope).await
    }

    /// Sends ACM's renewal event for `arn` (`ACM Certificate Available`, `Action`
    /// `RENEWAL`, in the reference's shape) to the events queue, as the renewal rule does;
    /// returns the id of the renewal job it starts.
    pub async fn submit_renewal(&self, arn: &str) -> JobId {
        let event_id = unique("event");
        let envelope = serde_json::json!({
            "version": "0", "id": event_id, "detail-type": "ACM Certificate Available",
            "source": self.source, "account": "123456789012", "time": "2026-05-23T18:43:48Z",
            "region": "us-east-1", "resources": [arn],
            "detail": {"Action": "RENEWAL", "Exportable": "TRUE", "InUse": true}
        });
        self.submit_event(&envelope.to_string()).await;
        JobId::from_key(workflows::renew_certificate::NAME, &event_id)
    }

    async fn send_to(&self, url: &str, body: &str) -> String {
        let out = aws_sdk_sqs::Client::new(&self.sdk)
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .unwrap();
        out.message_id().unwrap().to_string()
    }

    /// Waits until the job is terminal.
    pub async fn wait(&self, id: &JobId) -> JobRecord {
        let until = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(rec) = self.jobs.get(id).await {
                if rec.status.is_terminal() {
                    return rec;
                }
            }
            assert!(
                tokio::time::Instant::now() < until,
                "job {id} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Requests a certificate (exportable or not); returns its ARN.
    pub async fn certificate(&self, exportable: bool) -> String {
        let acm = aws_sdk_acm::Client::new(&self.sdk);
        let mut req = acm
            .request_certificate()
            .domain_name(format!("{}.example.com", unique("www")))
            .validation_method(aws_sdk_acm::types::ValidationMethod::Dns);
        if exportable {
            req = req.options(
                aws_sdk_acm::types::CertificateOptions::builder()
                    .export(aws_sdk_acm::types::CertificateExport::Enabled)
                    .build(),
            );
        }
        req.send().await.unwrap().certificate_arn.unwrap()
    }

    /// Lets certificate `arn` go to target `key=value`, as its owner would: adds the target
    /// to the certificate's `certflow:targets` tag (keeping the targets it lists).
    pub async fn allow(&self, arn: &str, key: &str, value: &str) {
        use workflows::export_certificate::trust::TARGETS_TAG;
        let acm = aws_sdk_acm::Client::new(&self.sdk);
        let tags = acm
            .list_tags_for_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .unwrap();
        let mut listed = tags
            .tags()
            .iter()
            .find(|t| t.key() == TARGETS_TAG)
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string();
        let target = format!("{key}={value}");
        if listed.split_whitespace().any(|t| t == target) {
            return;
        }
        if !listed.is_empty() {
            listed.push(' ');
        }
        listed.push_str(&target);
        acm.add_tags_to_certificate()
            .certificate_arn(arn)
            .tags(
                aws_sdk_acm::types::Tag::builder()
                    .key(TARGETS_TAG)
                    .value(listed)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }

    /// Each server's install result for job `id`, from its entries beside the record.
    pub async fn servers(&self, id: &JobId) -> std::collections::BTreeMap<String, ServerResult> {
        self.jobs
            .all_entries(id, rollout::SERVERS, &engine::Groups::All)
            .await
            .expect("the job's server entries")
            .iter()
            .map(|e| (e.key.clone(), ServerResult::of(e)))
            .collect()
    }

    /// The version ids of secret `name`, sorted (straight from the emulator).
    pub async fn secret_version_ids(&self, name: &str) -> Vec<String> {
        let out = aws_sdk_secretsmanager::Client::new(&self.sdk)
            .list_secret_version_ids()
            .secret_id(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("versions of {name}: {e:?}"));
        let mut ids: Vec<String> = out
            .versions()
            .iter()
            .filter_map(|v| v.version_id())
            .map(str::to_string)
            .collect();
        ids.sort();
        ids
    }

    /// The secret an export of `cert_name` to target `key=value` writes.
    pub fn secret_name(&self, cert_name: &str, key: &str, value: &str) -> String {
        workflows::export_certificate::trust::secret_name(
            &self.deps.config.secret_prefix,
            cert_name,
            key,
            value,
        )
    }

    /// Makes the inventory rows of certificate `arn` hold an older serial than ACM's, as
    /// after a real renewal (the emulator never renews a certificate): a renewal event for
    /// it is then confirmed by ACM and re-exports every row. The servers recorded as
    /// running the row's certificate are recorded as running that older serial too.
    pub async fn pretend_renewed(&self, arn: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        use workflows::inventory::{attr, BY_CERTIFICATE, PK, SK};
        let ddb = aws_sdk_dynamodb::Client::new(&self.sdk);
        let table = &self.deps.config.inventory_table;
        let rows = ddb
            .query()
            .table_name(table)
            .index_name(BY_CERTIFICATE)
            .key_condition_expression(format!("{} = :a", attr::CERTIFICATE_ARN))
            .expression_attribute_values(":a", AttributeValue::S(arn.to_string()))
            .send()
            .await
            .unwrap();
        assert!(!rows.items().is_empty(), "no inventory row of {arn}");
        for row in rows.items() {
            ddb.update_item()
                .table_name(table)
                .key(PK, row[PK].clone())
                .key(SK, row[SK].clone())
                .update_expression("SET #s = :s, #i = :s")
                .expression_attribute_names("#s", attr::SERIAL)
                .expression_attribute_names("#i", attr::INSTANCES_SERIAL)
                .expression_attribute_values(":s", AttributeValue::S("0".into()))
                .send()
                .await
                .unwrap();
        }
    }

    /// Registers `n` EC2 instances tagged `key=value` in the simulated fleet; returns
    /// their ids, sorted.
    pub fn instances(&self, n: u32, key: &str, value: &str) -> Vec<String> {
        Fleet::global().add(n as usize, &[(key, value)], Kind::Ec2)
    }

    /// Registers `n` on-premises managed instances (`mi-…`) tagged `key=value` in the
    /// simulated fleet; returns their ids, sorted.
    pub fn on_prem_instances(&self, n: u32, key: &str, value: &str) -> Vec<String> {
        Fleet::global().add(n as usize, &[(key, value)], Kind::OnPrem)
    }
}

/// The `certflow` binary: `CERTFLOW_BIN`, else in `target/<profile>/`, beside the running
/// bench or above the running test's `deps/` directory. The README's test command builds
/// it before the tests run.
pub fn certflow_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CERTFLOW_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe
        .parent()
        .expect("the running executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("certflow{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --workspace --bins` (deploy/local/test.sh does), or set CERTFLOW_BIN",
        bin.display()
    );
    bin
}

impl Env {
    /// A `certflow` command on this certflow's resources (jobs table, task, intake and
    /// events queues, inventory table, document, secret prefix), its AWS calls going to
    /// `endpoint`: a fault proxy in front of the emulator. Given the emulator's own URL,
    /// the command talks to [`Env::endpoint`] instead, so that its SSM calls reach the
    /// simulated fleet. Whatever `CERTFLOW_*`, `OTEL_*` or SDK retry setting the test
    /// itself runs with is removed first; stdin is closed.
    pub fn certflow_command(&self, endpoint: &str) -> Command {
        let emulator = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        let endpoint = if endpoint.trim_end_matches('/') == emulator.trim_end_matches('/') {
            self.endpoint.as_str()
        } else {
            endpoint
        };
        let mut cmd = Command::new(certflow_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("CERTFLOW_")
                || k.starts_with("OTEL_")
                || k == "AWS_MAX_ATTEMPTS"
                || k == "AWS_RETRY_MODE"
            {
                cmd.env_remove(k);
            }
        }
        let c = &self.deps.config;
        cmd.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("CERTFLOW_JOBS_TABLE", &self.table)
            .env("CERTFLOW_TASKS_QUEUE", &self.tasks_queue)
            .env("CERTFLOW_INTAKE_QUEUE", self.intake.name())
            .env("CERTFLOW_EVENTS_QUEUE", self.events.name())
            .env("CERTFLOW_INVENTORY_TABLE", &c.inventory_table)
            .env("CERTFLOW_DOCUMENT_NAME", &c.document_name)
            .env("CERTFLOW_SECRET_PREFIX", &c.secret_prefix)
            .stdin(Stdio::null());
        cmd
    }

    /// The secret material a job stored: each passphrase and PEM block in every secret its
    /// state names (`secret`, or the `*_secret` fields of the layout before one secret per
    /// target), found at any depth of the secret's JSON, so that a check for leaks holds
    /// whatever layout the secrets have.
    pub async fn secret_material(&self, data: &serde_json::Value) -> Vec<String> {
        fn secrets_in(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
            use serde_json::Value;
            match v {
                Value::String(s) if key == "passphrase" || s.contains("-----BEGIN") => {
                    out.push(s.clone())
                }
                Value::Array(a) => a.iter().for_each(|x| secrets_in(x, key, out)),
                Value::Object(m) => m.iter().for_each(|(k, x)| secrets_in(x, k, out)),
                _ => {}
            }
        }
        let sm = aws_sdk_secretsmanager::Client::new(&self.sdk);
        let mut out = Vec::new();
        let names: Vec<&str> = data
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k == "secret" || k.ends_with("_secret"))
            .filter_map(|(_, v)| v.as_str())
            .collect();
        assert!(!names.is_empty(), "the job names its secrets: {data}");
        for name in names {
            let got = sm.get_secret_value().secret_id(name).send().await.unwrap();
            let text = got.secret_string().unwrap().to_string();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            secrets_in(&value, "", &mut out);
        }
        out
    }

    /// Takes every message now in the intake DLQ: body and reason attribute.
    pub async fn intake_dead_letters(&self) -> Vec<(String, String)> {
        match self.intake.dlq_url() {
            Some(url) => crate::take_dead_letters(&self.sdk, url).await,
            None => Vec::new(),
        }
    }

    /// Takes every message now in the events DLQ: body and reason attribute.
    pub async fn events_dead_letters(&self) -> Vec<(String, String)> {
        match self.events.dlq_url() {
            Some(url) => crate::take_dead_letters(&self.sdk, url).await,
            None => Vec::new(),
        }
    }
}

/// Whether `comment` is that of an install command of job `id` (one per batch:
/// `certflow job <id> batch <n>`).
pub fn is_install_comment(comment: Option<&str>, id: &JobId) -> bool {
    comment.is_some_and(|c| c.starts_with(&format!("certflow job {id} batch ")))
}
