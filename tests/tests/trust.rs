//! The trust model on the emulator (issue 12): a certificate goes only to the targets its
//! owner listed in its `certflow:targets` tag; each (target, certificate name) has a
//! secret of its own, tagged at creation for that target only, and an export never writes
//! into (nor re-tags) a secret made for another target; a renewal is confirmed by ACM (a
//! new serial) before anything is re-exported; the install command is pinned to the
//! document's hash and bounded.
//!
//! What a user would check is asserted: the job's status and reason, the secrets, their
//! tags and versions, and the SSM commands sent.

use std::collections::BTreeSet;

use aws_sdk_secretsmanager::types::Tag;
use certflow_tests::certflow::{is_install_comment, Env};
use certflow_tests::proxy::FaultProxy;
use certflow_tests::unique;
use engine::{JobId, JobRecord, JobStatus};
use workflows::renew_certificate::{self, RenewState};

fn payload(arn: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

/// Every secret under this certflow's prefix.
async fn our_secrets(env: &Env) -> BTreeSet<String> {
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let page = sm
            .list_secrets()
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            page.secret_list()
                .iter()
                .filter_map(|s| s.name())
                .filter(|n| n.starts_with(&env.deps.config.secret_prefix))
                .map(str::to_string),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// A secret as a user sees it: its tags (sorted), its version ids, its current value.
async fn secret_state(env: &Env, name: &str) -> (Vec<(String, String)>, Vec<String>, String) {
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let d = sm.describe_secret().secret_id(name).send().await.unwrap();
    let mut tags: Vec<(String, String)> = d
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    tags.sort();
    let ids = env.secret_version_ids(name).await;
    let value = sm
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap_or_default()
        .to_string();
    (tags, ids, value)
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// How many SSM commands were sent for job `id` (one per batch).
async fn commands_of(env: &Env, id: &str) -> usize {
    let id = JobId::new(id.to_string());
    env.ssm_commands()
        .await
        .iter()
        .filter(|c| is_install_comment(c.comment(), &id))
        .count()
}

/// An ACM renewal event for `arn`, sent to the events queue; returns the parent's id.
async fn renewal_event(env: &Env, arn: &str) -> JobId {
    let event_id = unique("event");
    let envelope = serde_json::json!({
        "version": "0", "id": event_id, "detail-type": "ACM Certificate Available",
        "source": "aws.acm", "account": "123456789012", "time": "2026-05-23T18:43:48Z",
        "region": "us-east-1", "resources": [arn],
        "detail": {"Action": "RENEWAL", "Exportable": "TRUE"}
    });
    env.submit_event(&envelope.to_string()).await;
    JobId::from_key(renew_certificate::NAME, &event_id)
}

fn assert_refused(rec: &JobRecord, arn: &str, target: &str) {
    assert_eq!(rec.status, JobStatus::Failed, "{:?}", rec.last_error);
    let err = rec.last_error.clone().unwrap_or_default();
    assert!(
        err.contains(&format!("does not allow target {target}")),
        "{err}"
    );
    assert!(err.contains("certflow:targets"), "{err}");
    assert!(
        err.contains(&format!(
            "aws acm add-tags-to-certificate --certificate-arn {arn} --tags Key=certflow:targets,Value="
        )),
        "{err}"
    );
    assert!(err.contains(target), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_the_certificate_does_not_list_fails_naming_the_tag_and_writes_nothing() {
    let env = Env::new().await;
    let (prod, dev) = (unique("Production"), unique("dev"));
    let mut servers = env.instances(1, "Environment", &prod);
    servers.extend(env.instances(1, "Environment", &dev));
    let listed = env.certificate(true).await;
    env.allow(&listed, "Environment", &prod).await;
    let untagged = env.certificate(true).await;
    let worker = env.worker("w1");
    let to_dev = env
        .submit(&payload(&listed, "shop", "Environment", &dev))
        .await;
    let no_tag = env
        .submit(&payload(&untagged, "shop", "Environment", &prod))
        .await;
    let (to_dev, no_tag) = (env.wait(&to_dev).await, env.wait(&no_tag).await);
    worker.stop().await;

    assert_refused(&to_dev, &listed, &format!("Environment={dev}"));
    let err = to_dev.last_error.clone().unwrap();
    assert!(
        err.contains(&format!("Value=\"Environment={prod} Environment={dev}\"")),
        "the command keeps the targets already listed: {err}"
    );
    assert_refused(&no_tag, &untagged, &format!("Environment={prod}"));
    assert!(
        no_tag
            .last_error
            .clone()
            .unwrap()
            .contains("has no certflow:targets tag"),
        "{:?}",
        no_tag.last_error
    );
    for rec in [&to_dev, &no_tag] {
        let history = env.jobs.history(&rec.job_id).await.unwrap();
        assert!(
            history.iter().all(|e| e.step == "check"),
            "nothing ran after check: {history:?}"
        );
        assert_eq!(rec.attempt, 1, "refused at once, not retried");
        assert_eq!(
            commands_of(&env, rec.job_id.as_str()).await,
            0,
            "no command"
        );
    }
    assert_eq!(
        our_secrets(&env).await,
        BTreeSet::new(),
        "no secret created"
    );
    for server in &servers {
        assert_eq!(
            env.fleet().received(server),
            [],
            "{server} received a command"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_child_whose_target_is_no_longer_allowed_fails_and_changes_nothing() {
    let env = Env::new().await;
    let (old, other) = (unique("old"), unique("other"));
    env.instances(1, "Environment", &old);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Environment", &old).await;
    let worker = env.worker("w1");
    let first = env
        .submit(&payload(&arn, "shop", "Environment", &old))
        .await;
    assert_eq!(env.wait(&first).await.status, JobStatus::Succeeded);
    let secret = env.secret_name("shop", "Environment", &old);
    let before = secret_state(&env, &secret).await;

    // The owner takes the target off the certificate; then ACM renews it.
    aws_sdk_acm::Client::new(&env.sdk)
        .add_tags_to_certificate()
        .certificate_arn(&arn)
        .tags(
            aws_sdk_acm::types::Tag::builder()
                .key("certflow:targets")
                .value(format!("Environment={other}"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    env.pretend_renewed(&arn).await;
    let parent = env.wait(&renewal_event(&env, &arn).await).await;
    worker.stop().await;

    assert_eq!(
        parent.status,
        JobStatus::Succeeded,
        "{:?}",
        parent.last_error
    );
    let state: RenewState = serde_json::from_value(parent.data.clone()).unwrap();
    assert_eq!(
        (
            state.tally.started,
            state.tally.succeeded,
            state.tally.unsuccessful
        ),
        (1, 0, 1),
        "{state:?}"
    );
    let children = env
        .jobs
        .all_entries(
            &parent.job_id,
            renew_certificate::CHILDREN,
            &engine::Groups::All,
        )
        .await
        .unwrap();
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0].group, "failed", "{children:?}");
    let child = env
        .jobs
        .get(&JobId::new(children[0].key.clone()))
        .await
        .unwrap();
    assert_refused(&child, &arn, &format!("Environment={old}"));
    let last = env
        .jobs
        .history(&parent.job_id)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        last.note.as_deref(),
        Some(
            format!(
                "0 of 1 export job(s) succeeded; 1 did not: Environment={old} FAILED ({})",
                child.job_id
            )
            .as_str()
        ),
        "{last:?}"
    );
    assert_eq!(
        commands_of(&env, child.job_id.as_str()).await,
        0,
        "no command"
    );
    assert_eq!(
        secret_state(&env, &secret).await,
        before,
        "the secret's tags, versions and value are unchanged"
    );
    assert_eq!(our_secrets(&env).await, BTreeSet::from([secret]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_targets_of_one_name_get_a_secret_each_and_a_secret_of_another_target_is_refused() {
    let env = Env::new().await;
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    for t in [&a, &b, &c] {
        env.instances(1, "Environment", t);
    }
    let arn = env.certificate(true).await;
    for t in [&a, &b, &c] {
        env.allow(&arn, "Environment", t).await;
    }
    // Someone made the secret that target c's export would write, tagged for target a:
    // writing into it would hand c's key to a's servers (or a's to c's).
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let squatted = env.secret_name("web", "Environment", &c);
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    sm.create_secret()
        .name(&squatted)
        .secret_string(r#"{"passphrase":"not ours"}"#)
        .tags(tag("Environment", &a))
        .tags(tag("certflow:managed", "true"))
        .send()
        .await
        .unwrap();
    let squatted_before = secret_state(&env, &squatted).await;

    let worker = env.worker("w1");
    let ids = [
        env.submit(&payload(&arn, "web", "Environment", &a)).await,
        env.submit(&payload(&arn, "web", "Environment", &b)).await,
    ];
    for id in &ids {
        let rec = env.wait(id).await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    }
    let to_c = env.submit(&payload(&arn, "web", "Environment", &c)).await;
    let to_c = env.wait(&to_c).await;
    worker.stop().await;

    // Two secrets, one per target, each tagged for its own target only, one version each,
    // each command naming its own.
    let (sa, sb) = (
        env.secret_name("web", "Environment", &a),
        env.secret_name("web", "Environment", &b),
    );
    assert_ne!(sa, sb);
    assert_eq!(
        our_secrets(&env).await,
        BTreeSet::from([sa.clone(), sb.clone(), squatted.clone()])
    );
    for (secret, target, id) in [(&sa, &a, &ids[0]), (&sb, &b, &ids[1])] {
        let (tags, versions, value) = secret_state(&env, secret).await;
        assert_eq!(
            tags,
            [
                pair("Environment", target),
                pair("certflow:managed", "true")
            ],
            "{secret}"
        );
        assert_eq!(versions.len(), 1, "{secret}");
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(v["job_id"].as_str(), Some(id.as_str()), "{secret}");
        assert!(v["passphrase"].as_str().is_some_and(|p| p.len() >= 43));
        assert!(v["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("ENCRYPTED PRIVATE KEY")));
        // One server: one command, the canary's.
        let comment = format!("certflow job {id} batch 0");
        let listed = env.ssm_commands().await;
        let cmd = listed
            .iter()
            .find(|c| c.comment() == Some(comment.as_str()))
            .unwrap();
        assert_eq!(commands_of(&env, id.as_str()).await, 1, "{id}");
        assert_eq!(
            cmd.parameters().unwrap()["SecretId"],
            std::slice::from_ref(secret)
        );
    }

    // The export into the other target's secret is refused, naming it and its tags; the
    // secret is left exactly as it was (no new version, no re-tagging).
    assert_eq!(to_c.status, JobStatus::Failed);
    let err = to_c.last_error.clone().unwrap_or_default();
    assert!(
        err.contains(&format!("secret {squatted} is tagged "))
            && err.contains(&format!("Environment={a}")),
        "{err}"
    );
    assert!(err.contains("another target"), "{err}");
    assert_eq!(secret_state(&env, &squatted).await, squatted_before);
    assert_eq!(commands_of(&env, to_c.job_id.as_str()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_event_for_an_unchanged_serial_starts_no_child() {
    let env = Env::new().await;
    let tag = unique("same");
    env.instances(1, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let worker = env.worker("w1");
    let first = env.submit(&payload(&arn, "shop", "Tier", &tag)).await;
    assert_eq!(env.wait(&first).await.status, JobStatus::Succeeded);
    let secret = env.secret_name("shop", "Tier", &tag);
    let before = secret_state(&env, &secret).await;

    // A forged or repeated RENEWAL: ACM still reports the serial the row holds.
    let parent = env.wait(&renewal_event(&env, &arn).await).await;
    worker.stop().await;
    assert_eq!(
        parent.status,
        JobStatus::Succeeded,
        "{:?}",
        parent.last_error
    );
    let state: RenewState = serde_json::from_value(parent.data.clone()).unwrap();
    assert!(state.children.is_empty(), "{state:?}");
    assert_eq!(state.tally.started, 0, "{state:?}");
    let children = env
        .jobs
        .all_entries(
            &parent.job_id,
            renew_certificate::CHILDREN,
            &engine::Groups::All,
        )
        .await
        .unwrap();
    assert!(children.is_empty(), "{children:?}");
    let history = env.jobs.history(&parent.job_id).await.unwrap();
    let note = history
        .last()
        .and_then(|e| e.note.clone())
        .unwrap_or_default();
    assert!(
        note.contains("started 0 export job(s); skipped 1 row(s) already at serial"),
        "{note}"
    );
    let exports = env
        .jobs
        .list(JobStatus::Succeeded, 100, None)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .filter(|j| j.workflow == workflows::export_certificate::NAME)
        .count();
    assert_eq!(exports, 1, "only the first export");
    let all = env.ssm_commands().await;
    let ours = all
        .iter()
        .filter(|c| c.comment().is_some_and(|x| x.starts_with("certflow job ")))
        .filter(|c| {
            c.parameters()
                .is_some_and(|p| p.get("SecretId") == Some(&vec![secret.clone()]))
        })
        .count();
    assert_eq!(ours, 1, "no second install");
    assert_eq!(secret_state(&env, &secret).await, before);
}

/// The install command names the document's SHA-256 hash (from DescribeDocument) and
/// carries the configured bounds: with MaxConcurrency 2, three servers get a canary of
/// one, then one batch of two (each command is a whole batch: `100%` of its ids). The emulator accepts `DocumentHash` but does not check
/// it, so what is asserted is what certflow sends, as the proxy saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_command_is_pinned_to_the_documents_hash_and_bounded() {
    let proxy = FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap(), 12).await;
    let env = Env::with_config(Some(&proxy.url()), |c| {
        c.install_max_concurrency = "2".into();
    })
    .await;
    let tag = unique("pin");
    let servers = env.instances(3, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let worker = env.worker("w1");
    // One after the other, so that the second finds the hash the first described.
    for name in ["one", "two"] {
        let id = env.submit(&payload(&arn, name, "Tier", &tag)).await;
        let rec = env.wait(&id).await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    }
    worker.stop().await;

    let ssm = aws_sdk_ssm::Client::new(&env.sdk);
    let doc = ssm
        .describe_document()
        .name(&env.deps.config.document_name)
        .send()
        .await
        .unwrap();
    let hash = doc.document().unwrap().hash().unwrap().to_string();
    let sends: Vec<serde_json::Value> = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "SendCommand" && c.forwarded)
        .map(|c| serde_json::from_str(&c.body).unwrap())
        .collect();
    assert_eq!(sends.len(), 4, "two batches per job: {sends:?}");
    for (i, body) in sends.iter().enumerate() {
        assert_eq!(body["DocumentHash"], serde_json::json!(hash), "{body}");
        assert_eq!(body["DocumentHashType"], "Sha256", "{body}");
        assert_eq!(body["MaxErrors"], "0", "{body}");
        assert_eq!(body["MaxConcurrency"], "100%", "{body}");
        assert!(body.get("Targets").is_none(), "by instance id: {body}");
        let batch = i % 2;
        let expected: &[String] = if batch == 0 {
            &servers[..1]
        } else {
            &servers[1..]
        };
        assert_eq!(body["InstanceIds"], serde_json::json!(expected), "{body}");
        assert!(
            body["Comment"]
                .as_str()
                .is_some_and(|c| c.ends_with(&format!(" batch {batch}"))),
            "{body}"
        );
    }
    // Described once for both jobs: the hash is cached by the worker.
    assert_eq!(proxy.count("ssm", "DescribeDocument"), 1);
}
