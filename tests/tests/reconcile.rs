//! Convergence on the emulator: a reconcile run compares the inventory with ACM and with
//! the servers carrying each target, and fixes what events missed (a renewal whose event
//! never came, a server that joined later); EC2's `running` event installs a new server
//! within the minute; a run with nothing to do starts nothing. The emulator never renews a
//! certificate, so a renewal is a row made to hold an older serial than ACM's
//! ([`Env::pretend_renewed`]); SSM is the simulated fleet behind the fault proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use certflow_tests::certflow::Env;
use certflow_tests::fleet::{Behaviour, Fleet};
use certflow_tests::unique;
use engine::{Groups, JobId, JobRecord, JobStatus};
use workflows::export_certificate::{self, Cause, ExportState};
use workflows::inventory::{self, InventoryRow};
use workflows::new_server::{self, NewServerState};
use workflows::reconcile::{self, ReconcileState, RowResult};
use workflows::renew_certificate::RenewState;

fn payload(arn: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

/// Runs one reconcile to its end.
async fn reconcile(env: &Env) -> (JobRecord, ReconcileState) {
    let new = reconcile::new_job("test", None).unwrap();
    let id = env.jobs.create(new).await.unwrap().record.job_id;
    let rec = env.wait(&id).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let st: ReconcileState = serde_json::from_value(rec.data.clone()).unwrap();
    (rec, st)
}

/// The reconcile's row results, by group.
async fn rows(env: &Env, id: &JobId) -> Vec<(String, RowResult)> {
    env.jobs
        .all_entries(id, reconcile::ROWS, &Groups::All)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.group.clone(), serde_json::from_value(e.data).unwrap()))
        .collect()
}

/// The inventory row of (`arn`, `name`) for target `key`=`value`.
async fn row(env: &Env, arn: &str, name: &str, key: &str, value: &str) -> InventoryRow {
    let out = aws_sdk_dynamodb::Client::new(&env.sdk)
        .get_item()
        .table_name(&env.deps.config.inventory_table)
        .set_key(Some(inventory::key(key, value, arn, name)))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    InventoryRow::from_item(out.item().expect("the inventory row")).unwrap()
}

/// How many install commands each server has received.
fn commands(ids: &[String]) -> BTreeMap<String, usize> {
    ids.iter()
        .map(|id| (id.clone(), Fleet::global().received(id).len()))
        .collect()
}

/// A certificate exported to `n` servers tagged `Tier=<tag>`; returns (arn, tag, servers).
async fn exported(env: &Env, name: &str, n: u32) -> (String, String, Vec<String>) {
    let tag = unique("rec");
    let servers = env.instances(n, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let id = env.submit(&payload(&arn, name, "Tier", &tag)).await;
    let rec = env.wait(&id).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    (arn, tag, servers)
}

async fn acm_serial(env: &Env, arn: &str) -> String {
    let c = reconcile::certificate(&aws_sdk_acm::Client::new(&env.sdk), arn)
        .await
        .unwrap();
    c.serial.expect("ACM's serial")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_whose_event_never_came_is_exported_and_installed_by_the_next_run() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let (arn, web, web_servers) = exported(&env, "shop", 2).await;
    // A second row of the same certificate: another target.
    let api = unique("rec");
    let api_servers = env.instances(2, "Tier", &api);
    env.allow(&arn, "Tier", &api).await;
    let id = env.submit(&payload(&arn, "shop", "Tier", &api)).await;
    assert_eq!(env.wait(&id).await.status, JobStatus::Succeeded);
    let all: Vec<String> = web_servers.iter().chain(&api_servers).cloned().collect();
    let serial = acm_serial(&env, &arn).await;
    let secret = env.secret_name("shop", "Tier", &web);
    let versions = env.secret_version_ids(&secret).await.len();
    let row_before = row(&env, &arn, "shop", "Tier", &web).await;
    assert_eq!(
        row_before
            .current_servers()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        web_servers,
        "the export recorded the servers that run its serial"
    );

    // ACM renewed; its event never reached certflow.
    env.pretend_renewed(&arn).await;
    let before = commands(&all);
    let (rec, st) = reconcile(&env).await;
    assert_eq!(
        (st.counts.rows, st.counts.exports, st.counts.installs),
        (2, 2, 0),
        "{st:?}"
    );
    assert_eq!((st.tally.started, st.tally.succeeded), (2, 2), "{st:?}");
    for (group, r) in rows(&env, &rec.job_id).await {
        assert_eq!(group, reconcile::FIXING, "{r:?}");
        assert_eq!(r.assessment.acm_serial.as_deref(), Some(serial.as_str()));
        assert_eq!(r.assessment.exported_serial.as_deref(), Some("0"));
        let job = env
            .jobs
            .get(&JobId::new(r.job_id.clone().unwrap()))
            .await
            .unwrap();
        let state: ExportState = serde_json::from_value(job.data).unwrap();
        assert_eq!(state.cause, Cause::Drift);
        assert_eq!(state.started_by.as_deref(), Some(rec.job_id.as_str()));
    }
    // Every server of both rows got the renewed certificate: one more command each.
    for (id, n) in commands(&all) {
        assert_eq!(n, before[&id] + 1, "{id}");
        assert!(Fleet::global().installed_serial(&id).is_some(), "{id}");
    }
    assert_eq!(env.secret_version_ids(&secret).await.len(), versions + 1);
    for tag in [&web, &api] {
        let r = row(&env, &arn, "shop", "Tier", tag).await;
        assert_eq!(r.serial.as_deref(), Some(serial.as_str()));
        assert_eq!(r.current_servers().len(), 2);
        assert_eq!(r.lagging(), Some(0));
    }

    // The renewal's event arrives late: it starts nothing new.
    let renewal = env.wait(&env.submit_renewal(&arn).await).await;
    assert_eq!(
        renewal.status,
        JobStatus::Succeeded,
        "{:?}",
        renewal.last_error
    );
    let rs: RenewState = serde_json::from_value(renewal.data).unwrap();
    assert_eq!(rs.tally.started, 0, "{rs:?}");
    assert_eq!(commands(&all), {
        let mut after = before.clone();
        after.values_mut().for_each(|n| *n += 1);
        after
    });
    assert_eq!(env.secret_version_ids(&secret).await.len(), versions + 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_event_and_a_reconcile_share_one_export_job() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let (arn, tag, servers) = exported(&env, "web", 1).await;
    env.pretend_renewed(&arn).await;
    // The event first, this time: the reconcile then finds the event's export job.
    let renewal = env.wait(&env.submit_renewal(&arn).await).await;
    assert_eq!(
        renewal.status,
        JobStatus::Succeeded,
        "{:?}",
        renewal.last_error
    );
    let r = row(&env, &arn, "web", "Tier", &tag).await;
    let child = export_certificate::sync_job(&r, &acm_serial(&env, &arn).await, Cause::Drift, "x")
        .unwrap()
        .id;
    assert_eq!(
        env.jobs.get(&child).await.unwrap().status,
        JobStatus::Succeeded,
        "the renewal's child has the id a reconcile would give it"
    );
    let before = commands(&servers);
    let (_, st) = reconcile(&env).await;
    assert_eq!(
        (st.counts.exports, st.counts.in_sync, st.tally.started),
        (0, 1, 0),
        "{st:?}"
    );
    assert_eq!(commands(&servers), before);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_gets_the_certificate_from_its_running_event_and_nothing_else_moves() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let (arn, tag, servers) = exported(&env, "web", 2).await;
    let secret = env.secret_name("web", "Tier", &tag);
    let versions = env.secret_version_ids(&secret).await;
    let before = commands(&servers);
    // An Auto Scaling replacement joins the target.
    let joined = env.instances(1, "Tier", &tag).remove(0);
    let event_id = unique("ec2");
    let envelope = serde_json::json!({
        "version": "0", "id": event_id, "detail-type": "EC2 Instance State-change Notification",
        "source": env.source, "account": "123456789012", "time": "2026-12-05T10:00:00Z",
        "region": "us-east-1", "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{joined}")],
        "detail": {"instance-id": joined, "state": "running"}
    });
    env.submit_event(&envelope.to_string()).await;
    let job_id = JobId::from_key(new_server::NAME, &format!("{joined}\u{1f}{event_id}"));
    let job = env.wait(&job_id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.last_error);
    let st: NewServerState = serde_json::from_value(job.data).unwrap();
    assert_eq!((st.tally.started, st.tally.succeeded), (1, 1), "{st:?}");
    // That server only: one command; no export, no new secret version.
    assert_eq!(Fleet::global().received(&joined).len(), 1);
    assert_eq!(
        commands(&servers),
        before,
        "the other servers were sent nothing"
    );
    assert_eq!(env.secret_version_ids(&secret).await, versions);
    let r = row(&env, &arn, "web", "Tier", &tag).await;
    assert!(r.current_servers().contains(&joined), "{r:?}");
    assert_eq!(r.current_servers().len(), 3);
    // The install job says what it did.
    let children = env
        .jobs
        .all_entries(&job_id, workflows::children::CHILDREN, &Groups::All)
        .await
        .unwrap();
    let install = env
        .jobs
        .get(&JobId::new(children[0].key.clone()))
        .await
        .unwrap();
    let state: ExportState = serde_json::from_value(install.data).unwrap();
    assert_eq!(state.cause, Cause::NewServer);
    assert_eq!(
        state.install_only.map(|i| i.servers),
        Some(vec![joined.clone()])
    );
    let history = env.jobs.history(&install.job_id).await.unwrap();
    let notes: Vec<String> = history.iter().filter_map(|e| e.note.clone()).collect();
    assert!(
        notes.iter().any(|n| n.contains("nothing exported")),
        "{notes:?}"
    );

    // Another server joins, and its event is lost: the next reconcile installs it, alone.
    let quiet = env.instances(1, "Tier", &tag).remove(0);
    let mut all = servers.clone();
    all.push(joined.clone());
    let before = commands(&all);
    let (rec, st) = reconcile(&env).await;
    assert_eq!((st.counts.installs, st.counts.exports), (1, 0), "{st:?}");
    assert_eq!(Fleet::global().received(&quiet).len(), 1);
    assert_eq!(commands(&all), before);
    assert_eq!(env.secret_version_ids(&secret).await, versions);
    let results = rows(&env, &rec.job_id).await;
    assert_eq!(results[0].1.assessment.lagging, vec![quiet.clone()]);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_nothing_changed_starts_no_job_and_sends_no_command() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let (arn, tag, mut servers) = exported(&env, "web", 2).await;
    // Drift for the first run: a server joined.
    servers.extend(env.instances(1, "Tier", &tag));
    let (_, first) = reconcile(&env).await;
    assert_eq!(
        (first.counts.installs, first.tally.started),
        (1, 1),
        "{first:?}"
    );
    let jobs_before = env
        .jobs
        .list(JobStatus::Succeeded, 200, None)
        .await
        .unwrap()
        .jobs
        .len();
    let sent = commands(&servers);
    let (rec, second) = reconcile(&env).await;
    assert_eq!(
        (
            second.counts.rows,
            second.counts.in_sync,
            second.counts.installs,
            second.counts.exports
        ),
        (1, 1, 0, 0),
        "{second:?}"
    );
    assert_eq!(second.tally.started, 0);
    assert_eq!(commands(&servers), sent, "no command");
    let jobs_after = env
        .jobs
        .list(JobStatus::Succeeded, 200, None)
        .await
        .unwrap()
        .jobs;
    assert_eq!(
        jobs_after.len(),
        jobs_before + 1,
        "only the reconcile itself: {:?}",
        jobs_after.iter().map(|j| &j.workflow).collect::<Vec<_>>()
    );
    let r = row(&env, &arn, "web", "Tier", &tag).await;
    assert_eq!((r.target_instances, r.lagging()), (Some(3), Some(0)));
    assert!(r.target_seen_date.is_some());
    let results = rows(&env, &rec.job_id).await;
    assert_eq!(results[0].0, reconcile::IN_SYNC);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fix_is_reported_not_repeated_and_offline_servers_wait() {
    let env = Env::new().await;
    let worker = env.worker("w1");
    let (_arn, tag, _servers) = exported(&env, "web", 1).await;
    let broken = env.instances(1, "Tier", &tag).remove(0);
    Fleet::global().set_behaviour(
        &broken,
        Behaviour::Fail {
            stderr: "certflow-install: error: disk full".into(),
        },
    );
    let asleep = env.instances(1, "Tier", &tag).remove(0);
    Fleet::global().set_behaviour(&asleep, Behaviour::Offline);
    let (rec, first) = reconcile(&env).await;
    assert_eq!(
        (first.counts.installs, first.tally.unsuccessful),
        (1, 1),
        "{first:?}"
    );
    let r = &rows(&env, &rec.job_id).await[0].1;
    assert_eq!(r.assessment.lagging, vec![broken.clone()]);
    assert_eq!(r.assessment.offline_lagging, vec![asleep.clone()]);
    assert_eq!(
        Fleet::global().received(&asleep).len(),
        0,
        "offline: not sent"
    );
    // The next run finds the same drift and the same failed job: it reports it, with the
    // command to retry it, and does not run it again.
    let sent = Fleet::global().received(&broken).len();
    let (rec, second) = reconcile(&env).await;
    assert_eq!(
        (second.counts.unfixed, second.tally.started),
        (1, 0),
        "{second:?}"
    );
    let (group, r) = rows(&env, &rec.job_id).await.remove(0);
    assert_eq!(group, reconcile::UNFIXED);
    let why = r.unfixed.unwrap_or_default();
    assert!(
        why.contains("disk full") && why.contains("certflow jobs retry"),
        "{why}"
    );
    assert!(second.first_problems[0].contains("disk full"), "{second:?}");
    assert_eq!(Fleet::global().received(&broken).len(), sent);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_gone_or_near_expiry_alert_and_start_nothing() {
    // A window wider than the emulator's certificates' validity: every one is "near expiry".
    let env = Env::with_config(None, |c| c.reconcile.rules.expiry_alert_days = 800).await;
    let worker = env.worker("w1");
    let (arn, _tag, servers) = exported(&env, "web", 1).await;
    let (gone, _, _) = exported(&env, "old", 1).await;
    aws_sdk_acm::Client::new(&env.sdk)
        .delete_certificate()
        .certificate_arn(&gone)
        .send()
        .await
        .unwrap();
    let before = commands(&servers);
    let (rec, st) = reconcile(&env).await;
    assert_eq!((st.counts.alerts, st.tally.started), (2, 0), "{st:?}");
    assert!(
        st.alerted.contains(&arn) && st.alerted.contains(&gone),
        "{st:?}"
    );
    for (group, r) in rows(&env, &rec.job_id).await {
        assert_eq!(group, reconcile::ALERT, "{r:?}");
        let alert = r.assessment.alert.unwrap_or_default();
        if r.assessment.certificate_arn == gone {
            assert!(alert.contains("no longer exists"), "{alert}");
        } else {
            assert!(
                alert.contains("day(s) and ACM is not renewing it"),
                "{alert}"
            );
        }
    }
    assert_eq!(commands(&servers), before);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_agent_never_comes_online_ends_its_job_with_that_reason() {
    let env = Env::with_config(None, |c| c.agent_timeout = Duration::from_secs(3)).await;
    let worker = env.worker("w1");
    let event_id = unique("ec2");
    let instance = "i-0badbadbadbadbad0";
    let envelope = serde_json::json!({
        "version": "0", "id": event_id, "detail-type": "EC2 Instance State-change Notification",
        "source": env.source, "detail": {"instance-id": instance, "state": "running"}
    });
    env.submit_event(&envelope.to_string()).await;
    let job = env
        .wait(&JobId::from_key(
            new_server::NAME,
            &format!("{instance}\u{1f}{event_id}"),
        ))
        .await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("did not come online within 3s")
            && error.contains("not registered with SSM"),
        "{error}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_inventory_is_read_page_by_page() {
    let env = Env::with_config(None, |c| c.reconcile.pace = Duration::from_millis(50)).await;
    let worker = env.worker("w1");
    let (arn, _tag, _servers) = exported(&env, "web", 1).await;
    let serial = acm_serial(&env, &arn).await;
    // 60 more rows of the same certificate, for targets no server carries: in sync.
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    for i in 0..60 {
        let r = InventoryRow {
            serial: Some(serial.clone()),
            ..InventoryRow::new("Tier", format!("empty-{i}"), &arn, "web")
        };
        ddb.put_item()
            .table_name(&env.deps.config.inventory_table)
            .set_item(Some(r.to_item()))
            .send()
            .await
            .unwrap();
    }
    let (rec, st) = reconcile(&env).await;
    assert_eq!(
        (st.counts.rows, st.counts.in_sync, st.pages),
        (61, 61, 3),
        "{st:?}"
    );
    assert_eq!(rows(&env, &rec.job_id).await.len(), 61);
    let pages = env
        .jobs
        .history(&rec.job_id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.starts_with("page ")))
        .count();
    assert_eq!(pages, 3);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_export_and_the_drift_it_leaves_reach_a_subscriber() {
    use certflow_tests::subscriber::Subscriber;
    use workflows::notify;

    let env = Env::new().await;
    let worker = env.worker("w1");
    let (arn, tag, servers) = exported(&env, "web", 1).await;
    // A subscriber as docs/events.md shows: a queue behind a rule on the default bus.
    let sub = Subscriber::certificate(
        &env.sdk,
        &[
            notify::JOB_FAILED,
            notify::RENEWAL_FAILED,
            notify::DRIFT_FOUND,
        ],
        &arn,
    )
    .await;
    // ACM renews; the renewal's export fails on the only server.
    Fleet::global().set_behaviour(
        &servers[0],
        Behaviour::Fail {
            stderr: "certflow-install: error: disk full".into(),
        },
    );
    env.pretend_renewed(&arn).await;
    env.wait(&env.submit_renewal(&arn).await).await;
    let got = sub.receive(2, Duration::from_secs(20)).await;
    let of = |t: &str| {
        got.iter()
            .find(|e| e["detail-type"] == t)
            .unwrap_or_else(|| panic!("no {t} among {got:?}"))
            .clone()
    };
    let renewal = of(notify::RENEWAL_FAILED);
    assert_eq!(renewal["source"], "certflow");
    assert_eq!(renewal["resources"][0], arn.as_str());
    let d = &renewal["detail"];
    let job = d["JobId"].as_str().unwrap().to_string();
    let rec = env.jobs.get(&JobId::new(job.clone())).await.unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert_eq!(d["CertificateArn"], arn.as_str());
    assert_eq!(d["Target"], format!("Tier={tag}").as_str());
    assert_eq!(d["CertName"], "web");
    assert!(d["Reason"].as_str().unwrap().contains("disk full"), "{d}");
    assert!(
        d["Consequence"]
            .as_str()
            .unwrap()
            .contains("will not renew it again"),
        "{d}"
    );
    assert_eq!(d["Retry"], format!("certflow jobs retry {job}").as_str());
    let failed = of(notify::JOB_FAILED);
    assert_eq!(failed["detail"]["JobId"], job.as_str());
    assert_eq!(failed["detail"]["Workflow"], export_certificate::NAME);

    // The next reconcile finds the server behind, tries it, and says so.
    let (rec, _) = reconcile(&env).await;
    let drift = sub.receive(1, Duration::from_secs(20)).await;
    let d = &drift
        .iter()
        .find(|e| e["detail-type"] == notify::DRIFT_FOUND)
        .unwrap_or_else(|| panic!("no drift event among {drift:?}"))["detail"];
    assert_eq!(d["ReconcileJobId"], rec.job_id.as_str());
    assert_eq!(d["Servers"][0], servers[0].as_str());
    assert_eq!(d["Action"], "install");
    sub.close().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_sends_its_summary() {
    use certflow_tests::subscriber::Subscriber;
    use workflows::notify;

    let env = Env::new().await;
    let worker = env.worker("w1");
    exported(&env, "web", 1).await;
    let key = unique("run");
    let new = reconcile::new_job("test", Some(&key)).unwrap();
    let sub = Subscriber::new(
        &env.sdk,
        serde_json::json!({
            "source": [notify::SOURCE],
            "detail-type": [notify::RECONCILE_SUMMARY],
            "detail": { "JobId": [new.id.as_str()] }
        }),
    )
    .await;
    env.jobs.create(new.clone()).await.unwrap();
    assert_eq!(env.wait(&new.id).await.status, JobStatus::Succeeded);
    let got = sub.receive(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let d = &got[0]["detail"];
    assert_eq!(
        (d["Rows"].as_u64(), d["InSync"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
    assert_eq!(d["Exports"], 0);
    sub.close().await;
    worker.stop().await;
}
