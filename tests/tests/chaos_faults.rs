//! certflow through the fault-injecting proxy (issue 7, "Must show" 1 and 4).
//!
//! - 100 export jobs (several groups of tagged servers, the reference payload on the intake
//!   queue) all SUCCEED while every AWS call of the workers — DynamoDB, SQS, ACM, Secrets
//!   Manager, SSM — is throttled 10 % of the time, answered 5xx 2 % and reset after
//!   forwarding 1 % (seeded), and a few SendCommand and CreateSecret calls are reset for
//!   certain. The duplicate side effects the resets cause (a second SSM command for one
//!   job, a second secret version) are counted, printed, and bounded by the resets
//!   injected on the operation that makes them; every job's record and inventory row is
//!   checked.
//! - SSM per-instance results rewritten by the proxy: failed and timed-out servers of a
//!   batch stop the rollout there, naming each server and its status, and later batches
//!   are never sent; a server still InProgress at the install deadline makes the job
//!   cancel its batch's command and fail; the serial each server reports is recorded in
//!   its entry.
//!
//! Run with the emulator: `deploy/local/emulator.sh start && source .local/emulator.env`,
//! then `cargo test -p certflow-tests --test chaos_faults -- --nocapture`.
//! `CHAOS_SEED` changes the fault schedule (the default is fixed); `CHAOS_FAULT_JOBS`
//! the number of jobs (default 100).

mod chaos_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use certflow_tests::certflow::Env;
use certflow_tests::proxy::{Action, Call, FaultProxy, Rule, Trigger};
use certflow_tests::{unique, Stack};
use chaos_support::{
    commands_by_comment, duplicate_commands, issued_certificates, not_succeeded, payload,
    secret_versions, servers, state, tagged_instances, wait_all,
};
use engine::{EventKind, JobId, JobStatus, JobStore};
use workflows::export_certificate::{ExportConfig, InstanceStatus};

fn upstream() -> String {
    let url = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !url.is_empty(),
        "AWS_ENDPOINT_URL is not set: start the emulator first \
         (deploy/local/emulator.sh start && source .local/emulator.env)"
    );
    url
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `Comment` of an SSM SendCommand request body.
fn comment_of(call: &Call) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&call.body)
        .ok()?
        .get("Comment")?
        .as_str()
        .map(str::to_string)
}

fn is_reset(c: &Call) -> bool {
    c.fault() == Some(&Action::ResetAfterForward)
}

/// Fault tallies per `service:operation`: calls, throttles, 5xx, resets after forwarding.
fn tally(calls: &[Call]) -> BTreeMap<String, [usize; 4]> {
    let mut out: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for c in calls {
        let t = out
            .entry(format!("{}:{}", c.service, c.operation))
            .or_default();
        t[0] += 1;
        match c.fault() {
            Some(Action::Throttle) => t[1] += 1,
            Some(Action::Status(_)) => t[2] += 1,
            Some(Action::ResetAfterForward) => t[3] += 1,
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_jobs_succeed_through_throttling_5xx_and_resets() {
    let jobs_wanted = env_number("CHAOS_FAULT_JOBS", 100) as usize;
    let seed = env_number("CHAOS_SEED", 7_007);
    let proxy = FaultProxy::start(&upstream(), seed).await;
    // Two workers share one jobs table: isolate the emulator's transactions (see
    // `FaultProxy::isolate_dynamodb_transactions`).
    proxy.isolate_dynamodb_transactions(true);
    let env = Env::with_config(Some(&proxy.url()), |_| {}).await;

    // Three groups of servers (2, 3 and 2 instances), four certificates.
    let groups: Vec<(String, Vec<String>)> = [2u32, 3, 2]
        .iter()
        .map(|&n| {
            let value = unique("fleet");
            let ids = tagged_instances(&env, n, "Environment", &value);
            (value, ids)
        })
        .collect();
    let arns = issued_certificates(&env, 4).await;
    for arn in &arns {
        for (value, _) in &groups {
            env.allow(arn, "Environment", value).await;
        }
    }

    // The requests wait on the intake queue (the producer is not faulted).
    struct Req {
        id: JobId,
        name: String,
        arn: String,
        group: usize,
    }
    let mut reqs = Vec::new();
    for i in 0..jobs_wanted {
        let (group, arn, name) = (
            i % groups.len(),
            arns[i % arns.len()].clone(),
            format!("c{i:03}"),
        );
        let id = env
            .submit(&payload(&arn, &name, "Environment", &groups[group].0))
            .await;
        reqs.push(Req {
            id,
            name,
            arn,
            group,
        });
    }

    // At 1 % a run may well see no reset on the few calls that make a side effect that
    // cannot be read back, so a few of those are reset for certain: the 10th, 40th and
    // 70th SendCommand (SSM has no idempotency token: the SDK's retry sends a second
    // command) and the 20th and 120th CreateSecret (the retry repeats the request token).
    // Added first, they win over the random faults on those calls.
    for (op, nth) in [
        ("SendCommand", 10),
        ("SendCommand", 40),
        ("SendCommand", 70),
        ("CreateSecret", 20),
        ("CreateSecret", 120),
    ] {
        proxy.add_rule(Rule::new(
            "*",
            Some(op),
            Trigger::Nth(nth),
            Action::ResetAfterForward,
        ));
    }
    // Then every operation of every service, seeded: 10 % throttling, 2 % 5xx (half 500,
    // half 503), 1 % connection reset after the emulator has done the call. When several
    // fire on one call, the first (in the order added) decides.
    for (p, action) in [
        (0.10, Action::Throttle),
        (0.01, Action::Status(500)),
        (0.01, Action::Status(503)),
        (0.01, Action::ResetAfterForward),
    ] {
        proxy.add_rule(Rule::new("*", None, Trigger::Probability(p), action));
    }
    let started = Instant::now();
    let workers: Vec<_> = (1..=2)
        .map(|n| {
            env.worker_with(engine::WorkerConfig {
                concurrency: 16,
                sweep_every: Duration::from_secs(5),
                sweep_grace: Duration::from_secs(10),
                ..Stack::worker_config(&format!("faulty-{n}"))
            })
        })
        .collect();
    let ids: Vec<JobId> = reqs.iter().map(|r| r.id.clone()).collect();
    let records = wait_all(&env, &ids, Duration::from_secs(480), "faults").await;
    let took = started.elapsed();
    for w in workers {
        w.stop().await;
    }
    proxy.clear_rules();
    let calls = proxy.calls();

    // What was injected.
    let tallies = tally(&calls);
    let total = |k: usize| tallies.values().map(|t| t[k]).sum::<usize>();
    println!(
        "[faults] seed {seed}: {} jobs in {took:.1?}; {} calls through the proxy: {} throttled, {} 5xx, {} reset after forwarding",
        reqs.len(),
        calls.len(),
        total(1),
        total(2),
        total(3)
    );
    for (op, t) in &tallies {
        println!(
            "[faults]   {op:<45} {:>6} calls {:>5} throttled {:>4} 5xx {:>4} reset",
            t[0], t[1], t[2], t[3]
        );
    }

    let failed = not_succeeded(&ids, &records);
    assert!(
        failed.is_empty(),
        "{} of {} jobs did not succeed:\n{}",
        failed.len(),
        ids.len(),
        failed.join("\n")
    );

    // Duplicate side effects. SSM commands: what the proxy forwarded per job comment,
    // checked against what the emulator holds.
    let mut forwarded: BTreeMap<String, usize> = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| c.operation == "SendCommand" && c.forwarded)
    {
        *forwarded
            .entry(comment_of(c).unwrap_or_default())
            .or_default() += 1;
    }
    let send_resets = calls
        .iter()
        .filter(|c| c.operation == "SendCommand" && is_reset(c))
        .count();
    let by_comment = commands_by_comment(&env).await;
    let dup_commands = duplicate_commands(&by_comment);
    let dup_forwarded: usize = forwarded.values().map(|n| n.saturating_sub(1)).sum();
    assert_eq!(
        dup_commands, dup_forwarded,
        "the emulator's commands disagree with the SendCommand calls forwarded"
    );
    // Secret versions: one per secret unless a reset made a second.
    let secret_resets = calls
        .iter()
        .filter(|c| {
            c.service == "secretsmanager"
                && matches!(c.operation.as_str(), "CreateSecret" | "PutSecretValue")
                && is_reset(c)
        })
        .count();
    let mut dup_versions = 0;
    for r in &reqs {
        let secret = env.secret_name(&r.name, "Environment", &groups[r.group].0);
        let n = secret_versions(&env, &secret).await;
        assert!(n >= 1, "no version of {secret}");
        dup_versions += n - 1;
    }
    // Harmless ones, for the record: extra ExportCertificate calls and task messages.
    let exports = calls
        .iter()
        .filter(|c| c.operation == "ExportCertificate" && c.forwarded)
        .count();
    let send_message_resets = calls
        .iter()
        .filter(|c| c.operation == "SendMessage" && is_reset(c))
        .count();
    println!(
        "[faults] duplicate SSM commands: {dup_commands} (batches with more than one: {}; resets on SendCommand: {send_resets})",
        by_comment.values().filter(|v| v.len() > 1).count()
    );
    println!(
        "[faults] duplicate secret versions: {dup_versions} (resets on CreateSecret/PutSecretValue: {secret_resets})"
    );
    println!(
        "[faults] ExportCertificate calls that reached the emulator: {exports} for {} jobs; task messages duplicated by resets on SendMessage: {send_message_resets}",
        reqs.len()
    );
    assert!(
        dup_commands <= send_resets,
        "{dup_commands} duplicate SSM commands but only {send_resets} resets on SendCommand: a retry sent a second command instead of adopting the first"
    );
    assert!(
        dup_versions <= secret_resets,
        "{dup_versions} duplicate secret versions but only {secret_resets} resets on their writes"
    );

    // Each job's record and inventory row.
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    for r in &reqs {
        let rec = &records[&r.id];
        let s = state(rec);
        let (value, instances) = &groups[r.group];
        // Every server of the group installed it, each by a command of its batch (the
        // record keeps counts; the results are entries).
        let results = servers(&env, &r.id).await;
        let got: BTreeSet<&String> = results.keys().collect();
        let want: BTreeSet<&String> = instances.iter().collect();
        assert_eq!(got, want, "{}: servers", r.id);
        for (server, result) in &results {
            assert_eq!(
                result.status,
                Some(InstanceStatus::Success),
                "{}: {server} {result:?}",
                r.id
            );
            let comment = format!("certflow job {} batch {}", r.id, result.batch);
            let command = result.command_id.clone().expect("command id");
            assert!(
                by_comment
                    .get(&comment)
                    .is_some_and(|c| c.contains(&command)),
                "{}: {server}'s command {command} is not one of its batch's {:?}",
                r.id,
                by_comment.get(&comment)
            );
        }
        let rollout = s.rollout.clone().expect("rollout");
        let n = instances.len() as u32;
        assert_eq!(
            (rollout.servers, rollout.succeeded, rollout.failed),
            (n, n, 0),
            "{}: {rollout:?}",
            r.id
        );
        // Each batch planned got its command(s), and no other comment names the job.
        let mine: BTreeSet<&String> = by_comment
            .keys()
            .filter(|c| c.starts_with(&format!("certflow job {} ", r.id)))
            .collect();
        let batches: BTreeSet<String> = (0..rollout.batches)
            .map(|b| format!("certflow job {} batch {b}", r.id))
            .collect();
        assert_eq!(mine, batches.iter().collect(), "{}", r.id);
        assert_eq!(s.command_id, None, "{}: no command in flight", r.id);
        assert_eq!(
            s.secret.as_deref(),
            Some(env.secret_name(&r.name, "Environment", value).as_str())
        );
        let row = ddb
            .get_item()
            .table_name(&env.deps.config.inventory_table)
            .set_key(Some(workflows::inventory::key(
                "Environment",
                value,
                &r.arn,
                &r.name,
            )))
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_else(|| panic!("{}: no inventory row", r.id));
        let text = |k: &str| row.get(k).and_then(|v| v.as_s().ok()).cloned();
        assert_eq!(text("LastStatus").as_deref(), Some("INSTALLED"), "{}", r.id);
        assert_eq!(text("LastJobId"), Some(r.id.to_string()));
        assert_eq!(
            row.get("InstalledInstances"),
            Some(&AttributeValue::N(instances.len().to_string())),
            "{}",
            r.id
        );
        assert_eq!(text("Serial"), s.serial, "{}", r.id);
        assert_eq!(text("Fingerprint"), s.fingerprint, "{}", r.id);
        assert_eq!(text("SecretName"), s.secret, "{}", r.id);
    }
}

/// One job through its own proxy and certflow, the proxy rewriting SSM answers.
struct Install {
    proxy: FaultProxy,
    env: Env,
    tag: String,
    instances: Vec<String>,
}

impl Install {
    async fn new(servers: u32, configure: impl FnOnce(&mut ExportConfig)) -> Install {
        let proxy = FaultProxy::start(&upstream(), 1).await;
        proxy.isolate_dynamodb_transactions(true);
        let env = Env::with_config(Some(&proxy.url()), configure).await;
        let tag = unique("ssm");
        let instances = tagged_instances(&env, servers, "Role", &tag);
        Install {
            proxy,
            env,
            tag,
            instances,
        }
    }

    fn rewrite(&self, instance: usize, status: &str) {
        self.proxy.add_rule(Rule::new(
            "ssm",
            None,
            Trigger::Always,
            Action::RewriteSsm {
                instance: Some(self.instances[instance].clone()),
                status: status.to_string(),
            },
        ));
    }

    /// Runs one export job to its end and returns its record.
    async fn run(&self) -> engine::JobRecord {
        let arn = issued_certificates(&self.env, 1).await.remove(0);
        self.env.allow(&arn, "Role", &self.tag).await;
        let worker = self.env.worker("ssm-1");
        let id = self
            .env
            .submit(&payload(&arn, &unique("inst"), "Role", &self.tag))
            .await;
        let recs = wait_all(
            &self.env,
            std::slice::from_ref(&id),
            Duration::from_secs(90),
            "ssm",
        )
        .await;
        worker.stop().await;
        let rec = recs[&id].clone();
        assert!(rec.status.is_terminal(), "{id} did not finish: {rec:?}");
        rec
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_timed_out_instances_fail_the_job_by_name() {
    // A canary, then batches of two: the second batch fails, the third is never sent.
    let t = Install::new(4, |c| c.install_max_concurrency = "2".into()).await;
    t.rewrite(1, "Failed");
    t.rewrite(2, "TimedOut");
    let rec = t.run().await;
    let (canary, failed, timed_out, unreached) = (
        &t.instances[0],
        &t.instances[1],
        &t.instances[2],
        &t.instances[3],
    );
    assert_eq!(rec.status, JobStatus::Failed, "{rec:?}");
    assert_eq!(rec.step, "wait");
    let err = rec.last_error.clone().unwrap_or_default();
    println!("[ssm] failure reason: {err}");
    assert!(
        err.starts_with("rollout stopped at batch 1 of 2: 2 server(s) failed, MaxErrors 0: "),
        "{err}"
    );
    assert!(err.contains(&format!("{failed} Failed")), "{err}");
    assert!(err.contains(&format!("{timed_out} TimedOut")), "{err}");
    assert!(
        err.ends_with("; 1 server(s) not reached keep their certificate"),
        "{err}"
    );
    assert!(!err.contains(canary.as_str()), "{err}");
    assert!(!err.contains(unreached.as_str()), "{err}");
    let s = state(&rec);
    let rollout = s.rollout.clone().expect("rollout");
    assert_eq!(
        (
            rollout.succeeded,
            rollout.failed,
            rollout.batch,
            rollout.batches
        ),
        (1, 2, 1, 3),
        "{rollout:?}"
    );
    assert_eq!(rollout.first_failures.len(), 2, "{rollout:?}");
    let results = servers(&t.env, &rec.job_id).await;
    let status = |id: &String| results[id].status.clone();
    assert_eq!(status(canary), Some(InstanceStatus::Success), "{results:?}");
    assert_eq!(status(failed), Some(InstanceStatus::Failed), "{results:?}");
    assert_eq!(
        status(timed_out),
        Some(InstanceStatus::TimedOut),
        "{results:?}"
    );
    // The third batch was planned, never sent.
    assert_eq!(results[unreached].batch, 2, "{results:?}");
    assert_eq!(status(unreached), None, "{results:?}");
    assert_eq!(results[unreached].command_id, None, "{results:?}");
    assert_eq!(
        t.env.fleet().received(unreached),
        [],
        "{unreached} was sent the install"
    );
    // The inventory says so too.
    let r = &s.request;
    let row = aws_sdk_dynamodb::Client::new(&t.env.sdk)
        .get_item()
        .table_name(&t.env.deps.config.inventory_table)
        .set_key(Some(workflows::inventory::key(
            &r.target_tag_key,
            &r.target_tag_value,
            &r.certificate_arn,
            &r.cert_name,
        )))
        .send()
        .await
        .unwrap()
        .item
        .expect("inventory row");
    assert_eq!(
        row.get("LastStatus"),
        Some(&AttributeValue::S("INSTALL_FAILED".into()))
    );
    // A failure, not a retry loop: one failed event, at the wait step.
    let history = chaos_support::store(&t.env)
        .history(&rec.job_id)
        .await
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!((last.kind, last.step.as_str()), (EventKind::Failed, "wait"));
    assert_eq!(t.proxy.count("ssm", "CancelCommand"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_in_progress_past_the_deadline_cancels_the_command_and_fails() {
    let t = Install::new(2, |c| c.install_timeout = Duration::from_secs(5)).await;
    // The canary installs; the second batch's server never finishes.
    t.rewrite(1, "InProgress");
    // The emulator does not implement CancelCommand (it answers 500): answer it as AWS does.
    t.proxy.add_rule(Rule::new(
        "ssm",
        Some("CancelCommand"),
        Trigger::Always,
        Action::Respond {
            status: 200,
            body: "{}".into(),
        },
    ));
    let rec = t.run().await;
    assert_eq!(rec.status, JobStatus::Failed, "{rec:?}");
    let err = rec.last_error.clone().unwrap_or_default();
    println!("[ssm] timeout reason: {err}");
    let s = state(&rec);
    let (ok, stuck) = (&t.instances[0], &t.instances[1]);
    let results = servers(&t.env, &rec.job_id).await;
    let command = results[stuck].command_id.clone().expect("command id");
    // The record no longer holds the cancelled command: a retry resumes the rollout.
    assert_eq!(s.command_id, None);
    assert!(
        s.rollout.as_ref().is_some_and(|r| r.ended),
        "{:?}",
        s.rollout
    );
    assert!(err.contains("install did not finish within 5s"), "{err}");
    assert!(err.contains(&format!("{stuck} InProgress")), "{err}");
    assert!(
        err.contains(&format!("command {command} cancelled")),
        "{err}"
    );
    assert!(!err.contains(ok.as_str()), "{err}");
    assert_eq!(
        results[stuck].status,
        Some(InstanceStatus::InProgress),
        "{results:?}"
    );
    assert_eq!(
        results[ok].status,
        Some(InstanceStatus::Success),
        "{results:?}"
    );
    // The command cancelled is the second batch's, not the canary's.
    assert_eq!(results[stuck].command_id.as_deref(), Some(command.as_str()));
    assert_eq!(results[stuck].batch, 1, "{results:?}");
    assert_ne!(results[ok].command_id.as_deref(), Some(command.as_str()));
    // The proxy saw the cancel, of that command, and answered it.
    let cancels: Vec<Call> = t
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "CancelCommand")
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert!(cancels[0].body.contains(&command), "{:?}", cancels[0]);
    assert_eq!(cancels[0].status, Some(200));
    // It waited for the deadline before giving up.
    let history = chaos_support::store(&t.env)
        .history(&rec.job_id)
        .await
        .unwrap();
    let sent_at = history
        .iter()
        .find(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.contains(&format!("sent command {command}")))
        })
        .map(|e| e.at)
        .expect("the send of the stuck batch in the history");
    assert!(
        rec.updated_at - sent_at >= 5_000,
        "failed {} ms after sending",
        rec.updated_at - sent_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serial_each_server_reports_is_recorded_per_instance() {
    let t = Install::new(2, |_| {}).await;
    let serials = ["0a:1b:2c:3d:4e:5f", "ff:ee:dd:cc:bb:aa:99"];
    for (i, serial) in serials.iter().enumerate() {
        t.proxy.add_rule(Rule::new(
            "ssm",
            None,
            Trigger::Always,
            Action::SetStdout {
                instance: Some(t.instances[i].clone()),
                stdout: format!(
                    "installed /etc/ssl/certs/x-fullchain.pem\nCERTFLOW_INSTALLED_SERIAL={serial}\n"
                ),
            },
        ));
    }
    let rec = t.run().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let results = servers(&t.env, &rec.job_id).await;
    for (i, serial) in serials.iter().enumerate() {
        let recorded = &results[&t.instances[i]];
        println!(
            "[ssm] {} recorded serial {:?}",
            t.instances[i], recorded.serial
        );
        assert_eq!(recorded.serial.as_deref(), Some(*serial), "{results:?}");
        assert_eq!(recorded.batch, i as u32, "{results:?}");
    }
}
