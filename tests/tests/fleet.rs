//! Fleets: staged rollouts over the simulated SSM fleet (answered by the fault proxy the
//! way AWS answers: `DescribeInstanceInformation` and `ListCommandInvocations` in pages),
//! with the jobs table, queues, ACM and Secrets Manager on the emulator.
//!
//! - 1,000 servers under one tag: the export SUCCEEDS with 1,000 results kept as entries,
//!   its record stays under 16 KB, and `certflow jobs show` pages them;
//! - a failing canary: no other server receives a command, the job FAILS naming it;
//! - a failing batch with `MaxErrors 0`: later batches never receive the command, and
//!   `jobs show --servers failed` lists the failed server first;
//! - failures within `MaxErrors` go on and still fail the job;
//! - a server that keeps serving the old certificate fails with both serials recorded;
//! - a server that joins the tag mid-rollout gets the install too;
//! - a renewal over 300 inventory rows keeps its parent's record under 16 KB.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use certflow_tests::certflow::Env;
use certflow_tests::fleet::Behaviour;
use certflow_tests::unique;
use engine::{JobId, JobRecord, JobStatus, WorkerConfig};
use workflows::export_certificate::{ExportState, InstanceStatus};
use workflows::renew_certificate::{self, RenewState};

/// The record-size bound the issue sets for any fleet size.
const RECORD_LIMIT: usize = 16 * 1024;

fn payload(arn: &str, name: &str, key: &str, value: &str, extra: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"{extra}}}"#
    )
}

/// Waits up to `secs` for job `id` to finish.
async fn wait_long(env: &Env, id: &JobId, secs: u64) -> JobRecord {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(rec) = env.jobs.get(id).await {
            if rec.status.is_terminal() {
                return rec;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "job {id} did not finish in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The size DynamoDB counts for job `id`'s record item: attribute names and values.
async fn record_size(env: &Env, id: &JobId) -> usize {
    fn value_size(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::Bool(_) => 1,
            AttributeValue::M(m) => m.iter().map(|(k, v)| k.len() + value_size(v)).sum(),
            AttributeValue::L(l) => l.iter().map(value_size).sum(),
            _ => 8,
        }
    }
    let item = aws_sdk_dynamodb::Client::new(&env.sdk)
        .get_item()
        .table_name(&env.table)
        .key("JobId", AttributeValue::S(id.to_string()))
        .key("Item", AttributeValue::S("JOB".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the job's record");
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn state(rec: &JobRecord) -> ExportState {
    serde_json::from_value(rec.data.clone()).unwrap()
}

/// `certflow jobs show` as JSON.
fn show_json(env: &Env, id: &JobId, args: &[&str]) -> serde_json::Value {
    let out = env
        .certflow_command(&env.endpoint)
        .args(["jobs", "show", id.as_str(), "-o", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jobs show {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_servers_under_one_tag_succeed_with_a_small_record_and_paged_results() {
    let env = Env::new().await;
    let tag = unique("fleet");
    let servers = env.instances(1000, "Fleet", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let id = env.submit(&payload(&arn, "big", "Fleet", &tag, "")).await;
    let rec = wait_long(&env, &id, 900).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);

    // Every server was sent exactly one command and its result is recorded.
    let results = env.servers(&id).await;
    assert_eq!(results.len(), 1000);
    for s in &servers {
        assert_eq!(env.fleet().received(s).len(), 1, "{s}");
        let r = &results[s];
        assert_eq!(r.status, Some(InstanceStatus::Success), "{s}");
        assert_eq!(r.serial, env.fleet().installed_serial(s), "{s}");
    }
    // Canary first, then batches of 50 (10% of 1,000 capped at one command's 50 ids).
    let canary = &results[&servers[0]];
    assert_eq!(canary.batch, 0);
    let first = env.fleet().received(&servers[0])[0].at;
    for s in &servers[1..] {
        assert!(
            env.fleet().received(s)[0].at >= first,
            "{s} before the canary"
        );
    }
    let r = state(&rec).rollout.expect("rollout");
    assert_eq!(
        (r.servers, r.succeeded, r.failed, r.canary),
        (1000, 1000, 0, 1)
    );
    assert_eq!((r.batch_size, r.batches), (50, 21));
    assert!(state(&rec).instances.is_empty(), "no result in the record");

    let size = record_size(&env, &id).await;
    println!("record of a 1,000-server job: {size} bytes");
    assert!(size < RECORD_LIMIT, "record is {size} bytes");

    // `jobs show` lists them in pages, each once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["--servers", "all", "--limit", "300"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let v = show_json(&env, &id, &args);
        pages += 1;
        let rows = v["Servers"].as_array().unwrap();
        assert!(rows.len() <= 300);
        seen.extend(
            rows.iter()
                .map(|r| r["InstanceId"].as_str().unwrap().to_string()),
        );
        assert_eq!(v["Rollout"]["Succeeded"], 1000);
        match v["ServersNext"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 4, "1,000 servers in pages of 300");
    let mut expected = servers.clone();
    expected.sort();
    assert_eq!(seen, expected, "each server once, in id order");
    let calls = env.fleet().calls("ListCommandInvocations");
    println!(
        "fleet calls: {:?}",
        env.fleet()
            .call_counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>()
    );
    assert!(calls >= 21, "at least one listing per batch, got {calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_rollout_before_any_other_server() {
    let env = Env::new().await;
    let tag = unique("canary");
    let servers = env.instances(12, "Fleet", &tag);
    env.fleet().set_behaviour(
        &servers[0],
        Behaviour::Fail {
            stderr: "certflow-install: error: reloading nginx failed (exit 1)".into(),
        },
    );
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let id = env
        .submit(&payload(&arn, "canary", "Fleet", &tag, ""))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    let err = rec.last_error.unwrap_or_default();
    assert!(
        err.contains("rollout stopped at canary batch (1 of 12 servers)")
            && err.contains("the canary must succeed")
            && err.contains(&servers[0])
            && err.contains("reloading nginx failed")
            && err.contains("11 server(s) not reached keep their certificate"),
        "{err}"
    );
    assert_eq!(env.fleet().received(&servers[0]).len(), 1);
    for s in &servers[1..] {
        assert!(env.fleet().received(s).is_empty(), "{s} received a command");
    }
    let results = env.servers(&id).await;
    assert_eq!(results[&servers[0]].status, Some(InstanceStatus::Failed));
    assert!(servers[1..].iter().all(|s| results[s].status.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_stops_the_rollout_and_later_batches_never_receive_it() {
    let env = Env::new().await;
    let tag = unique("batch");
    let servers = env.instances(10, "Fleet", &tag);
    // Canary 1, then batches of 3: [0] [1 2 3] [4 5 6] [7 8 9]. Server 5 fails.
    env.fleet().set_behaviour(
        &servers[5],
        Behaviour::Fail {
            stderr: "certflow-install: error: disk full".into(),
        },
    );
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let extra = r#", "MaxConcurrency": "3", "MaxErrors": "0""#;
    let id = env
        .submit(&payload(&arn, "batch", "Fleet", &tag, extra))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    let err = rec.last_error.unwrap_or_default();
    assert!(
        err.contains("rollout stopped at batch 2 of 3")
            && err.contains(&format!(
                "{} Failed (certflow-install: error: disk full)",
                servers[5]
            ))
            && err.contains("3 server(s) not reached"),
        "{err}"
    );
    for s in &servers[..7] {
        assert_eq!(env.fleet().received(s).len(), 1, "{s}");
    }
    for s in &servers[7..] {
        assert!(
            env.fleet().received(s).is_empty(),
            "{s} is in a later batch"
        );
    }
    // `jobs show --servers failed-first` puts the failed server first; `--servers failed`
    // shows only it.
    let v = show_json(&env, &id, &["--limit", "4"]);
    let rows = v["Servers"].as_array().unwrap();
    assert_eq!(rows[0]["InstanceId"], servers[5].as_str());
    assert_eq!(rows[0]["Group"], "failed");
    assert_eq!(rows.len(), 4);
    assert!(v["ServersNext"].as_str().is_some());
    let v = show_json(&env, &id, &["--servers", "failed"]);
    let rows = v["Servers"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Detail"], "certflow-install: error: disk full");
    let text = env
        .certflow_command(&env.endpoint)
        .args(["jobs", "show", id.as_str(), "-o", "table"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("not reached"), "{text}");
    assert!(
        text.contains("10 server(s): 6 installed, 1 failed, 3 not reached"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_within_max_errors_go_on_and_still_fail_the_job() {
    let env = Env::new().await;
    let tag = unique("tolerate");
    let servers = env.instances(6, "Fleet", &tag);
    env.fleet().set_behaviour(
        &servers[3],
        Behaviour::Fail {
            stderr: "certflow-install: error: bad disk".into(),
        },
    );
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let extra = r#", "Canary": 2, "MaxConcurrency": "2", "MaxErrors": "1""#;
    let id = env
        .submit(&payload(&arn, "tolerate", "Fleet", &tag, extra))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    let err = rec.last_error.unwrap_or_default();
    assert!(
        err.contains("installed on 5 of 6 server(s); 1 failed, within MaxErrors 1"),
        "{err}"
    );
    assert!(servers.iter().all(|s| env.fleet().received(s).len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_still_serving_the_old_certificate_fails_with_both_serials() {
    let env = Env::with_config(None, |c| {
        c.verify_port = Some(8443);
        c.verify_name = Some("www.example.com".into());
    })
    .await;
    let tag = unique("verify");
    let servers = env.instances(3, "Fleet", &tag);
    env.fleet().set_installed_serial(&servers[1], Some("0ABC"));
    env.fleet().set_behaviour(&servers[1], Behaviour::ServesOld);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let id = env
        .submit(&payload(
            &arn,
            "verify",
            "Fleet",
            &tag,
            r#", "Canary": 1, "MaxConcurrency": "2""#,
        ))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    let results = env.servers(&id).await;
    let good = &results[&servers[0]];
    assert_eq!(good.status, Some(InstanceStatus::Success));
    assert!(good.served_serial.is_some());
    assert_eq!(
        good.served_serial, good.serial,
        "the canary serves what it installed"
    );
    let bad = &results[&servers[1]];
    assert_eq!(bad.status, Some(InstanceStatus::Failed));
    assert_eq!(bad.served_serial.as_deref(), Some("0ABC"));
    let detail = bad.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("serves serial 0ABC, not the installed"),
        "{detail}"
    );
    assert_eq!(
        env.fleet().installed_serial(&servers[1]).as_deref(),
        Some("0ABC")
    );
    // The verification's parameters reached the servers.
    let p = &env.fleet().received(&servers[0])[0].parameters;
    assert_eq!(p["VerifyPort"], ["8443"]);
    assert_eq!(p["VerifyName"], ["www.example.com"]);
    // Server 2 shared the failing server's batch: it ran, and was verified too.
    assert_eq!(results[&servers[2]].status, Some(InstanceStatus::Success));
    let r = state(&rec).rollout.unwrap();
    assert_eq!((r.verified, r.failed), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_joins_the_tag_mid_rollout_is_installed_too() {
    let env = Env::new().await;
    let tag = unique("join");
    let servers = env.instances(4, "Fleet", &tag);
    // The canary takes a while, so the new server joins while the rollout runs.
    env.fleet().set_latency(&servers[0], Duration::from_secs(4));
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let id = env.submit(&payload(&arn, "join", "Fleet", &tag, "")).await;
    // Once the canary has its command, a server joins.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.fleet().received(&servers[0]).is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "the canary got no command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = env.instances(1, "Fleet", &tag);
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    assert_eq!(env.fleet().received(&joined[0]).len(), 1, "the late joiner");
    for s in &servers {
        assert_eq!(env.fleet().received(s).len(), 1, "{s}");
    }
    let results = env.servers(&id).await;
    assert_eq!(results.len(), 5);
    let history = env.jobs.history(&id).await.unwrap();
    assert!(
        history.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.contains("joined") && n.contains(&joined[0]))),
        "the history says who joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_over_300_inventory_rows_keeps_a_small_parent_record() {
    let env = Env::new().await;
    let arn = env.certificate(true).await;
    // Two real targets with servers, allowed; 298 rows whose targets the certificate does
    // not list (their exports fail at check, before any secret).
    let allowed: Vec<String> = (0..2).map(|i| unique(&format!("ok{i}"))).collect();
    for t in &allowed {
        env.instances(1, "Tier", t);
        env.allow(&arn, "Tier", t).await;
    }
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    let table = &env.deps.config.inventory_table;
    let rows: Vec<String> = allowed
        .iter()
        .cloned()
        .chain((0..298).map(|i| format!("gone-{i:03}")))
        .collect();
    for chunk in rows.chunks(25) {
        let writes: Vec<WriteRequest> = chunk
            .iter()
            .map(|value| {
                let mut item: HashMap<String, AttributeValue> =
                    workflows::inventory::key("Tier", value, &arn, "web");
                for (k, v) in [
                    ("CertificateArn", arn.as_str()),
                    ("CertName", "web"),
                    ("TargetTagKey", "Tier"),
                    ("TargetTagValue", value.as_str()),
                    ("Serial", "0"),
                ] {
                    item.insert(k.into(), AttributeValue::S(v.into()));
                }
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                    .build()
            })
            .collect();
        ddb.batch_write_item()
            .request_items(table, writes)
            .send()
            .await
            .unwrap();
    }
    // The emulator issues a certificate a few seconds after the request.
    let acm = aws_sdk_acm::Client::new(&env.sdk);
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = acm
            .describe_certificate()
            .certificate_arn(&arn)
            .send()
            .await
            .unwrap();
        let status = d
            .certificate()
            .and_then(|c| c.status())
            .map(|s| s.as_str().to_string());
        if status.as_deref() == Some("ISSUED") {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{arn} is {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let worker = env.worker_with(WorkerConfig {
        concurrency: 32,
        ..certflow_tests::Stack::worker_config("w1")
    });
    let parent_id = env.submit_renewal(&arn).await;
    let parent = wait_long(&env, &parent_id, 900).await;
    worker.stop().await;
    assert_eq!(
        parent.status,
        JobStatus::Succeeded,
        "{:?}",
        parent.last_error
    );
    let st: RenewState = serde_json::from_value(parent.data.clone()).unwrap();
    assert_eq!(
        (st.tally.started, st.tally.succeeded, st.tally.unsuccessful),
        (300, 2, 298)
    );
    assert!(
        st.children.is_empty(),
        "children are entries, not in the record"
    );
    assert_eq!(st.tally.first_failures.len(), 5);
    let children = env
        .jobs
        .all_entries(
            &parent_id,
            renew_certificate::CHILDREN,
            &engine::Groups::All,
        )
        .await
        .unwrap();
    assert_eq!(children.len(), 300);
    assert_eq!(
        children.iter().filter(|c| c.group == "succeeded").count(),
        2
    );
    let size = record_size(&env, &parent_id).await;
    println!("record of a renewal over 300 rows: {size} bytes");
    assert!(size < RECORD_LIMIT, "parent record is {size} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_servers_are_named_not_sent_and_shown() {
    let env = Env::new().await;
    let tag = unique("offline");
    let servers = env.instances(3, "Fleet", &tag);
    env.fleet().set_behaviour(&servers[1], Behaviour::Offline);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let id = env
        .submit(&payload(&arn, "offline", "Fleet", &tag, ""))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    assert!(env.fleet().received(&servers[1]).is_empty());
    let r = state(&rec).rollout.unwrap();
    assert_eq!((r.servers, r.offline, r.succeeded), (2, 1, 2));
    let last = env.jobs.history(&id).await.unwrap().pop().unwrap();
    let note = last.note.unwrap_or_default();
    assert!(
        note.contains("1 server(s) offline when planned were not sent the install"),
        "{note}"
    );
    let v = show_json(&env, &id, &["--servers", "offline"]);
    let rows = v["Servers"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["InstanceId"], servers[1].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_canary_stops_even_when_max_errors_tolerates_failures() {
    let env = Env::new().await;
    let tag = unique("canary-tol");
    let servers = env.instances(4, "Fleet", &tag);
    env.fleet().set_behaviour(
        &servers[0],
        Behaviour::Fail {
            stderr: "certflow-install: error: bad chain".into(),
        },
    );
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let extra = r#", "MaxErrors": "3""#;
    let id = env
        .submit(&payload(&arn, "canarytol", "Fleet", &tag, extra))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    let err = rec.last_error.unwrap_or_default();
    assert!(err.contains("the canary must succeed"), "{err}");
    for s in &servers[1..] {
        assert!(env.fleet().received(s).is_empty(), "{s} received a command");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_cause_is_fixed_resumes_the_rollout_where_it_stopped() {
    let env = Env::new().await;
    let tag = unique("resume");
    let servers = env.instances(5, "Fleet", &tag);
    // Canary 1, then batches of 2: [0] [1 2] [3 4]. Server 2 fails first.
    env.fleet().set_behaviour(
        &servers[2],
        Behaviour::Fail {
            stderr: "certflow-install: error: /etc/ssl is read-only".into(),
        },
    );
    let arn = env.certificate(true).await;
    env.allow(&arn, "Fleet", &tag).await;
    let worker = env.worker("w1");
    let extra = r#", "MaxConcurrency": "2""#;
    let id = env
        .submit(&payload(&arn, "resume", "Fleet", &tag, extra))
        .await;
    let rec = wait_long(&env, &id, 120).await;
    assert_eq!(rec.status, JobStatus::Failed);
    assert!(servers[3..]
        .iter()
        .all(|s| env.fleet().received(s).is_empty()));

    // The operator fixes the server and retries the job.
    env.fleet().set_behaviour(&servers[2], Behaviour::Succeed);
    env.jobs.retry(&id).await.unwrap();
    let rec = wait_long(&env, &id, 120).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    assert_eq!(env.fleet().received(&servers[2]).len(), 2, "sent again");
    for s in [&servers[0], &servers[1], &servers[3], &servers[4]] {
        assert_eq!(env.fleet().received(s).len(), 1, "{s} once");
    }
    let r = state(&rec).rollout.unwrap();
    assert_eq!((r.servers, r.succeeded, r.failed), (5, 5, 0));
    let results = env.servers(&id).await;
    assert!(results
        .values()
        .all(|r| r.status == Some(InstanceStatus::Success)));
    let history = env.jobs.history(&id).await.unwrap();
    assert!(history
        .iter()
        .any(|e| e.note.as_deref().is_some_and(|n| n.contains(
            "the rollout resumes at batch 1 of 2, sending the install again to 1 failed server(s)"
        ))));
}
