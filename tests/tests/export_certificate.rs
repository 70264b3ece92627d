//! The export-certificate workflow end to end on the emulator: the reference payload on the
//! intake queue → check → export → inventory → SSM install → wait, then what a user checks:
//! the job, the inventory row, the target's secret and its tags, that the key decrypts with
//! the stored passphrase and matches the certificate, and that no secret material leaked.
//! Every certificate is first tagged to allow its target (`certflow:targets`), as its
//! owner would.

use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use certflow_tests::certflow::Env;
use certflow_tests::unique;
use engine::{JobId, JobStatus};
use workflows::export_certificate;

fn payload(arn: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything a user could read outside Secrets Manager, as text.
async fn visible_text(env: &Env) -> String {
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    let mut all = String::new();
    for table in [&env.table, &env.deps.config.inventory_table] {
        let items = ddb.scan().table_name(table).send().await.unwrap();
        all.push_str(&format!("{:?}\n", items.items()));
    }
    let cmds = env.ssm_commands().await;
    all.push_str(&format!("{cmds:?}\n"));
    all
}

fn assert_no_secrets(text: &str, passphrase: &str, key_pem: &str) {
    assert!(
        !text.contains("BEGIN"),
        "PEM material outside Secrets Manager"
    );
    assert!(
        !text.contains("PRIVATE KEY"),
        "key material outside Secrets Manager"
    );
    assert!(!text.contains(passphrase), "the passphrase leaked");
    for line in key_pem.lines().filter(|l| l.len() >= 40) {
        assert!(!text.contains(line), "a base64 run of the key leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_from_the_reference_payload() {
    let env = Env::new().await;
    let tag_value = unique("web");
    let servers = env.instances(2, "Environment", &tag_value);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Environment", &tag_value).await;
    let worker = env.worker("w1");
    let name = unique("shop");
    let id = env
        .submit(&payload(&arn, &name, "Environment", &tag_value))
        .await;
    let rec = env.wait(&id).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    assert_eq!(rec.labels.get("CertificateArn"), Some(&arn));
    assert_eq!(rec.labels.get("CertName"), Some(&name));
    let history = env.jobs.history(&id).await.unwrap();
    let steps: Vec<&str> = history.iter().map(|e| e.step.as_str()).collect();
    for step in ["check", "export", "inventory", "install", "wait"] {
        assert!(steps.contains(&step), "{step} missing from {steps:?}");
    }
    let state: export_certificate::ExportState = serde_json::from_value(rec.data.clone()).unwrap();
    // Per-server results are entries beside the record, which keeps only counts.
    assert!(state.instances.is_empty(), "{:?}", state.instances);
    assert_eq!(state.command_id, None, "no command in flight once done");
    let rollout = state.rollout.clone().expect("the rollout");
    assert_eq!(
        (
            rollout.servers,
            rollout.canary,
            rollout.batches,
            rollout.succeeded,
            rollout.failed
        ),
        (2, 1, 2, 2, 0),
        "{rollout:?}"
    );
    assert!(rollout.first_failures.is_empty(), "{rollout:?}");
    let results = env.servers(&id).await;
    assert_eq!(
        results.keys().collect::<Vec<_>>(),
        servers.iter().collect::<Vec<_>>(),
        "{results:?}"
    );
    // The canary is the first server by id, alone in batch 0; the other follows in batch 1.
    assert_eq!(results[&servers[0]].batch, 0, "{results:?}");
    assert_eq!(results[&servers[1]].batch, 1, "{results:?}");
    assert!(
        results
            .values()
            .all(|r| r.status == Some(export_certificate::InstanceStatus::Success)),
        "{results:?}"
    );
    // Each server reported the serial it installed (openssl's format: ACM's in hex), and
    // got one command, naming the secret.
    for server in &servers {
        let installed = env.fleet().installed_serial(server).expect("installed");
        assert_eq!(results[server].serial.as_ref(), Some(&installed));
        let acm = state
            .serial
            .as_deref()
            .and_then(certflow_tests::fleet::openssl_serial);
        assert_eq!(
            acm.as_ref(),
            Some(&installed),
            "ACM's serial {:?}",
            state.serial
        );
        let received = env.fleet().received(server);
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(
            received[0].parameters["SecretId"],
            [state.secret.clone().unwrap()]
        );
        assert_eq!(
            results[server].command_id.as_deref(),
            Some(received[0].command_id.as_str())
        );
        assert_eq!(
            received[0].comment,
            format!("certflow job {id} batch {}", results[server].batch)
        );
    }
    // The canary's command was sent, and finished, before the next batch's.
    let (canary, next) = (
        &env.fleet().received(&servers[0])[0],
        &env.fleet().received(&servers[1])[0],
    );
    assert!(canary.at <= next.at, "{canary:?} {next:?}");

    // The inventory row, in the reference schema and more.
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    let row = ddb
        .get_item()
        .table_name(&env.deps.config.inventory_table)
        .set_key(Some(workflows::inventory::key(
            "Environment",
            &tag_value,
            &arn,
            &name,
        )))
        .send()
        .await
        .unwrap()
        .item
        .expect("inventory row");
    for attr in [
        "TagKeyValue",
        "CertificateArn",
        "CertName",
        "TargetTagKey",
        "TargetTagValue",
        "SecretName",
        "CertExpiryDate",
        "LastExportedDate",
        "Serial",
        "Fingerprint",
        "LastJobId",
        "LastStatus",
    ] {
        assert!(
            row.contains_key(attr),
            "inventory row lacks {attr}: {row:?}"
        );
    }
    assert_eq!(row["LastStatus"], AttributeValue::S("INSTALLED".into()));
    assert_eq!(row["LastJobId"], AttributeValue::S(id.to_string()));

    for old in ["PassphraseSecretName", "BundleSecretName"] {
        assert!(!row.contains_key(old), "the old layout's {old} in {row:?}");
    }

    // One secret for the target and name, tagged for that target and as managed, only.
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let secret = env.secret_name(&name, "Environment", &tag_value);
    assert_eq!(
        secret,
        format!(
            "{}{name}/Environment={tag_value}",
            env.deps.config.secret_prefix
        )
    );
    assert_eq!(row["SecretName"], AttributeValue::S(secret.clone()));
    let d = sm
        .describe_secret()
        .secret_id(&secret)
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = d
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().into(),
                t.value().unwrap_or_default().into(),
            )
        })
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("Environment".to_string(), tag_value.clone()),
            ("certflow:managed".to_string(), "true".to_string())
        ]
    );
    let versions = env.secret_version_ids(&secret).await;
    assert_eq!(versions.len(), 1, "one version of {secret}");
    let bundle: serde_json::Value = serde_json::from_str(
        sm.get_secret_value()
            .secret_id(&secret)
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap(),
    )
    .unwrap();
    let passphrase = bundle["passphrase"].as_str().unwrap().to_string();
    assert!(passphrase.len() >= 43, "32 random bytes, base64");
    assert_eq!(bundle["certificate_arn"].as_str(), Some(arn.as_str()));
    assert_eq!(bundle["job_id"].as_str(), Some(id.as_str()));
    let key_pem = bundle["private_key"].as_str().unwrap().to_string();
    assert!(key_pem.contains("BEGIN ENCRYPTED PRIVATE KEY"));

    // The encrypted key decrypts with the stored passphrase and matches the certificate.
    let dir = tempfile::tempdir().unwrap();
    let write = |n: &str, s: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, s).unwrap();
        p.to_string_lossy().into_owned()
    };
    let key = write("key.pem", &key_pem);
    let pass = write("pass", &passphrase);
    let cert = write("cert.pem", bundle["certificate"].as_str().unwrap());
    let from_key = openssl(&[
        "pkey",
        "-in",
        &key,
        "-passin",
        &format!("file:{pass}"),
        "-pubout",
    ]);
    let from_cert = openssl(&["x509", "-in", &cert, "-pubkey", "-noout"]);
    assert_eq!(
        from_key, from_cert,
        "the key does not match the certificate"
    );

    // One SSM command per batch, by instance id, carrying secret names only.
    let mut cmds: Vec<_> = env
        .ssm_commands()
        .await
        .into_iter()
        .filter(|c| certflow_tests::certflow::is_install_comment(c.comment(), &id))
        .collect();
    cmds.sort_by_key(|c| c.comment().unwrap_or_default().to_string());
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    for (batch, c) in cmds.iter().enumerate() {
        assert_eq!(
            c.comment(),
            Some(format!("certflow job {id} batch {batch}").as_str())
        );
        assert_eq!(c.instance_ids(), [servers[batch].clone()], "{c:?}");
        assert!(c.targets().is_empty(), "by instance id, not by tag: {c:?}");
        let params = c.parameters().unwrap();
        assert_eq!(
            params["SecretId"],
            std::slice::from_ref(&secret),
            "{params:?}"
        );
        assert!(!params.contains_key("BundleSecretId"), "{params:?}");
        // The batch is the unit (all of it at once); no failure is tolerated.
        assert_eq!(c.max_errors(), Some("0"));
        assert_eq!(c.max_concurrency(), Some("100%"));
    }

    assert_no_secrets(&visible_text(&env).await, &passphrase, &key_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_specific_and_create_no_secret_for_bad_input() {
    let env = Env::new().await;
    let tag_value = unique("api");
    env.instances(1, "Role", &tag_value);
    let worker = env.worker("w1");
    let exportable = env.certificate(true).await;
    let not_exportable = env.certificate(false).await;
    for (arn, value) in [
        (&exportable, tag_value.as_str()),
        (&exportable, "no-such-value"),
        (&not_exportable, tag_value.as_str()),
    ] {
        env.allow(arn, "Role", value).await;
    }
    let unknown =
        "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000";
    let cases: Vec<(String, &str)> = vec![
        (
            payload(&not_exportable, "ok-name", "Role", &tag_value),
            "is not exportable",
        ),
        (payload(unknown, "ok-name", "Role", &tag_value), "not found"),
        (
            payload(&exportable, "nobody", "Role", "no-such-value"),
            "no managed instance matches tag Role=no-such-value",
        ),
        (
            payload(&exportable, "x; rm -rf /", "Role", &tag_value),
            "invalid CertName",
        ),
        (
            payload(&exportable, "../etc", "Role", &tag_value),
            "invalid CertName",
        ),
        (
            payload(&exportable, "", "Role", &tag_value),
            "invalid CertName",
        ),
        (
            payload(&exportable, &"a".repeat(65), "Role", &tag_value),
            "invalid CertName",
        ),
        (
            payload(
                "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
                "ok",
                "Role",
                &tag_value,
            ),
            "region eu-west-1",
        ),
    ];
    let mut ids = Vec::new();
    for (body, _) in &cases {
        ids.push(env.submit(body).await);
    }
    for ((_, expected), id) in cases.iter().zip(&ids) {
        let rec = env.wait(id).await;
        assert_eq!(rec.status, JobStatus::Failed, "{expected}");
        let err = rec.last_error.unwrap_or_default();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    worker.stop().await;
    // No secret was made for invalid input (nor for the certificates that failed checks).
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let listed = sm.list_secrets().send().await.unwrap();
    let ours: Vec<_> = listed
        .secret_list()
        .iter()
        .filter_map(|s| s.name())
        .filter(|n| n.starts_with(&env.deps.config.secret_prefix))
        .filter(|n| !n.contains("/nobody/"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    let text = visible_text(&env).await;
    assert!(!text.contains("BEGIN") && !text.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_twice_makes_one_job_one_secret_version_one_command() {
    let env = Env::new().await;
    let tag_value = unique("db");
    env.instances(1, "Tier", &tag_value);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag_value).await;
    let name = unique("dbcert");
    let body = format!(
        r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag_value}","RequestId":"req-{name}"}}"#
    );
    env.submit(&body).await;
    env.submit(&body).await;
    let id = JobId::from_key(export_certificate::NAME, &format!("req-{name}"));
    let worker = env.worker("w1");
    let rec = env.wait(&id).await;
    // Duplicate task messages for every version it went through change nothing.
    let tasks = env.jobs.queue();
    for v in 1..=rec.version {
        let b = format!(r#"{{"JobId":"{id}","Version":{v}}}"#);
        tasks.send(&b, Duration::ZERO, &[]).await.unwrap();
    }
    env.submit(&body).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    assert_eq!(
        env.jobs.get(&id).await.unwrap(),
        rec,
        "duplicates changed the job"
    );
    let cmds = env.ssm_commands().await;
    // One server: the canary is the only batch, sent one command.
    let ours: Vec<_> = cmds
        .iter()
        .filter(|c| certflow_tests::certflow::is_install_comment(c.comment(), &id))
        .collect();
    assert_eq!(ours.len(), 1, "one SSM command: {ours:?}");
    assert_eq!(
        ours[0].comment(),
        Some(format!("certflow job {id} batch 0").as_str())
    );
    let s = env.secret_name(&name, "Tier", &tag_value);
    assert_eq!(
        env.secret_version_ids(&s).await.len(),
        1,
        "one version of {s}"
    );
    let listed = env.jobs.list(JobStatus::Succeeded, 50, None).await.unwrap();
    assert_eq!(listed.jobs.len(), 1, "one job");
}

/// A first attempt writes its secret version without reading first; should a version with
/// its token exist all the same (an earlier run of the step got that far), that version
/// wins: the job installs what is stored (passphrase and key together) and adds no
/// version of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_already_stored_under_the_steps_token_is_the_one_used() {
    let env = Env::new().await;
    let tag_value = unique("pre");
    env.instances(1, "Tier", &tag_value);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag_value).await;
    let name = unique("precert");
    let request_id = format!("req-{name}");
    let id = JobId::from_key(export_certificate::NAME, &request_id);
    let secret = env.secret_name(&name, "Tier", &tag_value);
    let token = engine::workflow::idempotency_token(&id, "export", "secret");
    // What an earlier run stored: the certificate exported with its own passphrase.
    let stored = "stored-by-an-earlier-run-0123456789abcdefghij";
    let acm = aws_sdk_acm::Client::new(&env.sdk);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let exported = loop {
        match acm
            .export_certificate()
            .certificate_arn(&arn)
            .passphrase(aws_sdk_acm::primitives::Blob::new(stored))
            .send()
            .await
        {
            Ok(out) => break out,
            Err(e) => {
                assert!(std::time::Instant::now() < until, "not exportable: {e:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let value = serde_json::json!({
        "passphrase": stored,
        "certificate": exported.certificate().unwrap(),
        "certificate_chain": exported.certificate_chain().unwrap_or_default(),
        "private_key": exported.private_key().unwrap(),
        "certificate_arn": arn,
        "job_id": id.as_str(),
    });
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let tag = |k: &str, v: &str| {
        aws_sdk_secretsmanager::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    };
    sm.create_secret()
        .name(&secret)
        .client_request_token(&token)
        .secret_string(value.to_string())
        .tags(tag("Tier", &tag_value))
        .tags(tag("certflow:managed", "true"))
        .send()
        .await
        .unwrap();

    let worker = env.worker("w1");
    env.submit(&format!(
        r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag_value}","RequestId":"{request_id}"}}"#
    ))
    .await;
    let rec = env.wait(&id).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);

    let ids = env.secret_version_ids(&secret).await;
    assert_eq!(ids, vec![token.clone()], "only the stored version");
    let now: serde_json::Value = serde_json::from_str(
        sm.get_secret_value()
            .secret_id(&secret)
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(now, value, "the stored version is unchanged");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, now["private_key"].as_str().unwrap()).unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, stored).unwrap();
    openssl(&[
        "pkey",
        "-in",
        &key.to_string_lossy(),
        "-passin",
        &format!("file:{}", pass.to_string_lossy()),
        "-noout",
    ]);
}
