//! The DynamoDB transaction isolator (see [`FaultProxy::isolate_dynamodb_transactions`]):
//! with it on, the proxy runs each `TransactWriteItems` itself, alone, as single-item
//! conditional calls (and puts back what it wrote when a condition fails), because the
//! emulator's own transactions are not fit for several workers on one table.
//!
//! [`FaultProxy::isolate_dynamodb_transactions`]: super::FaultProxy::isolate_dynamodb_transactions

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::request::Parts;
use hyper::http::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use serde_json::Value;
use tokio::sync::RwLock;

use super::answers::request_id;
use super::lock;
use super::server::{end_to_end, Upstream};

/// Runs DynamoDB transactions in the proxy, one at a time, when switched on.
pub(super) struct Isolator {
    on: AtomicBool,
    /// Held for writing by a transaction, for reading by every other DynamoDB call.
    gate: RwLock<()>,
    /// Key attribute names per DynamoDB table, for the transactions the proxy runs.
    key_schemas: Mutex<HashMap<String, Vec<String>>>,
}

impl Isolator {
    /// Off.
    pub(super) fn new() -> Isolator {
        Isolator {
            on: AtomicBool::new(false),
            gate: RwLock::new(()),
            key_schemas: Mutex::new(HashMap::new()),
        }
    }

    /// Switches it on or off (for the calls that arrive from now on).
    pub(super) fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// [`Upstream::forward`], or, for DynamoDB with isolation on, behind the gate:
    /// transactions run by the proxy alone, every other call beside the others.
    pub(super) async fn forward(
        &self,
        upstream: &Upstream,
        service: &str,
        operation: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Bytes>, String> {
        if service != "dynamodb" || !self.on.load(Ordering::SeqCst) {
            return upstream.forward(parts, body).await;
        }
        if operation == "TransactWriteItems" {
            let _alone = self.gate.write().await;
            match self
                .parse_transaction(upstream, &parts.headers, &body)
                .await
            {
                Some(items) => run_transaction(upstream, &parts.headers, &items).await,
                None => upstream.forward(parts, body).await,
            }
        } else {
            let _shared = self.gate.read().await;
            upstream.forward(parts, body).await
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxKind {
    Put,
    Update,
    Delete,
    ConditionCheck,
}

/// One item of a `TransactWriteItems` request.
struct TxItem {
    kind: TxKind,
    table: String,
    key: serde_json::Map<String, Value>,
    /// The item's own request fields (`TableName`, `Item` or `Key`, the condition, …).
    spec: serde_json::Map<String, Value>,
    wants_old: bool,
}

const DYNAMODB_JSON: &str = "application/x-amz-json-1.0";

fn json_answer(status: u16, body: &Value) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = res.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(DYNAMODB_JSON));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-amzn-requestid", v);
    }
    res
}

impl Upstream {
    /// One DynamoDB call upstream, with the client's headers but this operation and body
    /// (the emulator does not check signatures). Returns the status and the JSON answer.
    async fn dynamodb(
        &self,
        headers: &HeaderMap,
        operation: &str,
        body: &Value,
    ) -> Result<(u16, Value), String> {
        let mut uri = self.uri.clone().into_parts();
        uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(uri).map_err(|e| format!("upstream URI: {e}"))?;
        let mut req = Request::builder()
            .method("POST")
            .uri(uri)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("request: {e}"))?;
        let mut h = end_to_end(headers);
        let target = HeaderValue::from_str(&format!("DynamoDB_20120810.{operation}"))
            .map_err(|e| format!("target: {e}"))?;
        h.insert("x-amz-target", target);
        *req.headers_mut() = h;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("upstream body: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

impl Isolator {
    /// The key attribute names of a table (asked once).
    async fn key_schema(
        &self,
        upstream: &Upstream,
        headers: &HeaderMap,
        table: &str,
    ) -> Option<Vec<String>> {
        if let Some(k) = lock(&self.key_schemas).get(table) {
            return Some(k.clone());
        }
        let (status, v) = upstream
            .dynamodb(
                headers,
                "DescribeTable",
                &serde_json::json!({ "TableName": table }),
            )
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let names: Vec<String> = v["Table"]["KeySchema"]
            .as_array()?
            .iter()
            .filter_map(|k| k["AttributeName"].as_str().map(str::to_string))
            .collect();
        lock(&self.key_schemas).insert(table.to_string(), names.clone());
        Some(names)
    }

    /// The items of a `TransactWriteItems` request; `None` for anything it does not
    /// understand (the emulator then gets the request as it is).
    async fn parse_transaction(
        &self,
        upstream: &Upstream,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Vec<TxItem>> {
        let req: Value = serde_json::from_slice(body).ok()?;
        let raw = req.get("TransactItems")?.as_array()?;
        let mut items: Vec<TxItem> = Vec::new();
        for entry in raw {
            let entry = entry.as_object()?;
            if entry.len() != 1 {
                return None;
            }
            let (kind, spec) = entry.iter().next()?;
            let kind = match kind.as_str() {
                "Put" => TxKind::Put,
                "Update" => TxKind::Update,
                "Delete" => TxKind::Delete,
                "ConditionCheck" => TxKind::ConditionCheck,
                _ => return None,
            };
            let spec = spec.as_object()?.clone();
            let table = spec.get("TableName")?.as_str()?.to_string();
            let key = if kind == TxKind::Put {
                let item = spec.get("Item")?.as_object()?;
                let mut key = serde_json::Map::new();
                for name in self.key_schema(upstream, headers, &table).await? {
                    let v = item.get(&name)?.clone();
                    key.insert(name, v);
                }
                key
            } else {
                spec.get("Key")?.as_object()?.clone()
            };
            // Two operations on one item: the emulator's own validation error.
            if items.iter().any(|i| i.table == table && i.key == key) {
                return None;
            }
            let wants_old = spec
                .get("ReturnValuesOnConditionCheckFailure")
                .and_then(Value::as_str)
                == Some("ALL_OLD");
            items.push(TxItem {
                kind,
                table,
                key,
                spec,
                wants_old,
            });
        }
        (!items.is_empty()).then_some(items)
    }
}

/// Runs the items one by one as conditional single-item calls; on the first that
/// fails, puts back what the earlier ones changed.
async fn run_transaction(
    upstream: &Upstream,
    headers: &HeaderMap,
    items: &[TxItem],
) -> Result<Response<Bytes>, String> {
    let mut done: Vec<(&TxItem, Option<Value>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let step = run_item(upstream, headers, item).await;
        let (old, status, answer) = match step {
            Ok(r) => r,
            Err(e) => {
                undo(upstream, headers, &done).await;
                return Err(e);
            }
        };
        if status == 200 {
            if item.kind == TxKind::ConditionCheck {
                // The check wrote the item back unchanged, or wrote its bare key:
                // remove that at once.
                if old.is_none() {
                    undo(upstream, headers, &[(item, None)]).await;
                }
            } else {
                done.push((item, old));
            }
            continue;
        }
        undo(upstream, headers, &done).await;
        let failed = answer["__type"]
            .as_str()
            .is_some_and(|t| t.ends_with("ConditionalCheckFailedException"));
        if !failed {
            // The emulator's own error (validation and the like), as it gave it.
            return Ok(json_answer(status, &answer));
        }
        let mut reasons = vec![serde_json::json!({ "Code": "None" }); items.len()];
        let mut reason = serde_json::json!({
            "Code": "ConditionalCheckFailed",
            "Message": "The conditional request failed",
        });
        if let (true, Some(old)) = (item.wants_old, answer.get("Item")) {
            reason["Item"] = old.clone();
        }
        reasons[i] = reason;
        let codes: Vec<&str> = reasons
            .iter()
            .map(|r| r["Code"].as_str().unwrap_or("None"))
            .collect();
        let body = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": format!(
                "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                codes.join(", ")
            ),
            "CancellationReasons": reasons,
        });
        return Ok(json_answer(400, &body));
    }
    Ok(json_answer(200, &serde_json::json!({})))
}

/// One item: reads its old image, then makes its write under its condition. Returns
/// the old image (`None`: no item, or nothing to put back) and the write's answer.
async fn run_item(
    upstream: &Upstream,
    headers: &HeaderMap,
    item: &TxItem,
) -> Result<(Option<Value>, u16, Value), String> {
    let (status, got) = upstream
        .dynamodb(
            headers,
            "GetItem",
            &serde_json::json!({
                "TableName": item.table,
                "Key": item.key,
                "ConsistentRead": true,
            }),
        )
        .await?;
    if status != 200 {
        return Ok((None, status, got));
    }
    let old = got.get("Item").cloned();
    let mut spec = item.spec.clone();
    spec.insert(
        "ReturnValuesOnConditionCheckFailure".into(),
        "ALL_OLD".into(),
    );
    let op = match item.kind {
        TxKind::Put => "PutItem",
        TxKind::Update => "UpdateItem",
        TxKind::Delete => "DeleteItem",
        TxKind::ConditionCheck => {
            // No write of its own: the item is put back as it is, under the condition.
            spec.remove("Key");
            let image = old.clone().unwrap_or(Value::Object(item.key.clone()));
            spec.insert("Item".into(), image);
            "PutItem"
        }
    };
    let (status, answer) = upstream.dynamodb(headers, op, &Value::Object(spec)).await?;
    Ok((old, status, answer))
}

/// Puts back the items a cancelled transaction changed, last first.
async fn undo(upstream: &Upstream, headers: &HeaderMap, done: &[(&TxItem, Option<Value>)]) {
    for (item, old) in done.iter().rev() {
        let _ = match old {
            Some(image) => {
                upstream
                    .dynamodb(
                        headers,
                        "PutItem",
                        &serde_json::json!({ "TableName": item.table, "Item": image }),
                    )
                    .await
            }
            None => {
                upstream
                    .dynamodb(
                        headers,
                        "DeleteItem",
                        &serde_json::json!({ "TableName": item.table, "Key": item.key }),
                    )
                    .await
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An upstream nothing listens on: any call to it fails at once.
    fn nowhere() -> Upstream {
        Upstream::new(Uri::from_static("http://127.0.0.1:1"))
    }

    async fn parse(isolator: &Isolator, request: Value) -> Option<Vec<TxItem>> {
        isolator
            .parse_transaction(
                &nowhere(),
                &HeaderMap::new(),
                request.to_string().as_bytes(),
            )
            .await
    }

    fn key(pk: &str) -> Value {
        json!({ "pk": { "S": pk } })
    }

    #[tokio::test]
    async fn reads_the_items_of_a_transaction() {
        let isolator = Isolator::new();
        lock(&isolator.key_schemas).insert("jobs".into(), vec!["pk".into()]);
        let items = parse(
            &isolator,
            json!({ "TransactItems": [
                { "Put": { "TableName": "jobs",
                           "Item": { "pk": { "S": "a" }, "v": { "N": "1" } },
                           "ConditionExpression": "attribute_not_exists(pk)" } },
                { "Update": { "TableName": "jobs", "Key": key("b"),
                              "UpdateExpression": "SET v = :v",
                              "ReturnValuesOnConditionCheckFailure": "ALL_OLD" } },
                { "Delete": { "TableName": "jobs", "Key": key("c") } },
                { "ConditionCheck": { "TableName": "jobs", "Key": key("d"),
                                      "ConditionExpression": "attribute_exists(pk)" } },
            ]}),
        )
        .await
        .expect("a transaction it understands");
        let kinds: Vec<TxKind> = items.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                TxKind::Put,
                TxKind::Update,
                TxKind::Delete,
                TxKind::ConditionCheck
            ]
        );
        // A Put's key comes from its item, through the table's key schema.
        assert_eq!(Value::Object(items[0].key.clone()), key("a"));
        assert_eq!(Value::Object(items[3].key.clone()), key("d"));
        let wants_old: Vec<bool> = items.iter().map(|i| i.wants_old).collect();
        assert_eq!(wants_old, [false, true, false, false]);
        assert!(items.iter().all(|i| i.table == "jobs"));
    }

    #[tokio::test]
    async fn leaves_to_the_emulator_what_it_does_not_understand() {
        let isolator = Isolator::new();
        let update = |pk: &str| json!({ "Update": { "TableName": "jobs", "Key": key(pk) } });
        for request in [
            json!({}),
            json!({ "TransactItems": [] }),
            json!({ "TransactItems": [{ "Upsert": { "TableName": "jobs", "Key": key("a") } }] }),
            json!({ "TransactItems": [{ "Update": { "Key": key("a") } }] }),
            // Two operations on one item: the emulator's own validation error.
            json!({ "TransactItems": [update("a"), update("a")] }),
            // A Put on a table whose key schema cannot be read.
            json!({ "TransactItems": [{ "Put": { "TableName": "t", "Item": key("a") } }] }),
        ] {
            assert!(
                parse(&isolator, request.clone()).await.is_none(),
                "{request}"
            );
        }
        assert!(isolator
            .parse_transaction(&nowhere(), &HeaderMap::new(), b"not json")
            .await
            .is_none());
    }
}
