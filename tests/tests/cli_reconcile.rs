//! `certflow reconcile` and the drift columns of `certflow inventory`, end to end: the
//! built binary, run as an operator runs it, against a certflow on the emulator (a worker
//! in this process runs the jobs the binary starts; SSM is the simulated fleet behind
//! the fault proxy).
//!
//! Drift is made as in `reconcile.rs`: a renewal is a row made to hold an older serial
//! than ACM's ([`Env::pretend_renewed`]; the emulator never renews), a new server is one
//! more instance carrying a target after its export.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use certflow_tests::certflow::Env;
use certflow_tests::command::{self, Out};
use certflow_tests::fleet::{Behaviour, Fleet};
use certflow_tests::unique;
use engine::{JobId, JobStatus};
use serde_json::Value;
use workflows::reconcile;

fn emulator_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (run deploy/local/test.sh)")
}

/// Runs `certflow ARGS` on `env`'s resources, with `vars` set besides.
async fn certflow(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Out {
    let mut cmd = env.certflow_command(&emulator_url());
    cmd.args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    command::run(cmd, Duration::from_secs(180)).await
}

fn payload(arn: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

/// A certificate exported as `name` to `n` servers tagged `Tier=<tag>`; returns (arn, tag,
/// servers).
async fn exported(env: &Env, name: &str, n: u32) -> (String, String, Vec<String>) {
    let tag = unique("clirec");
    let servers = env.instances(n, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let id = env.submit(&payload(&arn, name, "Tier", &tag)).await;
    let rec = env.wait(&id).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    (arn, tag, servers)
}

async fn acm_serial(env: &Env, arn: &str) -> String {
    reconcile::certificate(&aws_sdk_acm::Client::new(&env.sdk), arn)
        .await
        .unwrap()
        .serial
        .expect("ACM's serial")
}

/// Every job of `env`, in every status: id, status and version.
async fn all_jobs(env: &Env) -> Vec<(String, JobStatus, u64)> {
    let mut out = Vec::new();
    for status in JobStatus::ALL {
        let mut cursor = None;
        loop {
            let page = env.jobs.list(status, 100, cursor).await.unwrap();
            out.extend(
                page.jobs
                    .iter()
                    .map(|j| (j.job_id.to_string(), j.status, j.version)),
            );
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every item of the inventory table, read consistently, in key order.
async fn inventory_items(env: &Env) -> Vec<HashMap<String, AttributeValue>> {
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(&env.deps.config.inventory_table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    let key = |i: &HashMap<String, AttributeValue>| {
        let s = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
        (s(workflows::inventory::PK), s(workflows::inventory::SK))
    };
    items.sort_by_key(key);
    items
}

/// The element of `array` whose `CertName` is `name`.
fn by_name<'a>(array: &'a Value, name: &str) -> &'a Value {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .find(|r| r["CertName"] == name)
        .unwrap_or_else(|| panic!("no {name} in {array}"))
}

/// Two rows drifted: `shop` renewed in ACM and not exported, `web` with a server that
/// joined its target after the export. Returns (shop's arn and tag, web's arn and tag,
/// the server that joined).
struct Drift {
    shop_arn: String,
    shop_tag: String,
    web_arn: String,
    web_tag: String,
    joined: String,
}

async fn drift(env: &Env) -> Drift {
    let (shop_arn, shop_tag, _) = exported(env, "shop", 2).await;
    let (web_arn, web_tag, _) = exported(env, "web", 1).await;
    env.pretend_renewed(&shop_arn).await;
    let joined = env.instances(1, "Tier", &web_tag).remove(0);
    Drift {
        shop_arn,
        shop_tag,
        web_arn,
        web_tag,
        joined,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_each_rows_drift_action_and_why_and_changes_nothing() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let d = drift(&env).await;
    let serial = acm_serial(&env, &d.shop_arn).await;
    let jobs_before = all_jobs(&env).await;
    let rows_before = inventory_items(&env).await;
    let commands_before = Fleet::global().commands_of_document(&env.deps.config.document_name);

    let out = certflow(&env, &["reconcile", "--dry-run", "-o", "table"], &[])
        .await
        .ok();
    let text = &out.stdout;
    // The table: one line per row, with its action and the job a run would start.
    let line = |tag: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("Tier={tag} ")))
            .unwrap_or_else(|| panic!("no table row for {tag}:\n{out}"))
    };
    let shop = line(&d.shop_tag);
    assert!(
        shop.contains(" shop ") && shop.contains(" export ") && shop.contains(" new "),
        "{shop}"
    );
    let web = line(&d.web_tag);
    assert!(
        web.contains(" web ")
            && web.contains(" install ")
            && web.contains(&format!("1: {}", d.joined)),
        "{web}"
    );
    // The details: which row, which servers, the action and why, in full.
    for expected in [
        format!("Tier={} shop  {}\n", d.shop_tag, d.shop_arn),
        format!("  export: ACM's certificate is serial {serial}, the target was last sent serial 0: a renewal that was not exported\n"),
        // They run the exported serial: it is the export that is behind ACM.
        "  servers: 2 carry the target, 2 run the exported serial\n".to_string(),
        format!("Tier={} web  {}\n", d.web_tag, d.web_arn),
        format!("  install: 1 of 2 server(s) carrying Tier={} do not run serial", d.web_tag),
        format!("  servers: 2 carry the target, 1 run the exported serial; lagging: {}\n", d.joined),
        "not started yet; a run starts it\n".to_string(),
        "2 row(s): 0 in sync, 1 export(s), 1 install(s), 0 alert(s), 0 unfixed\n".to_string(),
        "Dry run: no job was started and nothing was written".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in\n{out}");
    }

    let out = certflow(&env, &["reconcile", "--dry-run", "-o", "json"], &[])
        .await
        .ok();
    let v = out.json();
    assert_eq!(v["DryRun"], true);
    assert_eq!(v["Unreadable"], Value::Array(Vec::new()));
    let summary = &v["Summary"];
    assert_eq!(
        (
            &summary["Rows"],
            &summary["InSync"],
            &summary["Exports"],
            &summary["Installs"],
            &summary["Alerts"],
            &summary["Unfixed"]
        ),
        (
            &2.into(),
            &0.into(),
            &1.into(),
            &1.into(),
            &0.into(),
            &0.into()
        ),
        "{v}"
    );
    let shop = by_name(&v["Rows"], "shop");
    assert_eq!(shop["Target"], format!("Tier={}", d.shop_tag));
    assert_eq!(shop["CertificateArn"], d.shop_arn.as_str());
    assert_eq!(shop["AcmSerial"], serial.as_str());
    assert_eq!(shop["ExportedSerial"], "0");
    assert_eq!(shop["Action"]["Kind"], "Export");
    assert_eq!(shop["Action"]["Serial"], serial.as_str());
    assert_eq!(shop["Group"], reconcile::FIXING);
    assert_eq!(shop["Job"]["Exists"], false);
    assert_eq!(shop["Job"]["Status"], Value::Null);
    assert!(
        shop["Why"]
            .as_str()
            .unwrap_or_default()
            .contains("a renewal that was not exported"),
        "{shop}"
    );
    let web = by_name(&v["Rows"], "web");
    assert_eq!(web["Action"]["Kind"], "Install");
    assert_eq!(web["Action"]["Servers"], serde_json::json!([d.joined]));
    assert_eq!(web["Lagging"], serde_json::json!([d.joined]));
    assert_eq!((&web["Servers"], &web["Current"]), (&2.into(), &1.into()));
    assert_eq!(web["Job"]["Exists"], false);
    let job_id = web["Job"]["Id"].as_str().unwrap_or_default().to_string();
    assert!(!job_id.is_empty(), "{web}");

    // Nothing was started, sent or written.
    assert_eq!(all_jobs(&env).await, jobs_before, "no job created or moved");
    assert!(
        env.jobs.get(&JobId::new(job_id)).await.is_err(),
        "the job it names does not exist"
    );
    assert_eq!(inventory_items(&env).await, rows_before, "no row written");
    assert_eq!(
        Fleet::global()
            .commands_of_document(&env.deps.config.document_name)
            .len(),
        commands_before.len(),
        "no command sent"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_fixes_the_drift_and_the_inventory_shows_what_lags() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let d = drift(&env).await;
    let serial = acm_serial(&env, &d.shop_arn).await;

    // Before: the renewal not exported is marked.
    let out = certflow(&env, &["inventory", "list", "-o", "json"], &[])
        .await
        .ok();
    let v = out.json();
    let shop = by_name(&v, "shop");
    assert_eq!(shop["AcmSerial"], serial.as_str());
    assert_eq!(shop["AcmStatus"], "ISSUED");
    assert_eq!(shop["Serial"], "0");
    assert_eq!(
        shop["CurrentServers"], 2,
        "its servers run the exported serial; the export is behind ACM"
    );
    for field in [
        "TagKeyValue",
        "CertExpiryDate",
        "DaysToExpiry",
        "LastStatus",
        "InstalledInstances",
        "LastJobId",
        "SecretName",
    ] {
        assert!(!shop[field].is_null(), "{field} kept: {shop}");
    }
    let out = certflow(&env, &["inventory", "list", "-o", "table"], &[])
        .await
        .ok();
    let shop_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("Tier={} ", d.shop_tag)))
        .unwrap_or_else(|| panic!("no row for shop:\n{out}"));
    assert!(shop_line.contains("* "), "{shop_line}");
    assert!(
        out.stdout.contains("\n* renewal not exported (1 row(s))"),
        "{out}"
    );

    // A run fixes both rows.
    let out = certflow(&env, &["reconcile", "--wait", "-o", "table"], &[])
        .await
        .ok();
    for expected in [
        "started: reconcile job ",
        " SUCCEEDED at step collect after ",
        "2 row(s): 0 in sync, 1 export(s), 1 install(s), 0 alert(s), 0 unfixed; 2 of 2 job(s) succeeded\n",
        "\nNot in sync when the run looked\n",
        &format!("Tier={} shop  {}\n  export: ", d.shop_tag, d.shop_arn),
        &format!("Tier={} web  {}\n  install: ", d.web_tag, d.web_arn),
        &format!("lagging: {}\n", d.joined),
        ": SUCCEEDED\n",
        "details: certflow jobs show ",
    ] {
        assert!(out.stdout.contains(expected), "{expected:?} not in\n{out}");
    }
    let out = certflow(&env, &["inventory", "list", "-o", "json"], &[])
        .await
        .ok();
    let v = out.json();
    for (name, servers) in [("shop", 2), ("web", 2)] {
        let r = by_name(&v, name);
        assert_eq!(r["LaggingServers"], 0, "{r}");
        assert_eq!(r["Servers"], servers, "{r}");
        assert_eq!(r["CurrentServers"], servers, "{r}");
        assert_eq!(r["AcmSerial"], r["Serial"], "{r}");
        assert!(r["TargetSeenDate"].is_string(), "{r}");
    }

    // A server joins whose install fails: a run (not followed) leaves it behind, and
    // both listings count it.
    let broken = env.instances(1, "Tier", &d.web_tag).remove(0);
    Fleet::global().set_behaviour(
        &broken,
        Behaviour::Fail {
            stderr: "certflow-install: error: disk full".into(),
        },
    );
    let out = certflow(&env, &["reconcile", "-o", "table"], &[])
        .await
        .ok();
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("started: reconcile job "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in\n{out}"))
        .to_string();
    assert!(
        out.stdout
            .contains(&format!("follow it: certflow jobs watch {id}")),
        "{out}"
    );
    let rec = env.wait(&JobId::new(id)).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let v = certflow(&env, &["inventory", "list", "-o", "json"], &[])
        .await
        .ok()
        .json();
    let web = by_name(&v, "web");
    assert_eq!(
        (
            &web["Servers"],
            &web["CurrentServers"],
            &web["LaggingServers"]
        ),
        (&3.into(), &2.into(), &1.into()),
        "{web}"
    );
    let out = certflow(&env, &["inventory", "list", "-o", "table"], &[])
        .await
        .ok();
    let web_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("Tier={} ", d.web_tag)))
        .unwrap_or_else(|| panic!("no row for web:\n{out}"));
    let cells: Vec<&str> = web_line.split_whitespace().collect();
    // TARGET, CERT NAME, DAYS, ACM SERIAL, EXPORTED, SERVERS, CURRENT, LAGGING, …
    assert_eq!(&cells[5..8], ["3", "2", "1"], "{web_line}");
    assert!(
        out.stdout
            .contains("\nLAGGING: 1 server(s) carried the target"),
        "{out}"
    );

    // The install that failed is not run again by the next run: the plan says so.
    let out = certflow(&env, &["reconcile", "--dry-run", "-o", "table"], &[])
        .await
        .ok();
    for expected in [
        &format!("lagging: {broken}\n") as &str,
        "FAILED: unfixed",
        "certflow does not run it again",
        "disk full",
        "retry it with `certflow jobs retry ",
        "2 row(s): 1 in sync, 0 export(s), 0 install(s), 0 alert(s), 1 unfixed\n",
    ] {
        assert!(out.stdout.contains(expected), "{expected:?} not in\n{out}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_without_its_table_says_what_to_do() {
    let env = Env::new().await;
    let out = certflow(
        &env,
        &["reconcile", "--dry-run"],
        &[("CERTFLOW_INVENTORY_TABLE", "no-such-inventory-for-cli")],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("table no-such-inventory-for-cli not found in us-east-1")
            && out.stderr.contains(
                "run `certflow bootstrap` or check CERTFLOW_INVENTORY_TABLE (--inventory-table)"
            ),
        "{out}"
    );
    let out = certflow(
        &env,
        &["reconcile", "--dry-run"],
        &[("CERTFLOW_JOBS_TABLE", "no-such-jobs-for-cli")],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("table no-such-jobs-for-cli not found")
            && out.stderr.contains("check CERTFLOW_JOBS_TABLE"),
        "{out}"
    );
    // A plan and a run at once is a wrong command line.
    let out = certflow(&env, &["reconcile", "--dry-run", "--wait"], &[]).await;
    assert_eq!(out.code, 2, "{out}");
}
