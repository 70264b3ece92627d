//! The operator CLI end to end: the built `certflow` binary, run as an operator runs it,
//! against a whole certflow on the emulator (a `certflow worker` child process, the
//! commands as further child processes, configuration through the `CERTFLOW_*` variables).
//!
//! The binary is the one `cargo build --workspace --bins` put next to this test's
//! executable (`deploy/local/test.sh` builds it before the tests). Faults the emulator
//! cannot produce (an SSM call that fails) come from the fault proxy between the worker and
//! the emulator. Snapshots live in `tests/snapshots/cli/`; after a deliberate change to the
//! interface, regenerate them with `UPDATE_SNAPSHOTS=1` and review the diff.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use certflow_tests::certflow::{certflow_bin, Env};
use certflow_tests::command::Out;
use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
use certflow_tests::unique;
use certflow_tests::worker_process::{LogDir, WorkerCommand, WorkerProcess};
use engine::backend::sqs::create_queue_with_dlq;
use engine::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus};
use serde_json::{json, Value};
use workflows::export_certificate;

fn emulator_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (run deploy/local/test.sh)")
}

/// A certflow on the emulator, with the settings the binary reads.
struct Cf {
    env: Env,
    tasks: String,
    logs: LogDir,
}

impl Cf {
    async fn new() -> Cf {
        let env = Env::new().await;
        // The binary needs the task queue's name, which `Env` keeps to itself: this
        // certflow's workers and commands use a task queue of their own.
        let tasks = unique("x-cli-tasks");
        create_queue_with_dlq(
            &aws_sdk_sqs::Client::new(&env.sdk),
            &tasks,
            Duration::from_secs(30),
            5,
        )
        .await
        .expect("create the task queue");
        Cf {
            env,
            tasks,
            logs: LogDir::new(env!("CARGO_TARGET_TMPDIR"), "cli"),
        }
    }

    /// A command with this certflow's settings, talking to `endpoint`.
    fn command(&self, endpoint: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.env.certflow_command(endpoint);
        cmd.args(args).env("CERTFLOW_TASKS_QUEUE", &self.tasks);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `certflow ARGS` against the emulator.
    async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            self.command(&emulator_url(), args).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("certflow {args:?} did not finish"))
        .expect("run certflow");
        out.into()
    }

    /// Starts `certflow worker` talking to `endpoint` (the emulator, or a proxy to it);
    /// stop it with [`stop`].
    fn worker(&self, endpoint: &str) -> WorkerProcess {
        WorkerCommand::new(&self.env, endpoint)
            .env("CERTFLOW_TASKS_QUEUE", &self.tasks)
            .args(["--poll-wait-secs", "1", "--shutdown-budget-secs", "10"])
            .log_level("info")
            .log_in(&self.logs)
            .spawn()
    }

    async fn record(&self, id: &str) -> JobRecord {
        self.env.jobs.get(&JobId::new(id)).await.expect("read job")
    }

    /// Waits until `done` holds for the job.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&JobRecord) -> bool) {
        let until = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(rec) = self.env.jobs.get(&JobId::new(id)).await {
                if done(&rec) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < until,
                    "job {id} not {what}: {} at {} (attempt {}), {:?}",
                    rec.status,
                    rec.step,
                    rec.attempt,
                    rec.last_error
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Stops a worker the way ECS does (SIGTERM); it must exit 0 within 40 s.
async fn stop(worker: &mut WorkerProcess) {
    worker.stop(Duration::from_secs(40)).await;
}

/// `certflow jobs list -o json ARGS`, which must succeed.
async fn listed(cf: &Cf, extra: &[&str]) -> Value {
    let mut args = vec!["jobs", "list", "-o", "json"];
    args.extend_from_slice(extra);
    let out = cf.run(&args).await;
    assert_eq!(out.code, 0, "{out}");
    out.json()
}

fn ids(listing: &Value) -> Vec<String> {
    listing["Jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no Jobs array in {listing}"))
        .iter()
        .map(|j| j["JobId"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn submit_args<'a>(arn: &'a str, name: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![
        "submit",
        "--certificate-arn",
        arn,
        "--cert-name",
        name,
        "--target",
        target,
    ]
}

/// History events of a job as `jobs show -o json` reports them.
fn history(show: &Value) -> Vec<(String, String, String)> {
    show["History"]
        .as_array()
        .unwrap_or_else(|| panic!("no History in {show}"))
        .iter()
        .map(|e| {
            (
                e["Event"].as_str().unwrap_or_default().to_string(),
                e["Step"].as_str().unwrap_or_default().to_string(),
                e["ToStep"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. submit --wait
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_shows_every_step_and_exits_by_how_the_job_ended() {
    let cf = Cf::new().await;
    let tag = unique("cli-web");
    cf.env.instances(2, "Environment", &tag);
    let good = cf.env.certificate(true).await;
    cf.env.allow(&good, "Environment", &tag).await;
    let not_exportable = cf.env.certificate(false).await;
    let target = format!("Environment={tag}");
    let mut worker = cf.worker(&emulator_url());

    // A good request: every step on its own line as it happens, exit 0.
    let name = unique("shop");
    let mut args = submit_args(&good, &name, &target);
    args.extend(["--wait", "-o", "table"]);
    let out = cf.run(&args).await;
    assert_eq!(out.code, 0, "{out}");
    let step_line = |step: &str, outcome: &str| {
        regex::Regex::new(&format!(r"(?m)^\S+\s+{step}\s+try 1\s+{outcome}")).unwrap()
    };
    for step in ["check", "export", "inventory", "install"] {
        assert!(
            step_line(step, "done → ").is_match(&out.stdout),
            "no line for step {step}:\n{out}"
        );
    }
    assert!(
        step_line("wait", "SUCCEEDED").is_match(&out.stdout),
        "no line for step wait:\n{out}"
    );
    assert!(out.stdout.contains("SUCCEEDED at step wait"), "{out}");
    // Two servers: the canary's batch, back to install, then the second batch.
    assert!(
        out.stdout
            .contains("to canary batch (1 of 2 servers): 1 server(s)"),
        "{out}"
    );
    assert!(
        step_line("wait", "done → install").is_match(&out.stdout),
        "the canary's wait sends the next batch:\n{out}"
    );
    assert!(out.stdout.contains("to batch 1 of 1: 1 server(s)"), "{out}");
    assert!(
        out.stdout.contains("2 server(s): 2 installed, 0 failed"),
        "install results: {out}"
    );

    // A certificate that cannot be exported: non-zero, and the reason, in JSON mode
    // (the default in a pipe): progress on stderr, the job on stdout.
    let mut args = submit_args(&not_exportable, "nope", &target);
    args.push("--wait");
    let out = cf.run(&args).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("FAILED at step check"), "{out}");
    assert!(out.stderr.contains("is not exportable"), "{out}");
    let job = out.json();
    assert_eq!(job["Status"], "FAILED", "{out}");
    assert!(
        job["LastError"]
            .as_str()
            .is_some_and(|e| e.contains("is not exportable")),
        "{out}"
    );
    assert!(
        out.stderr.contains("check") && out.stderr.contains("FAILED"),
        "progress on stderr: {out}"
    );
    stop(&mut worker).await;
}

// ---------------------------------------------------------------------------------------
// 2. jobs list by status and by certificate; 3b. cancel of a waiting job
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_by_status_and_certificate_then_cancel_the_waiting_job() {
    let cf = Cf::new().await;
    let tag = unique("cli-api");
    cf.env.instances(1, "Role", &tag);
    let cert_a = cf.env.certificate(true).await;
    cf.env.allow(&cert_a, "Role", &tag).await;
    let cert_b = cf.env.certificate(false).await;
    let target = format!("Role={tag}");
    let proxy = FaultProxy::start(&emulator_url(), 2).await;
    let mut worker = cf.worker(&proxy.url());

    // SUCCEEDED (certificate A), FAILED (certificate B)...
    let mut args = submit_args(&cert_a, "a-one", &target);
    args.push("--wait");
    let out = cf.run(&args).await;
    assert_eq!(out.code, 0, "{out}");
    let succeeded = out.json()["JobId"].as_str().unwrap().to_string();
    let mut args = submit_args(&cert_b, "b-one", &target);
    args.push("--wait");
    let out = cf.run(&args).await;
    assert_eq!(out.code, 1, "{out}");
    let failed = out.json()["JobId"].as_str().unwrap().to_string();

    // ...and WAITING: SSM answers 503 to every SendCommand, so the install step waits to
    // be retried (certificate A again).
    let unavailable = proxy.add_rule(Rule::new(
        "ssm",
        Some("SendCommand"),
        Trigger::Always,
        Action::Status(503),
    ));
    let out = cf.run(&submit_args(&cert_a, "a-two", &target)).await;
    assert_eq!(out.code, 0, "{out}");
    let waiting = out.json()["JobId"].as_str().unwrap().to_string();
    cf.wait_for(&waiting, "waiting to retry install", |r| {
        r.status == JobStatus::Waiting && r.step == "install" && r.attempt >= 1
    })
    .await;
    // No worker while the listings run, so that nothing moves under them.
    stop(&mut worker).await;
    assert_eq!(cf.record(&waiting).await.status, JobStatus::Waiting);

    let s = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    assert_eq!(
        ids(&listed(&cf, &["--status", "SUCCEEDED"]).await),
        s(&[&succeeded])
    );
    assert_eq!(
        ids(&listed(&cf, &["--status", "failed"]).await),
        s(&[&failed])
    );
    assert_eq!(
        ids(&listed(&cf, &["--status", "WAITING"]).await),
        s(&[&waiting])
    );
    // Default: what is not finished.
    assert_eq!(ids(&listed(&cf, &[]).await), s(&[&waiting]));
    // By certificate: every status, newest first.
    assert_eq!(
        ids(&listed(&cf, &["--certificate-arn", &cert_a]).await),
        s(&[&waiting, &succeeded])
    );
    assert_eq!(
        ids(&listed(
            &cf,
            &["--certificate-arn", &cert_a, "--status", "SUCCEEDED"]
        )
        .await),
        s(&[&succeeded])
    );
    assert_eq!(
        ids(&listed(&cf, &["--certificate-arn", &cert_b]).await),
        s(&[&failed])
    );
    // Several statuses, merged newest update first.
    let all = listed(&cf, &["--status", "all"]).await;
    assert_eq!(ids(&all), s(&[&waiting, &failed, &succeeded]));
    assert_eq!(all["NextCursor"], Value::Null);

    // Pages of one, continued with the cursor, give the same jobs once each.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let mut extra = vec!["--status", "all", "--limit", "1"];
        if let Some(c) = &cursor {
            extra.extend(["--cursor", c.as_str()]);
        }
        let page = listed(&cf, &extra).await;
        paged.extend(ids(&page));
        cursor = page["NextCursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(paged, ids(&all));
    // A cursor is tied to its filters.
    let first = listed(&cf, &["--status", "all", "--limit", "1"]).await;
    let c = first["NextCursor"].as_str().expect("a cursor").to_string();
    let out = cf
        .run(&["jobs", "list", "--status", "FAILED", "--cursor", &c])
        .await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("cursor"), "{out}");

    // --since: everything was updated in the last 10 minutes, nothing in the last second.
    assert_eq!(
        ids(&listed(&cf, &["--status", "all", "--since", "10m"]).await).len(),
        3
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ids(&listed(&cf, &["--status", "all", "--since", "1s"]).await).is_empty());

    // JSON has stable field names: the jobs table's attribute names.
    let keys: BTreeSet<&str> = all
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["Jobs", "NextCursor"]));
    let expected: BTreeSet<&str> = BTreeSet::from([
        "JobId",
        "Workflow",
        "Status",
        "Step",
        "Attempt",
        "Version",
        "CreatedAt",
        "UpdatedAt",
        "NextWakeAt",
        "DeadlineAt",
        "LeaseOwner",
        "LeaseUntil",
        "LastError",
        "CancelRequested",
        "Labels",
        "Data",
        "CertificateArn",
        "CertName",
        "Target",
        // Who sent the request, as SQS recorded it (null for a job made without a message).
        "SenderId",
    ]);
    for job in all["Jobs"].as_array().unwrap() {
        let keys: BTreeSet<&str> = job
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, expected);
    }
    let by_id = |id: &str| {
        all["Jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["JobId"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(&failed)["CertificateArn"], cert_b.as_str());
    assert_eq!(by_id(&waiting)["Status"], "WAITING");
    assert_eq!(by_id(&waiting)["Step"], "install");
    assert_eq!(by_id(&succeeded)["Target"], target.as_str());

    // The table, for people.
    let out = cf
        .run(&["jobs", "list", "--status", "all", "-o", "table"])
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.starts_with("JOB "), "{out}");
    for id in [&succeeded, &failed, &waiting] {
        assert!(out.stdout.contains(id.as_str()), "{out}");
    }

    // Cancel the waiting job while a worker keeps retrying it: it ends CANCELLED.
    let mut worker = cf.worker(&proxy.url());
    let out = cf
        .run(&["jobs", "cancel", &waiting, "--wait", "-o", "table"])
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("cancel requested"), "{out}");
    assert!(out.stdout.contains("CANCELLED"), "{out}");
    let show = cf
        .run(&["jobs", "show", &waiting, "-o", "json"])
        .await
        .json();
    assert_eq!(show["Status"], "CANCELLED");
    assert_eq!(
        history(&show).last().map(|e| e.0.as_str()),
        Some(EventKind::Cancelled.as_str())
    );
    // A finished job cannot be cancelled, and the message says so.
    let out = cf.run(&["jobs", "cancel", &succeeded]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("already SUCCEEDED"), "{out}");
    stop(&mut worker).await;
    proxy.remove_rule(unavailable);
}

// ---------------------------------------------------------------------------------------
// 3. retry resumes at the step that failed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resumes_a_job_that_failed_at_install_and_it_succeeds() {
    let cf = Cf::new().await;
    let tag = unique("cli-db");
    cf.env.instances(1, "Tier", &tag);
    let arn = cf.env.certificate(true).await;
    cf.env.allow(&arn, "Tier", &tag).await;
    let target = format!("Tier={tag}");
    let proxy = FaultProxy::start(&emulator_url(), 3).await;
    // The install document is missing: SSM refuses the command (the emulator itself
    // accepts any document name, so the proxy answers as AWS does).
    let missing = proxy.add_rule(Rule::new(
        "ssm",
        Some("SendCommand"),
        Trigger::Always,
        Action::Respond {
            status: 400,
            body: json!({
                "__type": "InvalidDocument",
                "message": "Document Install-ACMCertificate does not exist in your account"
            })
            .to_string(),
        },
    ));
    let mut worker = cf.worker(&proxy.url());

    let mut args = submit_args(&arn, "tier-cert", &target);
    args.push("--wait");
    let out = cf.run(&args).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("FAILED at step install"), "{out}");
    assert!(out.stderr.contains("InvalidDocument"), "{out}");
    assert!(
        out.stderr.contains("certflow jobs retry"),
        "the error says what to do: {out}"
    );
    let id = out.json()["JobId"].as_str().unwrap().to_string();
    assert_eq!(proxy.count("ssm", "SendCommand"), 1);

    // The cause removed, the job resumes at install and succeeds.
    assert!(proxy.remove_rule(missing));
    let out = cf
        .run(&["jobs", "retry", &id, "--wait", "-o", "table"])
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("restarted at step install"), "{out}");
    assert!(out.stdout.contains("SUCCEEDED"), "{out}");
    assert_eq!(
        proxy.count("ssm", "SendCommand"),
        2,
        "install ran once more"
    );

    let show = cf.run(&["jobs", "show", &id, "-o", "json"]).await.json();
    assert_eq!(show["Status"], "SUCCEEDED");
    let events = history(&show);
    let exported = events
        .iter()
        .filter(|(e, step, _)| e == "step-completed" && step == "export")
        .count();
    assert_eq!(exported, 1, "export ran once: {events:?}");
    let retried = events
        .iter()
        .position(|(e, _, _)| e == "retried")
        .unwrap_or_else(|| panic!("no retried event: {events:?}"));
    assert_eq!(events[retried].2, "install", "{events:?}");
    let after: Vec<&str> = events[retried + 1..]
        .iter()
        .map(|(_, step, _)| step.as_str())
        .collect();
    assert!(
        after.iter().all(|s| *s == "install" || *s == "wait"),
        "only install and wait ran after the retry: {events:?}"
    );
    assert_eq!(events.last().unwrap().0, "succeeded", "{events:?}");
    let servers = show["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{show}");
    assert_eq!(servers[0]["Status"], "Success", "{show}");
    assert_eq!(servers[0]["Group"], "ok", "{show}");
    assert_eq!(show["Rollout"]["Succeeded"], 1, "{show}");
    assert_eq!(show["Rollout"]["Failed"], 0, "{show}");

    // The table says it too, and a job that did not fail is not retried.
    let out = cf.run(&["jobs", "show", &id, "-o", "table"]).await;
    assert!(
        out.stdout.contains("retried by operator → install"),
        "{out}"
    );
    let out = cf.run(&["jobs", "retry", &id]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("only FAILED jobs can be retried"),
        "{out}"
    );
    stop(&mut worker).await;
}

// ---------------------------------------------------------------------------------------
// 4. dlq list and redrive
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_moves_messages_back_and_they_are_processed() {
    let cf = Cf::new().await;
    let tag = unique("cli-edge");
    cf.env.instances(1, "Edge", &tag);
    let arn = cf.env.certificate(true).await;
    cf.env.allow(&arn, "Edge", &tag).await;
    let request_id = unique("req");
    let body = json!({
        "CertificateArn": arn,
        "CertName": "edge",
        "TargetTagKey": "Edge",
        "TargetTagValue": tag,
        "RequestId": request_id,
    })
    .to_string();
    // A valid request that ended in the intake DLQ (say, while a bug was deployed).
    let sqs = aws_sdk_sqs::Client::new(&cf.env.sdk);
    let attr = |v: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    sqs.send_message()
        .queue_url(cf.env.intake.dlq_url().expect("intake DLQ"))
        .message_body(&body)
        .message_attributes(
            engine::backend::sqs::REASON_ATTR,
            attr("simulated: the worker could not parse it"),
        )
        .message_attributes(
            engine::backend::sqs::SOURCE_QUEUE_ATTR,
            attr(cf.env.intake.name()),
        )
        .send()
        .await
        .unwrap();

    // Listing shows it (queue, reason, body) and leaves it there.
    for _ in 0..2 {
        let out = cf
            .run(&["dlq", "list", "--queue", "intake", "-o", "json"])
            .await;
        assert_eq!(out.code, 0, "{out}");
        let listed = out.json();
        let listed = listed.as_array().expect("an array");
        assert_eq!(listed.len(), 1, "{out}");
        assert_eq!(listed[0]["Queue"], "intake");
        assert_eq!(
            listed[0]["Reason"],
            "simulated: the worker could not parse it"
        );
        assert_eq!(listed[0]["Body"], body.as_str());
    }
    let out = cf.run(&["dlq", "list", "-o", "table"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("simulated: the worker could not parse it"),
        "{out}"
    );
    assert!(out.stdout.contains("1 message(s)"), "{out}");

    // Redrive: back on the intake queue, a worker makes it a job, the job succeeds.
    let mut worker = cf.worker(&emulator_url());
    let out = cf
        .run(&["dlq", "redrive", "--queue", "intake", "-o", "table"])
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "moved 1 message(s) from {}-dlq to {}",
            cf.env.intake.name(),
            cf.env.intake.name()
        )),
        "{out}"
    );
    let id = JobId::from_key(export_certificate::NAME, &request_id);
    let out = cf
        .run(&[
            "jobs",
            "watch",
            id.as_str(),
            "--timeout",
            "90s",
            "-o",
            "table",
        ])
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("SUCCEEDED"), "{out}");

    // A stale task in the task DLQ goes back too, and is acknowledged as stale.
    sqs.send_message()
        .queue_url(
            sqs.get_queue_url()
                .queue_name(format!("{}-dlq", cf.tasks))
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap(),
        )
        .message_body(format!(r#"{{"JobId":"{id}","Version":1}}"#))
        .send()
        .await
        .unwrap();
    let out = cf.run(&["dlq", "redrive", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let moved = out.json();
    assert_eq!(moved[0]["Queue"], "intake");
    assert_eq!(moved[0]["Moved"], 0);
    assert_eq!(moved[1]["Queue"], "tasks");
    assert_eq!(moved[1]["Moved"], 1);

    let out = cf.run(&["dlq", "list", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json(), json!([]), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cf.record(id.as_str()).await.status, JobStatus::Succeeded);
    stop(&mut worker).await;
}

// ---------------------------------------------------------------------------------------
// Errors say what to do
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_missing_resource_and_the_fix() {
    let cf = Cf::new().await;
    let mut cmd = cf.command(&emulator_url(), &["jobs", "list"]);
    cmd.env("CERTFLOW_JOBS_TABLE", "no-such-table-for-cli");
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("table no-such-table-for-cli not found in us-east-1")
            && stderr.contains("run `certflow bootstrap` or check CERTFLOW_JOBS_TABLE"),
        "{stderr}"
    );
    let mut cmd = cf.command(&emulator_url(), &["dlq", "list", "--queue", "tasks"]);
    cmd.env("CERTFLOW_TASKS_QUEUE", "no-such-queue-for-cli");
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("queue no-such-queue-for-cli-dlq not found in us-east-1")
            && stderr.contains("check CERTFLOW_TASKS_QUEUE"),
        "{stderr}"
    );
    // A wrong command line is exit 2.
    let out = cf.run(&["jobs", "list", "--status", "DONE"]).await;
    assert_eq!(out.code, 2, "{out}");
    let out = cf.run(&["jobs", "show", "no-such-job"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("job no-such-job not found"), "{out}");
}

// ---------------------------------------------------------------------------------------
// 5. Snapshots of the operator interface
// ---------------------------------------------------------------------------------------

/// Compares `actual` with `tests/snapshots/cli/<name>`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots/cli")
        .join(name);
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1 to create it, and review it",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  - {e}\n  + {a}", i + 1))
            .collect();
        panic!(
            "{} changed ({} → {} lines); if the change is deliberate, run with UPDATE_SNAPSHOTS=1 and review the diff\n{}\n--- actual\n{actual}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// `certflow ARGS` with nothing in the environment (so help shows no local settings).
async fn bare(args: &[&str]) -> Out {
    let out = tokio::process::Command::new(certflow_bin())
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("run certflow");
    out.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_snapshots() {
    for (args, name) in [
        (vec!["--help"], "help.txt"),
        (vec!["jobs", "list", "--help"], "jobs-list-help.txt"),
        (vec!["jobs", "--help"], "jobs-help.txt"),
        (vec!["console", "--help"], "console-help.txt"),
    ] {
        let out = bare(&args).await;
        assert_eq!(out.code, 0, "{out}");
        snapshot(name, &out.stdout);
    }
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[allow(clippy::too_many_arguments)]
fn event(
    seq: u32,
    at: i64,
    kind: EventKind,
    step: &str,
    attempt: u32,
    took: Option<u64>,
    to: (&str, JobStatus),
    error: Option<&str>,
    note: Option<&str>,
) -> HistoryEvent {
    HistoryEvent {
        seq,
        at: T0 + at,
        kind,
        step: step.into(),
        attempt,
        duration_ms: took,
        to_step: to.0.into(),
        to_status: to.1,
        error: error.map(str::to_string),
        note: note.map(str::to_string),
        worker: if kind == EventKind::Created {
            "operator".into()
        } else {
            "worker-7-a1b2c3#1".into()
        },
    }
}

fn record(id: &str, workflow: &str, status: JobStatus, step: &str, data: Value) -> JobRecord {
    JobRecord {
        job_id: JobId::new(id),
        workflow: workflow.into(),
        status,
        step: step.into(),
        attempt: 1,
        version: 1,
        data,
        labels: Default::default(),
        created_at: T0,
        updated_at: T0,
        next_wake_at: T0,
        deadline_at: T0 + 3_600_000,
        lease_owner: None,
        lease_until: None,
        driven_by: None,
        last_error: None,
        cancel_requested: false,
        history_count: 1,
        expires_at: None,
        trace_parent: None,
        request_digest: None,
    }
}

/// Writes a job with exactly this final record and history, as the engine would have.
async fn write_job(env: &Env, rec: &JobRecord, history: &[HistoryEvent]) {
    let store = env.jobs.store();
    let mut first = rec.clone();
    first.version = 1;
    first.history_count = 1;
    assert!(store.create(&first, &history[0]).await.unwrap().is_none());
    for (i, e) in history.iter().enumerate().skip(1) {
        let mut r = rec.clone();
        r.version = i as u64 + 1;
        r.history_count = i as u32 + 1;
        store
            .commit_unleased(i as u64, T0 + 10_000_000, &r, e)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_show_snapshots() {
    let cf = Cf::new().await;
    let arn = "arn:aws:acm:us-east-1:111122223333:certificate/0f5d2c1e-8a7b-4c3d-9e2f-1a2b3c4d5e6f";
    use JobStatus::{Failed, Pending, Running, Succeeded, Waiting};

    // Records from before staged rollouts (results in the record) still show: an export
    // job that failed on one of its two servers.
    let export_id = "6f1c2d3e-4a5b-5c6d-8e7f-0a1b2c3d4e5f";
    let mut rec = record(
        export_id,
        export_certificate::NAME,
        Failed,
        "wait",
        json!({
            "request": {"CertificateArn": arn, "CertName": "web", "TargetTagKey": "Environment", "TargetTagValue": "Production"},
            "serial": "0a:1b:2c:3d",
            "not_after": "2027-01-01T00:00:00.000Z",
            "key_algorithm": "RSA_2048",
            "check_polls": 1,
            "passphrase_secret": "certflow/web/passphrase",
            "bundle_secret": "certflow/web/bundle",
            "command_id": "5e8a0c3b-2f1d-4e6a-9b7c-1d2e3f4a5b6c",
            "command_sent_at": T0 + 9_000,
            "wait_polls": 2,
            "target_count": 2,
            "instances": {
                "i-0aaa1111bbbb2222c": {"status": "Success", "detail": "Success", "serial": "0a1b2c3d"},
                "i-0ddd3333eeee4444f": {"status": "Failed", "detail": "key does not match certificate"}
            }
        }),
    );
    rec.labels = [
        ("CertificateArn", arn),
        ("CertName", "web"),
        ("Target", "Environment=Production"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    rec.attempt = 2;
    rec.updated_at = T0 + 14_200;
    rec.last_error = Some(
        "install failed on 1 of 2 instances: i-0ddd3333eeee4444f Failed (key does not match certificate)".into(),
    );
    let history = vec![
        event(1, 0, EventKind::Created, "check", 0, None, ("check", Pending), None, None),
        event(2, 120, EventKind::Polled, "check", 1, Some(40), ("check", Waiting), None, Some("certificate pending validation")),
        event(3, 3_150, EventKind::StepCompleted, "check", 1, Some(35), ("export", Running), None, None),
        event(4, 3_900, EventKind::StepCompleted, "export", 1, Some(740), ("inventory", Running), None, Some("bundle stored in certflow/web/bundle")),
        event(5, 3_960, EventKind::StepCompleted, "inventory", 1, Some(55), ("install", Running), None, None),
        event(6, 4_010, EventKind::RetryScheduled, "install", 1, Some(48), ("install", Waiting), Some("SendCommand: ThrottlingException: Rate exceeded"), None),
        event(7, 6_100, EventKind::StepCompleted, "install", 2, Some(60), ("wait", Waiting), None, Some("sent command 5e8a0c3b-2f1d-4e6a-9b7c-1d2e3f4a5b6c to tag Environment=Production")),
        event(8, 8_200, EventKind::Polled, "wait", 1, Some(90), ("wait", Waiting), None, None),
        event(9, 14_200, EventKind::Failed, "wait", 2, Some(85), ("wait", Failed), Some("install failed on 1 of 2 instances: i-0ddd3333eeee4444f Failed (key does not match certificate)"), None),
    ];
    write_job(&cf.env, &rec, &history).await;

    // A renewal from before children were entries, with two children, one of which
    // failed.
    let child_ok = "1a2b3c4d-0000-5000-8000-000000000001";
    let child_bad = "1a2b3c4d-0000-5000-8000-000000000002";
    let mut ok = record(
        child_ok,
        export_certificate::NAME,
        Succeeded,
        "wait",
        json!({}),
    );
    ok.updated_at = T0 + 70_000;
    write_job(
        &cf.env,
        &ok,
        &[event(
            1,
            0,
            EventKind::Created,
            "check",
            0,
            None,
            ("check", Pending),
            None,
            None,
        )],
    )
    .await;
    let mut bad = record(
        child_bad,
        export_certificate::NAME,
        Failed,
        "install",
        json!({}),
    );
    bad.last_error = Some("no managed instance matches tag Environment=Staging".into());
    write_job(
        &cf.env,
        &bad,
        &[event(
            1,
            0,
            EventKind::Created,
            "check",
            0,
            None,
            ("check", Pending),
            None,
            None,
        )],
    )
    .await;
    let renew_id = "9d8c7b6a-5f4e-5d3c-8b2a-1f0e9d8c7b6a";
    let mut renew = record(
        renew_id,
        workflows::renew_certificate::NAME,
        Succeeded,
        "collect",
        json!({
            "certificate_arn": arn,
            "event_id": "c0ffee00-1111-2222-3333-444455556666",
            "children": [
                {"job_id": child_ok, "target": "Environment=Production", "cert_name": "web", "status": "SUCCEEDED"},
                {"job_id": child_bad, "target": "Environment=Staging", "cert_name": "web"}
            ],
            "polls": 3
        }),
    );
    renew.labels = [("CertificateArn".to_string(), arn.to_string())].into();
    renew.attempt = 4;
    renew.updated_at = T0 + 95_000;
    let renew_history = vec![
        event(1, 0, EventKind::Created, "fan-out", 0, None, ("fan-out", Pending), None, None),
        event(2, 200, EventKind::StepCompleted, "fan-out", 1, Some(150), ("collect", Waiting), None, Some("started 2 export job(s)")),
        event(3, 95_000, EventKind::Succeeded, "collect", 4, Some(30), ("collect", Succeeded), None, Some("1 of 2 export job(s) succeeded; failed: Environment=Staging FAILED (1a2b3c4d-0000-5000-8000-000000000002)")),
    ];
    write_job(&cf.env, &renew, &renew_history).await;

    for (id, name) in [
        (export_id, "jobs-show-export.txt"),
        (renew_id, "jobs-show-renewal.txt"),
    ] {
        let out = cf.run(&["jobs", "show", id, "-o", "table"]).await;
        assert_eq!(out.code, 0, "{out}");
        snapshot(name, &out.stdout);
    }
    // The same job as JSON has the install results and the children's current status.
    let show = cf
        .run(&["jobs", "show", renew_id, "-o", "json"])
        .await
        .json();
    let children = show["Children"].as_array().unwrap();
    assert_eq!(children[1]["Status"], "FAILED");
    assert_eq!(
        children[1]["LastError"],
        "no managed instance matches tag Environment=Staging"
    );
    let show = cf
        .run(&["jobs", "show", export_id, "-o", "json"])
        .await
        .json();
    assert_eq!(show["Instances"][1]["InstanceId"], "i-0ddd3333eeee4444f");
    assert_eq!(show["Instances"][1]["Status"], "Failed");
}

/// An export job of the staged rollout: the record keeps counts (`rollout`), each server
/// is an entry beside it. `jobs show` prints the rollout and a page of servers, failed
/// first; JSON has `Rollout`, `Servers` and `ServersNext`, and `--servers`, `--limit`,
/// `--after` choose the page. (The snapshots above are of records from before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_show_a_staged_rollout() {
    use export_certificate::{InstanceStatus, ServerResult};
    let cf = Cf::new().await;
    let arn = "arn:aws:acm:us-east-1:111122223333:certificate/0f5d2c1e-8a7b-4c3d-9e2f-1a2b3c4d5e6f";
    use JobStatus::{Failed, Pending, Running, Waiting};
    let id = "7a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d";
    let (canary, ok, bad, later1, later2) = (
        "i-0aaa1111bbbb2222c",
        "i-0bbb2222cccc3333d",
        "i-0ccc3333dddd4444e",
        "i-0ddd4444eeee5555f",
        "i-0eee5555ffff66660",
    );
    let (c0, c1) = (
        "5e8a0c3b-2f1d-4e6a-9b7c-1d2e3f4a5b6c",
        "6f9b1d4c-3a2e-4f7b-8c8d-2e3f4a5b6c7d",
    );
    let error = format!(
        "rollout stopped at batch 1 of 2: 1 server(s) failed, MaxErrors 0: {bad} Failed (certflow-install: error: key does not match certificate); 2 server(s) not reached keep their certificate"
    );
    let mut rec = record(
        id,
        export_certificate::NAME,
        Failed,
        "wait",
        json!({
            "request": {"CertificateArn": arn, "CertName": "web", "TargetTagKey": "Environment", "TargetTagValue": "Production"},
            "serial": "0a:1b:2c:3d",
            "not_after": "2027-01-01T00:00:00.000Z",
            "key_algorithm": "RSA_2048",
            "check_polls": 0,
            "secret": "certflow/web/Environment=Production",
            "wait_polls": 0,
            "rollout": {
                "Servers": 5, "Offline": 0, "Canary": 1, "BatchSize": 2, "MaxErrors": 0,
                "Batches": 3, "Batch": 1, "BatchServers": 2, "Succeeded": 2, "Failed": 1,
                "Verified": 0, "Sweeps": 0,
                "FirstFailures": [format!("{bad} Failed (certflow-install: error: key does not match certificate)")]
            }
        }),
    );
    rec.labels = [
        ("CertificateArn", arn),
        ("CertName", "web"),
        ("Target", "Environment=Production"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    rec.updated_at = T0 + 12_000;
    rec.last_error = Some(error.clone());
    let sent = |batch: u32, cmd: &str, servers: &[&str]| {
        format!(
            "sent command {cmd} to {}: {} server(s), {} (document hash 38005ccfcfad)",
            match batch {
                0 => "canary batch (1 of 5 servers)".to_string(),
                b => format!("batch {b} of 2"),
            },
            servers.len(),
            servers.join(", ")
        )
    };
    let history = vec![
        event(
            1,
            0,
            EventKind::Created,
            "check",
            0,
            None,
            ("check", Pending),
            None,
            None,
        ),
        event(
            2,
            40,
            EventKind::StepCompleted,
            "check",
            1,
            Some(35),
            ("export", Running),
            None,
            None,
        ),
        event(
            3,
            800,
            EventKind::StepCompleted,
            "export",
            1,
            Some(740),
            ("inventory", Running),
            None,
            Some("bundle stored in certflow/web/Environment=Production"),
        ),
        event(
            4,
            860,
            EventKind::StepCompleted,
            "inventory",
            1,
            Some(55),
            ("install", Running),
            None,
            None,
        ),
        event(
            5,
            920,
            EventKind::StepCompleted,
            "install",
            1,
            Some(60),
            ("wait", Waiting),
            None,
            Some(&sent(0, c0, &[canary])),
        ),
        event(
            6,
            3_000,
            EventKind::StepCompleted,
            "wait",
            1,
            Some(40),
            ("install", Running),
            None,
            Some("canary batch (1 of 5 servers) done: 1 of 5 server(s) installed so far"),
        ),
        event(
            7,
            3_060,
            EventKind::StepCompleted,
            "install",
            1,
            Some(50),
            ("wait", Waiting),
            None,
            Some(&sent(1, c1, &[ok, bad])),
        ),
        event(
            8,
            12_000,
            EventKind::Failed,
            "wait",
            1,
            Some(45),
            ("wait", Failed),
            Some(&error),
            None,
        ),
    ];
    write_job(&cf.env, &rec, &history).await;
    let result = |batch: u32,
                  status: Option<InstanceStatus>,
                  detail: Option<&str>,
                  serial: Option<&str>,
                  cmd: Option<&str>| ServerResult {
        batch,
        status,
        detail: detail.map(str::to_string),
        serial: serial.map(str::to_string),
        served_serial: None,
        command_id: cmd.map(str::to_string),
        ping: Some("Online".into()),
        plan: None,
    };
    let entries = vec![
        result(
            0,
            Some(InstanceStatus::Success),
            Some("Success"),
            Some("0A1B2C3D"),
            Some(c0),
        )
        .entry(canary),
        result(
            1,
            Some(InstanceStatus::Success),
            Some("Success"),
            Some("0A1B2C3D"),
            Some(c1),
        )
        .entry(ok),
        result(
            1,
            Some(InstanceStatus::Failed),
            Some("certflow-install: error: key does not match certificate"),
            None,
            Some(c1),
        )
        .entry(bad),
        result(2, None, None, None, None).entry(later1),
        result(2, None, None, None, None).entry(later2),
    ];
    cf.env
        .jobs
        .store()
        .put_entries(
            &JobId::new(id),
            export_certificate::rollout::SERVERS,
            &entries,
            rec.deadline_at,
        )
        .await
        .unwrap();

    let out = cf.run(&["jobs", "show", id, "-o", "table"]).await;
    assert_eq!(out.code, 0, "{out}");
    snapshot("jobs-show-rollout.txt", &out.stdout);

    // JSON: the counts, and the servers failed first, then in id order.
    let show = cf.run(&["jobs", "show", id, "-o", "json"]).await.json();
    assert_eq!(show["Rollout"]["Failed"], 1, "{show}");
    assert_eq!(show["Rollout"]["Succeeded"], 2, "{show}");
    let ids = |show: &Value| -> Vec<String> {
        show["Servers"]
            .as_array()
            .unwrap_or_else(|| panic!("no Servers in {show}"))
            .iter()
            .map(|s| s["InstanceId"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(ids(&show), [bad, canary, ok, later1, later2], "{show}");
    assert_eq!(show["Servers"][0]["Status"], "Failed", "{show}");
    assert_eq!(show["Servers"][0]["Group"], "failed", "{show}");
    assert_eq!(show["Servers"][3]["Group"], "pending", "{show}");
    assert_eq!(show["ServersNext"], Value::Null, "{show}");
    // Only the failed ones; only the ones never reached.
    let only = |which: &'static str| {
        let cf = &cf;
        async move {
            cf.run(&["jobs", "show", id, "--servers", which, "-o", "json"])
                .await
                .json()
        }
    };
    assert_eq!(ids(&only("failed").await), [bad]);
    assert_eq!(ids(&only("pending").await), [later1, later2]);
    assert_eq!(ids(&only("ok").await), [canary, ok]);
    // A page of two, then the rest after its cursor.
    let first = cf
        .run(&[
            "jobs",
            "show",
            id,
            "--servers",
            "all",
            "--limit",
            "2",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(ids(&first), [canary, ok], "{first}");
    let next = first["ServersNext"]
        .as_str()
        .unwrap_or_else(|| panic!("no ServersNext in {first}"))
        .to_string();
    let rest = cf
        .run(&[
            "jobs",
            "show",
            id,
            "--servers",
            "all",
            "--limit",
            "2",
            "--after",
            &next,
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(ids(&rest), [bad, later1], "{rest}");
}
