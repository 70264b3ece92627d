//! The inventory table: which certificate is installed where (the reference schema, plus
//! what certflow knows more), and its index by certificate for renewals.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};

/// Default table name.
pub const DEFAULT_TABLE: &str = "certflow-inventory";
/// Partition key: `<TargetTagKey>#<TargetTagValue>`.
pub const PK: &str = "TagKeyValue";
/// Sort key: `<CertificateArn>#<CertName>`.
pub const SK: &str = "CertificateArnCertName";
/// Index of rows by certificate (renewal fan-out reads it; never a Scan).
pub const BY_CERTIFICATE: &str = "ByCertificateArn";

/// The row key of a (target, certificate, name).
pub fn key(
    tag_key: &str,
    tag_value: &str,
    arn: &str,
    name: &str,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PK.to_string(),
            AttributeValue::S(format!("{tag_key}#{tag_value}")),
        ),
        (SK.to_string(), AttributeValue::S(format!("{arn}#{name}"))),
    ])
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
        .attribute_definitions(s("CertificateArn")?)
        .key_schema(k(PK, KeyType::Hash)?)
        .key_schema(k(SK, KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(BY_CERTIFICATE)
                .key_schema(k("CertificateArn", KeyType::Hash)?)
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
