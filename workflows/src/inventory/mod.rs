//! The inventory table: which certificate is installed where (the reference schema, plus
//! what certflow knows more), and its index by certificate for renewals.
//!
//! Table, key and attribute names are defined here once; [`InventoryRow`] is a row and its
//! codec. The two calls the workflows make on the table (set attributes of a row, list the
//! rows of a certificate) are here too, so that no step builds an item by hand.

pub mod reference;
mod row;
mod servers;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use engine::StepError;

use crate::aws::classify;

pub use row::{InstallEnd, InventoryRow, LastStatus, RowError};
pub(crate) use servers::{observe, record_installs, write_export};
pub use servers::{Recorded, MAX_RECORDED_SERVERS};

/// A DynamoDB item (or key) of the table.
pub type Item = HashMap<String, AttributeValue>;

/// Default table name.
pub const DEFAULT_TABLE: &str = "certflow-inventory";
/// Partition key: `<TargetTagKey>#<TargetTagValue>`.
pub const PK: &str = "TagKeyValue";
/// Sort key: `<CertificateArn>#<CertName>`.
pub const SK: &str = "CertificateArnCertName";
/// Index of rows by certificate (renewal fan-out reads it; never a Scan).
pub const BY_CERTIFICATE: &str = "ByCertificateArn";

/// The names of a row's other attributes (the key's are [`PK`] and [`SK`]). Users read
/// the table, so these names and their formats do not change.
pub mod attr {
    /// The certificate's ARN (also the hash key of [`super::BY_CERTIFICATE`]).
    pub const CERTIFICATE_ARN: &str = "CertificateArn";
    /// File-name stem on the servers.
    pub const CERT_NAME: &str = "CertName";
    /// Tag key selecting the servers.
    pub const TARGET_TAG_KEY: &str = "TargetTagKey";
    /// Tag value selecting the servers.
    pub const TARGET_TAG_VALUE: &str = "TargetTagValue";
    /// When the certificate was last exported, RFC 3339.
    pub const LAST_EXPORTED_DATE: &str = "LastExportedDate";
    /// The export job that wrote the row last.
    pub const LAST_JOB_ID: &str = "LastJobId";
    /// `EXPORTED`, `INSTALLED` or `INSTALL_FAILED`.
    pub const LAST_STATUS: &str = "LastStatus";
    /// Name of the secret holding passphrase and bundle (one per target and name).
    pub const SECRET_NAME: &str = "SecretName";
    /// Name of the passphrase secret, in rows written before one secret held both (read
    /// only; the next export removes it).
    pub const PASSPHRASE_SECRET_NAME: &str = "PassphraseSecretName";
    /// Name of the bundle secret, in rows written before one secret held both (read only;
    /// the next export removes it).
    pub const BUNDLE_SECRET_NAME: &str = "BundleSecretName";
    /// The certificate's expiry, RFC 3339.
    pub const CERT_EXPIRY_DATE: &str = "CertExpiryDate";
    /// The certificate's serial.
    pub const SERIAL: &str = "Serial";
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub const FINGERPRINT: &str = "Fingerprint";
    /// When the last install succeeded on every server, RFC 3339.
    pub const LAST_INSTALLED_DATE: &str = "LastInstalledDate";
    /// How many servers the last successful install reached (a number attribute).
    pub const INSTALLED_INSTANCES: &str = "InstalledInstances";
    /// How many of them were verified serving the installed serial after the reload
    /// (0 when verification is off; a number attribute).
    pub const VERIFIED_INSTANCES: &str = "VerifiedInstances";
    /// The serial [`INSTANCES_AT_SERIAL`] is about. When it differs from [`SERIAL`] (a new
    /// export), no server is known to run the row's certificate yet.
    pub const INSTANCES_SERIAL: &str = "InstancesSerial";
    /// The servers that installed [`INSTANCES_SERIAL`] (a string set of instance ids; set
    /// union, so a batch recorded twice changes nothing).
    pub const INSTANCES_AT_SERIAL: &str = "InstancesAtSerial";
    /// How many servers carried the row's target when certflow last looked (a reconcile,
    /// or the plan of an install; a number attribute).
    pub const TARGET_INSTANCES: &str = "TargetInstances";
    /// When that was, RFC 3339.
    pub const TARGET_SEEN_DATE: &str = "TargetSeenDate";
}

/// The row key of a (target, certificate, name).
pub fn key(tag_key: &str, tag_value: &str, arn: &str, name: &str) -> Item {
    HashMap::from([
        (
            PK.to_string(),
            AttributeValue::S(format!("{tag_key}#{tag_value}")),
        ),
        (SK.to_string(), AttributeValue::S(format!("{arn}#{name}"))),
    ])
}

/// Sets `attributes` on the row at `key` (creating the row if needed) and removes the
/// attributes named in `remove`, leaving its other attributes as they are: running it
/// twice gives the same row.
pub(crate) async fn set(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
    attributes: Vec<(&'static str, AttributeValue)>,
    remove: &[&'static str],
) -> Result<(), StepError> {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    for (i, (name, value)) in attributes.into_iter().enumerate() {
        names.insert(format!("#a{i}"), name.to_string());
        values.insert(format!(":v{i}"), value);
        sets.push(format!("#a{i} = :v{i}"));
    }
    let mut expression = format!("SET {}", sets.join(", "));
    if !remove.is_empty() {
        let mut removes = Vec::new();
        for (i, name) in remove.iter().enumerate() {
            names.insert(format!("#r{i}"), name.to_string());
            removes.push(format!("#r{i}"));
        }
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    client
        .update_item()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(expression)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .send()
        .await
        .map_err(|e| classify("UpdateItem (inventory)", &e))?;
    Ok(())
}

/// The row at `key`, read consistently; `None` when there is none.
pub(crate) async fn get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
) -> Result<Option<InventoryRow>, StepError> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| classify("GetItem (inventory)", &e))?;
    out.item()
        .map(|item| InventoryRow::from_item(item).map_err(|e| StepError::abort(e.to_string())))
        .transpose()
}

/// One page of the whole table (a reconcile reads every row), at most `limit` rows
/// read, from `start` (the previous page's last key); returns the rows and the next
/// page's start, `None` after the last page. Items that are not rows certflow wrote are
/// returned as errors, so the caller can say which.
pub async fn scan_page(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    start: Option<Item>,
    limit: i32,
) -> Result<(Vec<Result<InventoryRow, (Item, RowError)>>, Option<Item>), StepError> {
    let page = client
        .scan()
        .table_name(table)
        .limit(limit)
        .set_exclusive_start_key(start)
        .send()
        .await
        .map_err(|e| classify("Scan (inventory)", &e))?;
    let rows = page
        .items()
        .iter()
        .map(|item| InventoryRow::from_item(item).map_err(|e| (item.clone(), e)))
        .collect();
    Ok((rows, page.last_evaluated_key().cloned()))
}

/// Every row of certificate `arn`, through the [`BY_CERTIFICATE`] index (never a Scan).
pub(crate) async fn rows_of_certificate(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    arn: &str,
) -> Result<Vec<Item>, StepError> {
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .index_name(BY_CERTIFICATE)
            .key_condition_expression(format!("{} = :a", attr::CERTIFICATE_ARN))
            .expression_attribute_values(":a", AttributeValue::S(arn.to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("Query (inventory by certificate)", &e))?;
        rows.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(rows);
        }
    }
}

/// Creates the inventory table and its index; fine if it exists.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), aws_sdk_dynamodb::Error> {
    let s = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let k = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
    };
    let result = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(s(PK)?)
        .attribute_definitions(s(SK)?)
        .attribute_definitions(s(attr::CERTIFICATE_ARN)?)
        .key_schema(k(PK, KeyType::Hash)?)
        .key_schema(k(SK, KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(BY_CERTIFICATE)
                .key_schema(k(attr::CERTIFICATE_ARN, KeyType::Hash)?)
                .key_schema(k(PK, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
