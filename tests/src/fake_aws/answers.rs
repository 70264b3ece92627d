//! The fake's answers that are fixed shapes: ACM's certificate, SSM's document, DynamoDB's
//! generic answers, and the certificate material.

use base64::Engine as _;

use super::Certificate;

/// An encrypted private key as ACM exports it (its content is never parsed).
pub(super) const ENCRYPTED_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQIc2Vj\n-----END ENCRYPTED PRIVATE KEY-----\n";

/// A 16-byte serial for certificate number `n` (first byte below 0x80: a positive INTEGER).
pub(super) fn serial_bytes(n: u64) -> Vec<u8> {
    let mut out = vec![0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71];
    out.extend_from_slice(&n.to_be_bytes());
    out
}

/// A PEM "certificate": the smallest DER the install document's serial check and the
/// export step's fingerprint read (`SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER
/// serial } }`), not a certificate anyone could verify.
pub(super) fn pem(serial: &[u8]) -> String {
    let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, serial.len() as u8];
    tbs.extend_from_slice(serial);
    let mut inner = vec![0x30, tbs.len() as u8];
    inner.extend_from_slice(&tbs);
    let mut der = vec![0x30, inner.len() as u8];
    der.extend_from_slice(&inner);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
}

/// A uuid-shaped id from a counter.
pub(super) fn uuid(n: u64) -> String {
    format!("0f1ee7a0-0000-4000-8000-{n:012x}")
}

/// ACM's `DescribeCertificate` answer (API reference: `CertificateDetail`).
pub(super) fn describe_certificate(arn: &str, c: &Certificate) -> serde_json::Value {
    serde_json::json!({
        "Certificate": {
            "CertificateArn": arn,
            "DomainName": c.domain,
            "SubjectAlternativeNames": [c.domain],
            "Serial": c.serial,
            "Subject": format!("CN={}", c.domain),
            "Issuer": "Amazon",
            "CreatedAt": 1.7e9,
            "IssuedAt": 1.7e9,
            "NotBefore": 1.7e9,
            "NotAfter": 1.9e9,
            "Status": "ISSUED",
            "KeyAlgorithm": "RSA_2048",
            "SignatureAlgorithm": "SHA256WITHRSA",
            "InUseBy": [],
            "Type": "AMAZON_ISSUED",
            "RenewalEligibility": "ELIGIBLE",
            "Options": {
                "CertificateTransparencyLoggingPreference": "ENABLED",
                "Export": "ENABLED"
            }
        }
    })
}

/// SSM's `DescribeDocument` answer (API reference: `DocumentDescription`): a SHA-256 hash
/// to pin commands to, and the install document's parameters, `CertflowJob` included.
pub(super) fn describe_document(name: &str) -> serde_json::Value {
    let parameters: Vec<_> = [
        "CertName",
        "SecretId",
        "Region",
        "CertDir",
        "KeyDir",
        "ReloadService",
        "VerifyPort",
        "VerifyName",
        workflows::export_certificate::JOB_PARAMETER,
    ]
    .iter()
    .map(|p| serde_json::json!({ "Name": p, "Type": "String", "DefaultValue": "" }))
    .collect();
    serde_json::json!({
        "Document": {
            "Name": name,
            "Hash": "5e0b4b1b0b8c9e6f4a3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a09f8e",
            "HashType": "Sha256",
            "Owner": "123456789012",
            "CreatedDate": 1.7e9,
            "Status": "Active",
            "DocumentVersion": "1",
            "Description": "Installs a certificate exported by certflow",
            "Parameters": parameters,
            "PlatformTypes": ["Linux"],
            "DocumentType": "Command",
            "SchemaVersion": "2.2",
            "LatestVersion": "1",
            "DefaultVersion": "1",
            "DocumentFormat": "YAML"
        }
    })
}

/// DynamoDB answered as a fresh inventory table: every write succeeds, nothing is found.
pub(super) fn dynamodb(op: &str) -> Result<serde_json::Value, (u16, &'static str, String)> {
    Ok(match op {
        "GetItem" | "UpdateItem" | "PutItem" | "DeleteItem" | "TransactWriteItems" => {
            serde_json::json!({})
        }
        "Query" | "Scan" => serde_json::json!({ "Items": [], "Count": 0, "ScannedCount": 0 }),
        "BatchWriteItem" => serde_json::json!({ "UnprocessedItems": {} }),
        "BatchGetItem" => serde_json::json!({ "Responses": {}, "UnprocessedKeys": {} }),
        other => return Err(super::unknown("dynamodb", other)),
    })
}
