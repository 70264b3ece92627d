//! The reference solution's inventory table (`CertTagMapping`) and how one of its rows
//! becomes a row of certflow's inventory, so that users of the reference keep their
//! inventory (`certflow inventory import --from-table`).
//!
//! The reference's table has partition key `TagKeyValue` (`<key>#<value>`) and a sort key
//! attribute named `CertificateArn#CertName` (`<arn>#<name>`), with `CertificateArn`,
//! `CertName`, `TargetTagKey`, `TargetTagValue`, `PassphraseSecretName`, `CertExpiryDate`
//! and `LastExportedDate`. Every field is checked as an export request's is (a row naming
//! a hostile `CertName` is refused, never imported), and the keys must agree with the
//! attributes. The reference's passphrase secret is kept only as a name to show
//! (`PassphraseSecretName`, which certflow's next export of the row removes): certflow never
//! reads it, and exports into a secret of its own. No `Serial` is imported, so the next
//! renewal, or reconcile, exports the certificate anew for the row.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{attr, InventoryRow, Item, PK};
use crate::export_certificate::ExportRequest;

/// The sort key attribute of the reference's table.
pub const SORT_KEY: &str = "CertificateArn#CertName";

/// A string attribute of a reference row, if present and a string.
fn string<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

/// certflow's row for a row of the reference's table, or why it cannot be imported.
pub fn from_reference(item: &Item) -> Result<InventoryRow, String> {
    let required = |name: &str| string(item, name)?.ok_or_else(|| format!("{name} is missing"));
    let request = ExportRequest {
        certificate_arn: required(attr::CERTIFICATE_ARN)?.to_string(),
        cert_name: required(attr::CERT_NAME)?.to_string(),
        target_tag_key: required(attr::TARGET_TAG_KEY)?.to_string(),
        target_tag_value: required(attr::TARGET_TAG_VALUE)?.to_string(),
        ..ExportRequest::default()
    };
    request.validate().map_err(|e| e.to_string())?;
    let mut row = InventoryRow::new(
        &request.target_tag_key,
        &request.target_tag_value,
        &request.certificate_arn,
        &request.cert_name,
    );
    for (name, expected) in [
        (PK, row.tag_key_value()),
        (SORT_KEY, row.certificate_arn_cert_name()),
    ] {
        let found = required(name)?;
        if found != expected {
            return Err(format!(
                "{name} {found:?} does not match the row's attributes ({expected:?})"
            ));
        }
    }
    row.cert_expiry_date = string(item, attr::CERT_EXPIRY_DATE)?.map(str::to_string);
    row.last_exported_date = string(item, attr::LAST_EXPORTED_DATE)?.map(str::to_string);
    row.passphrase_secret_name = string(item, attr::PASSPHRASE_SECRET_NAME)?.map(str::to_string);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:acm:us-east-1:123456789012:certificate/abc";

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
            .collect()
    }

    fn good() -> Vec<(&'static str, String)> {
        vec![
            ("TagKeyValue", "Environment#Production".into()),
            (SORT_KEY, format!("{ARN}#web")),
            ("CertificateArn", ARN.into()),
            ("CertName", "web".into()),
            ("TargetTagKey", "Environment".into()),
            ("TargetTagValue", "Production".into()),
            ("PassphraseSecretName", "reference/passphrase-web".into()),
            ("CertExpiryDate", "2027-01-02T00:00:00Z".into()),
            ("LastExportedDate", "2026-01-02T00:00:00Z".into()),
        ]
    }

    fn as_item(pairs: &[(&'static str, String)]) -> Item {
        item(
            &pairs
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn a_reference_row_becomes_a_row_without_a_serial() {
        let row = from_reference(&as_item(&good())).unwrap();
        assert_eq!(row.tag_key_value(), "Environment#Production");
        assert_eq!(row.certificate_arn_cert_name(), format!("{ARN}#web"));
        assert_eq!(
            row.cert_expiry_date.as_deref(),
            Some("2027-01-02T00:00:00Z")
        );
        assert_eq!(
            row.passphrase_secret_name.as_deref(),
            Some("reference/passphrase-web")
        );
        assert_eq!(row.serial, None, "the next renewal or reconcile exports it");
        assert_eq!(row.secret_name, None);
        // What certflow stores reads back as a certflow row.
        assert_eq!(InventoryRow::from_item(&row.to_item()).unwrap(), row);
    }

    #[test]
    fn hostile_or_inconsistent_rows_are_refused_with_the_reason() {
        let mut hostile = good();
        hostile[3].1 = "x; rm -rf /".into();
        hostile[1].1 = format!("{ARN}#x; rm -rf /");
        let why = from_reference(&as_item(&hostile)).unwrap_err();
        assert!(why.contains("CertName"), "{why}");

        let mut moved = good();
        moved[0].1 = "Environment#Staging".into();
        let why = from_reference(&as_item(&moved)).unwrap_err();
        assert!(
            why.contains("TagKeyValue") && why.contains("does not match"),
            "{why}"
        );

        let mut missing = good();
        missing.retain(|(k, _)| *k != "TargetTagKey");
        let why = from_reference(&as_item(&missing)).unwrap_err();
        assert_eq!(why, "TargetTagKey is missing");

        let mut number = as_item(&good());
        number.insert("CertName".into(), AttributeValue::N("7".into()));
        assert_eq!(
            from_reference(&number).unwrap_err(),
            "CertName is not a string"
        );
    }
}
