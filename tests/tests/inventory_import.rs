//! `certflow inventory import --from-table`: a table in the reference solution's shape
//! (`CertTagMapping`: partition key `TagKeyValue`, sort key attribute
//! `CertificateArn#CertName`) on the emulator becomes certflow's inventory: good rows are
//! imported once, hostile or inconsistent rows are refused with their reason, rows already
//! in certflow's inventory are left alone, `--dry-run` writes nothing — and a renewal of an
//! imported certificate then exports and installs it for the imported row.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use certflow_tests::certflow::Env;
use certflow_tests::unique;
use engine::JobStatus;
use workflows::inventory::InventoryRow;
use workflows::renew_certificate::RenewState;

const SORT_KEY: &str = "CertificateArn#CertName";

/// A table in the reference's shape.
async fn reference_table(env: &Env) -> String {
    let name = unique("CertTagMapping");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    aws_sdk_dynamodb::Client::new(&env.sdk)
        .create_table()
        .table_name(&name)
        .attribute_definitions(attr("TagKeyValue"))
        .attribute_definitions(attr(SORT_KEY))
        .key_schema(key("TagKeyValue", KeyType::Hash))
        .key_schema(key(SORT_KEY, KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    name
}

/// A row as the reference writes it.
fn reference_row(arn: &str, name: &str, key: &str, value: &str) -> HashMap<String, AttributeValue> {
    [
        ("TagKeyValue", format!("{key}#{value}")),
        (SORT_KEY, format!("{arn}#{name}")),
        ("CertificateArn", arn.to_string()),
        ("CertName", name.to_string()),
        ("TargetTagKey", key.to_string()),
        ("TargetTagValue", value.to_string()),
        ("PassphraseSecretName", format!("cert-passphrase-{name}")),
        ("CertExpiryDate", "2027-06-01T00:00:00+00:00".to_string()),
        ("LastExportedDate", "2026-06-01T00:00:00+00:00".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), AttributeValue::S(v)))
    .collect()
}

fn import(env: &Env, table: &str, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let out = env
        .certflow_command(&env.endpoint)
        .args(["inventory", "import", "--from-table", table, "-o", "json"])
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn results(v: &serde_json::Value) -> Vec<(String, String)> {
    v["Rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["TagKeyValue"].as_str().unwrap().to_string(),
                r["Result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_rows_become_certflow_rows_once_and_hostile_ones_are_refused() {
    let env = Env::new().await;
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    let table = reference_table(&env).await;
    let arn = env.certificate(true).await;
    let web = unique("web");
    let api = unique("api");
    env.allow(&arn, "Tier", &web).await;
    for item in [
        reference_row(&arn, "web", "Tier", &web),
        reference_row(&arn, "api", "Tier", &api),
        reference_row(&arn, "x; rm -rf /", "Tier", "evil"),
        {
            let mut moved = reference_row(&arn, "moved", "Tier", "a");
            moved.insert("TagKeyValue".into(), AttributeValue::S("Tier#b".into()));
            moved
        },
    ] {
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    // A dry run says what it would do and writes nothing.
    let (ok, v, _) = import(&env, &table, &["--dry-run"]);
    assert!(!ok, "refused rows make the exit status non-zero");
    let mut r = results(&v);
    r.sort();
    assert_eq!(
        r,
        [
            (format!("Tier#{api}"), "would import".to_string()),
            ("Tier#b".into(), "refused".into()),
            ("Tier#evil".into(), "refused".into()),
            (format!("Tier#{web}"), "would import".into()),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b))
        .collect::<Vec<_>>()
    );
    let inventory = &env.deps.config.inventory_table;
    let scanned = ddb.scan().table_name(inventory).send().await.unwrap();
    assert_eq!(scanned.items().len(), 0, "a dry run wrote nothing");

    // The import: two rows in, two refused with their reason.
    let (ok, v, stderr) = import(&env, &table, &[]);
    assert!(!ok);
    assert!(stderr.contains("2 row(s) of"), "{stderr}");
    let rows = v["Rows"].as_array().unwrap();
    let reason = |tkv: &str| {
        rows.iter()
            .find(|r| r["TagKeyValue"] == tkv)
            .and_then(|r| r["Reason"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        reason("Tier#evil").contains("invalid CertName"),
        "{}",
        reason("Tier#evil")
    );
    assert!(
        reason("Tier#b").contains("does not match"),
        "{}",
        reason("Tier#b")
    );
    // The certificate does not list the api target yet: the output says how to allow it.
    let missing = &v["TargetsNotAllowed"];
    assert_eq!(missing[0]["Targets"][0], format!("Tier={api}"));
    assert!(missing[0]["Allow"]
        .as_str()
        .unwrap()
        .contains("add-tags-to-certificate"));
    let scanned = ddb.scan().table_name(inventory).send().await.unwrap();
    let imported: Vec<InventoryRow> = scanned
        .items()
        .iter()
        .map(|i| InventoryRow::from_item(i).unwrap())
        .collect();
    assert_eq!(imported.len(), 2);
    let row = imported.iter().find(|r| r.cert_name == "web").unwrap();
    assert_eq!(row.target_tag_value, web);
    assert_eq!(
        row.cert_expiry_date.as_deref(),
        Some("2027-06-01T00:00:00+00:00")
    );
    assert_eq!(row.serial, None);
    assert_eq!(
        row.secret_name, None,
        "certflow never uses the reference's secret"
    );

    // Again: nothing changes.
    let (_, v, _) = import(&env, &table, &[]);
    let again: Vec<String> = results(&v)
        .into_iter()
        .filter(|(_, res)| res != "refused")
        .map(|(_, res)| res)
        .collect();
    assert_eq!(again, ["present", "present"]);

    // A renewal of the certificate takes the imported rows over: the allowed target's
    // export installs on its server, into a secret of certflow's own.
    let servers = env.instances(1, "Tier", &web);
    let worker = env.worker("w1");
    let acm = aws_sdk_acm::Client::new(&env.sdk);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while acm
        .describe_certificate()
        .certificate_arn(&arn)
        .send()
        .await
        .unwrap()
        .certificate()
        .and_then(|c| c.status())
        .map(|s| s.as_str() != "ISSUED")
        .unwrap_or(true)
    {
        assert!(tokio::time::Instant::now() < until);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let parent_id = env.submit_renewal(&arn).await;
    let parent = env.wait(&parent_id).await;
    worker.stop().await;
    assert_eq!(
        parent.status,
        JobStatus::Succeeded,
        "{:?}",
        parent.last_error
    );
    let st: RenewState = serde_json::from_value(parent.data.clone()).unwrap();
    assert_eq!(
        (st.tally.started, st.tally.succeeded),
        (2, 1),
        "api is not allowed yet"
    );
    assert_eq!(env.fleet().received(&servers[0]).len(), 1);
    let secret = env.secret_name("web", "Tier", &web);
    assert_eq!(
        env.fleet().received(&servers[0])[0].parameters["SecretId"],
        [secret]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_reconcile_takes_imported_rows_over_without_waiting_for_a_renewal() {
    let env = Env::new().await;
    let table = reference_table(&env).await;
    let web = unique("web");
    let servers = env.instances(2, "Tier", &web);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &web).await;
    aws_sdk_dynamodb::Client::new(&env.sdk)
        .put_item()
        .table_name(&table)
        .set_item(Some(reference_row(&arn, "web", "Tier", &web)))
        .send()
        .await
        .unwrap();
    let (ok, _, stderr) = import(&env, &table, &[]);
    assert!(ok, "{stderr}");
    let worker = env.worker("w1");
    // The emulator issues after a few seconds; a reconcile before then alerts instead.
    let acm = aws_sdk_acm::Client::new(&env.sdk);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while workflows::reconcile::certificate(&acm, &arn)
        .await
        .unwrap()
        .status
        .as_deref()
        != Some("ISSUED")
    {
        assert!(tokio::time::Instant::now() < until);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let new = workflows::reconcile::new_job("test", None).unwrap();
    let id = env.jobs.create(new).await.unwrap().record.job_id;
    let rec = env.wait(&id).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let st: workflows::reconcile::ReconcileState = serde_json::from_value(rec.data).unwrap();
    assert_eq!((st.counts.exports, st.tally.succeeded), (1, 1), "{st:?}");
    let secret = env.secret_name("web", "Tier", &web);
    for server in &servers {
        let got = env.fleet().received(server);
        assert_eq!(got.len(), 1, "{server}");
        assert_eq!(got[0].parameters["SecretId"], std::slice::from_ref(&secret));
    }
}
