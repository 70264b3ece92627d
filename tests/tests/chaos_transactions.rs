//! The fault proxy's DynamoDB transaction isolation
//! (`FaultProxy::isolate_dynamodb_transactions`), which the chaos tests rely on: the
//! transactions it runs behave as DynamoDB's do (all or nothing, cancellation reasons,
//! the old item on request), and concurrent writes through it are never lost — which the
//! emulator's own transactions do not guarantee.
//!
//! Run with the emulator: `cargo test -p certflow-tests --test chaos_transactions`.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use certflow_tests::proxy::FaultProxy;
use certflow_tests::unique;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

async fn setup() -> (Client, Client, String, FaultProxy) {
    let upstream = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let sdk = certflow_tests::emulator().await;
    let proxy = FaultProxy::start(&upstream, 1).await;
    proxy.isolate_dynamodb_transactions(true);
    let direct = Client::new(&sdk);
    let via = Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(proxy.url())
            .build(),
    );
    let table = unique("txn");
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
    direct
        .create_table()
        .table_name(&table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    (direct, via, table, proxy)
}

fn put(table: &str, pk: &str, sk: &str, v: &str, condition: Option<&str>) -> TransactWriteItem {
    let mut p = Put::builder()
        .table_name(table)
        .item("pk", s(pk))
        .item("sk", s(sk))
        .item("v", s(v));
    if let Some(c) = condition {
        p = p
            .condition_expression(c)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    }
    TransactWriteItem::builder().put(p.build().unwrap()).build()
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

async fn value(c: &Client, table: &str, pk: &str, sk: &str) -> Option<String> {
    c.get_item()
        .table_name(table)
        .set_key(Some(key(pk, sk)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .and_then(|i| i.get("v").and_then(|v| v.as_s().ok()).cloned())
}

#[tokio::test]
async fn transactions_are_all_or_nothing_with_dynamodbs_answers() {
    let (direct, via, table, proxy) = setup().await;
    // Both writes land.
    via.transact_write_items()
        .transact_items(put(
            &table,
            "a",
            "JOB",
            "1",
            Some("attribute_not_exists(pk)"),
        ))
        .transact_items(put(
            &table,
            "a",
            "H#1",
            "h1",
            Some("attribute_not_exists(pk)"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        value(&direct, &table, "a", "JOB").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&direct, &table, "a", "H#1").await.as_deref(),
        Some("h1")
    );

    // The second condition fails: the first write is undone, the reasons say which.
    let err = via
        .transact_write_items()
        .transact_items(put(&table, "a", "JOB", "2", Some("attribute_exists(pk)")))
        .transact_items(put(
            &table,
            "a",
            "H#1",
            "again",
            Some("attribute_not_exists(pk)"),
        ))
        .send()
        .await
        .unwrap_err();
    let tc = err.into_service_error();
    assert!(tc.is_transaction_canceled_exception(), "{tc:?}");
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(tc) = tc else {
        unreachable!()
    };
    let codes: Vec<_> = tc
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or_default().to_string())
        .collect();
    assert_eq!(codes, ["None", "ConditionalCheckFailed"]);
    // The old item, as asked for.
    let old = tc.cancellation_reasons()[1].item().expect("old item");
    assert_eq!(old.get("v"), Some(&s("h1")));
    assert_eq!(
        value(&direct, &table, "a", "JOB").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&direct, &table, "a", "H#1").await.as_deref(),
        Some("h1")
    );

    // A new item written before a failing condition is removed again.
    let err = via
        .transact_write_items()
        .transact_items(put(&table, "b", "JOB", "1", None))
        .transact_items(put(&table, "a", "JOB", "x", Some("v = :no")))
        .send()
        .await;
    assert!(err.is_err(), "a condition without its value is refused");
    assert_eq!(value(&direct, &table, "b", "JOB").await, None);

    // Update, Delete and ConditionCheck.
    via.transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&table)
                        .set_key(Some(key("a", "JOB")))
                        .update_expression("SET v = :v")
                        .condition_expression("v = :old")
                        .expression_attribute_values(":v", s("3"))
                        .expression_attribute_values(":old", s("1"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&table)
                        .set_key(Some(key("a", "H#1")))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&table)
                        .set_key(Some(key("c", "JOB")))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        value(&direct, &table, "a", "JOB").await.as_deref(),
        Some("3")
    );
    assert_eq!(value(&direct, &table, "a", "H#1").await, None);
    let probe = direct
        .get_item()
        .table_name(&table)
        .set_key(Some(key("c", "JOB")))
        .send()
        .await
        .unwrap();
    assert!(probe.item.is_none(), "the condition check left an item");
    // The emulator never saw a transaction.
    assert!(proxy
        .calls()
        .iter()
        .all(|c| c.operation != "TransactWriteItems" || c.forwarded));
}

/// The emulator's own transactions lose concurrent writes (a failing transaction puts a
/// copy of the table back); through the isolating proxy, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_survive_failing_transactions() {
    let (direct, via, table, _proxy) = setup().await;
    for i in 0..300 {
        direct
            .put_item()
            .table_name(&table)
            .item("pk", s(&format!("filler-{i}")))
            .item("sk", s("x"))
            .item("v", s(&"x".repeat(200)))
            .send()
            .await
            .unwrap();
    }
    via.put_item()
        .table_name(&table)
        .item("pk", s("exists"))
        .item("sk", s("x"))
        .send()
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = {
        let (via, table, stop) = (via.clone(), table.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = via
                    .transact_write_items()
                    .transact_items(put(
                        &table,
                        "exists",
                        "x",
                        "",
                        Some("attribute_not_exists(pk)"),
                    ))
                    .send()
                    .await;
                assert!(r.is_err());
                n += 1;
            }
            n
        })
    };
    let mut acked = Vec::new();
    for i in 0..200 {
        let k = format!("acked-{i}");
        via.put_item()
            .table_name(&table)
            .item("pk", s(&k))
            .item("sk", s("x"))
            .send()
            .await
            .unwrap();
        acked.push(k);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed_transactions = failing.await.unwrap();
    let mut lost = Vec::new();
    for k in &acked {
        let got = direct
            .get_item()
            .table_name(&table)
            .set_key(Some(key(k, "x")))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        if got.item.is_none() {
            lost.push(k.clone());
        }
    }
    assert!(failed_transactions > 0);
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
