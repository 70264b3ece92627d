//! `certflow console` in headless Chromium, over the emulator with real jobs: a succeeded
//! export, a failed one (its last server fails, with markup in its error), a renewal with
//! children, a dead letter whose request holds a script, and a certificate near expiry.
//! What a person sees on each page is checked, every page's HTML is scanned for the
//! secret material the jobs stored, and screenshots are saved (`target/console-screenshots/`,
//! or `$CERTFLOW_SCREENSHOTS`). A job that changes while its page is open, and a job that
//! appears while the list is open, show without a reload.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use certflow_tests::browser::Browser;
use certflow_tests::certflow::Env;
use certflow_tests::fleet::Behaviour;
use certflow_tests::unique;
use engine::clock::rfc3339;
use engine::{Clock, JobStatus, SystemClock};
use workflows::inventory::InventoryRow;
use workflows::renew_certificate;

/// What the failing server prints: markup a page must show as text.
const MARKUP_ERROR: &str =
    "nginx: [emerg] cannot load certificate \"<img src=x onerror=document.title='pwned'>\"";
/// A request field holding a script: the job it makes fails at its check, naming the field.
const SCRIPT_NAME: &str = "<script>document.title='pwned'</script>";
/// A message that is not a request at all: refused at intake, into the DLQ.
const SCRIPT_BODY: &str = "<script>document.title='pwned'</script> is not JSON";
/// Time for a page that updates itself to show a change.
const LIVE: Duration = Duration::from_secs(60);

/// `certflow console --port 0` on this test's resources; killed when dropped.
struct Console {
    child: Child,
    url: String,
    /// Kept open: a console whose stdout is closed must still serve (it is not written
    /// to again, but a reader that goes away should not be what a test relies on).
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Console {
    fn start(env: &Env) -> Console {
        let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
        let mut child = env
            .certflow_command(&emulator)
            .args(["console", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start certflow console");
        let out = child.stdout.take().expect("the console's stdout");
        let mut stdout = BufReader::new(out);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the console's first line");
        let url = line
            .trim()
            .strip_prefix("certflow console: ")
            .unwrap_or_else(|| panic!("the console's first line names its URL, got {line:?}"))
            .trim_end_matches('/')
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Console {
            child,
            url,
            _stdout: stdout,
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(arn: &str, name: &str, tag: &str) -> String {
    format!(
        r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag}"}}"#
    )
}

/// Every secret string the jobs stored, and each long line of their PEM blocks.
fn needles(material: &[String]) -> Vec<String> {
    let mut out: Vec<String> = material
        .iter()
        .filter(|s| !s.contains("-----BEGIN"))
        .cloned()
        .collect();
    out.extend(
        material
            .iter()
            .flat_map(|s| s.lines())
            .filter(|l| l.len() >= 40)
            .map(str::to_string),
    );
    out
}

fn scan(page: &str, html: &str, needles: &[String]) {
    assert!(!html.contains("-----BEGIN"), "{page}: a PEM block");
    assert!(!html.contains("PRIVATE KEY"), "{page}: a key");
    for n in needles {
        assert!(
            !html.contains(n.as_str()),
            "{page}: secret material on the page"
        );
    }
}

/// No markup from the data ran: the title is the console's and the only script is its own.
async fn nothing_ran(b: &Browser, page: &str) {
    let title = b.eval("return document.title").await;
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.ends_with("· certflow console")),
        "{page}: title {title}"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('script').length")
            .await,
        1,
        "{page}: only the console's own script"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('img').length")
            .await,
        0,
        "{page}: no image element came from the data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_jobs_timelines_servers_certificates_and_dead_letters() {
    let env = Env::new().await;
    let arn = env.certificate(true).await;
    // A target whose three servers install, and one whose last server fails.
    let web = unique("web");
    env.instances(3, "Tier", &web);
    let api = unique("api");
    let api_servers = env.instances(4, "Tier", &api);
    let failing = api_servers.last().unwrap().clone();
    env.fleet().set_behaviour(
        &failing,
        Behaviour::Fail {
            stderr: MARKUP_ERROR.into(),
        },
    );
    env.allow(&arn, "Tier", &web).await;
    env.allow(&arn, "Tier", &api).await;
    let worker = env.worker("w1");
    let ok_id = env.submit(&request(&arn, "shop", &web)).await;
    let bad_id = env.submit(&request(&arn, "api", &api)).await;
    let ok = env.wait(&ok_id).await;
    assert_eq!(ok.status, JobStatus::Succeeded, "{:?}", ok.last_error);
    let bad = env.wait(&bad_id).await;
    assert_eq!(bad.status, JobStatus::Failed);

    // A renewal: ACM's event for the certificate, now at a new serial, starts one child
    // per inventory row (the api child fails again on the same server).
    env.pretend_renewed(&arn).await;
    let parent_id = env.submit_renewal(&arn).await;
    env.wait(&parent_id).await;

    // A request with a script for a name, and a message with a script for a body.
    let script_id = env.submit(&request(&arn, SCRIPT_NAME, &web)).await;
    assert_eq!(env.wait(&script_id).await.status, JobStatus::Failed);
    env.submit(SCRIPT_BODY).await;
    // A certificate near expiry, from before certflow exported it (ACM has no such one).
    let expiring_arn = format!(
        "arn:aws:acm:us-east-1:123456789012:certificate/{}",
        unique("expiring")
    );
    let mut row = InventoryRow::new("Tier", unique("legacy"), &expiring_arn, "legacy");
    row.cert_expiry_date = Some(rfc3339(SystemClock.now() + 5 * 86_400_000 + 3_600_000));
    aws_sdk_dynamodb::Client::new(&env.sdk)
        .put_item()
        .table_name(&env.deps.config.inventory_table)
        .set_item(Some(
            row.to_item()
                .into_iter()
                .collect::<std::collections::HashMap<String, AttributeValue>>(),
        ))
        .send()
        .await
        .unwrap();

    let material = needles(&env.secret_material(&ok.data).await);
    assert!(material.len() > 10, "the secret material to look for");
    let console = Console::start(&env);
    let b = Browser::start().await;
    let url = |path: &str| format!("{}{path}", console.url);

    // Jobs: every job, newest first; filters narrow it.
    b.goto(&url("/jobs")).await;
    let listed = b.texts("#jobs tbody tr td.job a").await;
    for id in [&ok_id, &bad_id, &parent_id] {
        assert!(listed.contains(&id.to_string()), "{id} listed: {listed:?}");
    }
    assert_eq!(
        b.text(&format!("tr[data-job=\"{bad_id}\"] .badge")).await,
        "FAILED"
    );
    scan("jobs", &b.source().await, &material);
    b.screenshot("jobs").await;
    b.goto(&url("/jobs?status=FAILED")).await;
    let failed = b.texts("#jobs tbody tr td.job a").await;
    assert!(
        failed.contains(&bad_id.to_string()) && !failed.contains(&ok_id.to_string()),
        "{failed:?}"
    );
    b.goto(&url(&format!("/jobs?workflow={}", renew_certificate::NAME)))
        .await;
    assert_eq!(
        b.texts("#jobs tbody tr td.job a").await,
        [parent_id.to_string()]
    );

    // The failed job: its error as text, its steps in order, the failed server first.
    b.goto(&url(&format!("/jobs/{bad_id}"))).await;
    assert_eq!(b.text("#status").await, "FAILED");
    let shown_error = b.text("#last-error").await;
    assert!(
        shown_error.contains("<img src=x onerror=document.title='pwned'>"),
        "the error's markup is shown as text: {shown_error:?}"
    );
    nothing_ran(&b, "failed job").await;
    let steps = b.texts("#timeline tr.step th.step-name").await;
    let history = env.jobs.history(&bad_id).await.unwrap();
    let mut ran: Vec<String> = Vec::new();
    for e in history.iter().filter(|e| e.duration_ms.is_some()) {
        if !ran.contains(&e.step) {
            ran.push(e.step.clone());
        }
    }
    assert_eq!(
        steps, ran,
        "one bar per step, in the order the job ran them"
    );
    assert_eq!(
        steps.first().map(String::as_str),
        Some("check"),
        "{steps:?}"
    );
    let servers = b.texts("#servers tbody tr td:first-child").await;
    assert_eq!(
        servers.first(),
        Some(&failing),
        "the failed server first: {servers:?}"
    );
    assert_eq!(
        b.text(&format!("tr[data-server=\"{failing}\"] .badge"))
            .await,
        "Failed"
    );
    assert!(
        b.text("ul.commands")
            .await
            .contains(&format!("certflow jobs retry {bad_id} --wait")),
        "the retry command to copy"
    );
    scan("failed job", &b.source().await, &material);
    b.screenshot("job-failed").await;

    // The succeeded job.
    b.goto(&url(&format!("/jobs/{ok_id}"))).await;
    assert_eq!(b.text("#status").await, "SUCCEEDED");
    assert_eq!(b.texts("#servers tbody tr").await.len(), 3);
    scan("succeeded job", &b.source().await, &material);
    b.screenshot("job-succeeded").await;

    // The renewal: its children, failures first.
    b.goto(&url(&format!("/jobs/{parent_id}"))).await;
    let kids = b.texts("#children tbody tr td:nth-child(4)").await;
    assert!(
        kids.contains(&"FAILED".to_string()),
        "the api row's child failed: {kids:?}"
    );
    assert_eq!(kids[0], "FAILED", "the failed child first: {kids:?}");
    scan("renewal", &b.source().await, &material);
    b.screenshot("job-renewal").await;

    // The request that held a script: shown as text, refused by name.
    b.goto(&url(&format!("/jobs/{script_id}"))).await;
    let facts = b.text("dl.facts").await;
    assert!(
        facts.contains(SCRIPT_NAME),
        "the request's field as text: {facts:?}"
    );
    assert!(b.text("#last-error").await.contains("CertName"));
    nothing_ran(&b, "job of a request with a script").await;
    scan(
        "job of a request with a script",
        &b.source().await,
        &material,
    );

    // Certificates: the one near expiry is marked.
    b.goto(&url("/certificates")).await;
    let row = format!("tr[data-certificate=\"{expiring_arn}\"]");
    assert_eq!(b.text(&format!("{row} td.days .badge")).await, "5");
    assert_eq!(
        b.attr(&format!("{row} td.days .badge"), "class")
            .await
            .as_deref(),
        Some("badge bad")
    );
    assert_eq!(b.text(&format!("{row} .urgency")).await, "expires soon");
    let ours = format!("tr[data-certificate=\"{arn}\"][data-target=\"Tier={web}\"]");
    assert!(b.exists(&ours).await, "the exported certificate's row");
    scan("certificates", &b.source().await, &material);
    b.screenshot("certificates").await;

    // Dead letters: the refused request, its script shown as text.
    b.goto(&url("/dead-letters")).await;
    let mut count = b.text("#count-intake").await;
    let until = tokio::time::Instant::now() + LIVE;
    while count == "0" && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.goto(&url("/dead-letters")).await;
        count = b.text("#count-intake").await;
    }
    assert_eq!(count, "1");
    let body = b.text("section[data-queue=\"intake\"] td.body").await;
    assert!(body.contains(SCRIPT_BODY), "the message as text: {body:?}");
    let reason = b.text("section[data-queue=\"intake\"] td.reason").await;
    assert!(
        reason.contains("body is not JSON"),
        "the reason: {reason:?}"
    );
    nothing_ran(&b, "dead letters").await;
    assert!(b
        .text("section[data-queue=\"intake\"]")
        .await
        .contains("certflow dlq redrive --queue intake"));
    scan("dead letters", &b.source().await, &material);
    b.screenshot("dead-letters").await;

    // Live: a job that starts and ends while its page is open, without a reload (a
    // reload would clear the marker the test leaves in the page).
    let slow = unique("slow");
    let slow_servers = env.instances(1, "Tier", &slow);
    env.fleet()
        .set_latency(&slow_servers[0], Duration::from_secs(6));
    env.allow(&arn, "Tier", &slow).await;
    b.goto(&url("/jobs")).await;
    b.eval("window.__marker = 'no reload'; return true").await;
    let slow_id = env.submit(&request(&arn, "slow", &slow)).await;
    b.wait_for_text("#jobs", slow_id.as_str(), LIVE).await;
    assert_eq!(b.eval("return window.__marker").await, "no reload");
    let mut rec = env.jobs.get(&slow_id).await;
    let until = tokio::time::Instant::now() + LIVE;
    while rec
        .as_ref()
        .map_or(true, |r| r.status == JobStatus::Pending)
        && tokio::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rec = env.jobs.get(&slow_id).await;
    }
    b.goto(&url(&format!("/jobs/{slow_id}"))).await;
    let before = b.text("#status").await;
    assert_ne!(before, "SUCCEEDED", "the page opened while the job ran");
    b.eval("window.__marker = 'no reload'; return true").await;
    b.wait_for_text("#status", "SUCCEEDED", LIVE).await;
    assert_eq!(b.eval("return window.__marker").await, "no reload");

    b.close().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_other_hosts_reach_is_refused_unless_asked_for_and_then_warned_about() {
    let env = Env::new().await;
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let out = env
        .certflow_command(&emulator)
        .args(["console", "--address", "0.0.0.0", "--port", "0"])
        .output()
        .expect("run certflow console");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve the console on 0.0.0.0:0, which is not a loopback address: the console has no login of its own"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-non-loopback"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing served");

    // Asked for: served, with the warning first.
    let mut child = env
        .certflow_command(&emulator)
        .args([
            "console",
            "--address",
            "0.0.0.0",
            "--port",
            "0",
            "--allow-non-loopback",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start certflow console");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("certflow console: http://0.0.0.0:"),
        "{line}"
    );
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("warning: serving the console on 0.0.0.0:0 (--allow-non-loopback)"),
        "{stderr}"
    );
}
