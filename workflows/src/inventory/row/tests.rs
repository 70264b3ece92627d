//! Unit tests of `row`.

use super::*;

const ARN: &str = "arn:aws:acm:us-east-1:123456789012:certificate/abc";

fn full() -> InventoryRow {
    InventoryRow {
        last_exported_date: Some("2025-01-02T03:04:05.000Z".into()),
        last_job_id: Some("job-1".into()),
        last_status: Some(LastStatus::Installed),
        secret_name: Some("certflow/web/Environment=prod".into()),
        passphrase_secret_name: Some("certflow/web/passphrase".into()),
        bundle_secret_name: Some("certflow/web/bundle".into()),
        cert_expiry_date: Some("2026-01-02T00:00:00.000Z".into()),
        serial: Some("0a:1b".into()),
        fingerprint: Some("ff00".into()),
        last_installed_date: Some("2025-01-02T03:05:00.000Z".into()),
        installed_instances: Some(3),
        ..InventoryRow::new("Environment", "prod", ARN, "web")
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

#[test]
fn the_item_keeps_the_table_s_attribute_names_and_formats() {
    let item = full().to_item();
    let expected: Item = [
        ("TagKeyValue", s("Environment#prod")),
        ("CertificateArnCertName", s(&format!("{ARN}#web"))),
        ("CertificateArn", s(ARN)),
        ("CertName", s("web")),
        ("TargetTagKey", s("Environment")),
        ("TargetTagValue", s("prod")),
        ("LastExportedDate", s("2025-01-02T03:04:05.000Z")),
        ("LastJobId", s("job-1")),
        ("LastStatus", s("INSTALLED")),
        ("SecretName", s("certflow/web/Environment=prod")),
        ("PassphraseSecretName", s("certflow/web/passphrase")),
        ("BundleSecretName", s("certflow/web/bundle")),
        ("CertExpiryDate", s("2026-01-02T00:00:00.000Z")),
        ("Serial", s("0a:1b")),
        ("Fingerprint", s("ff00")),
        ("LastInstalledDate", s("2025-01-02T03:05:00.000Z")),
        ("InstalledInstances", AttributeValue::N("3".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(item, expected);
}

#[test]
fn round_trip() {
    let row = full();
    assert_eq!(InventoryRow::from_item(&row.to_item()), Ok(row));
    let bare = InventoryRow::new("Role", "db", ARN, "db-cert");
    assert_eq!(bare.to_item().len(), 6);
    assert_eq!(InventoryRow::from_item(&bare.to_item()), Ok(bare));
}

#[test]
fn the_export_sets_its_attributes_in_a_fixed_order_without_absent_ones() {
    let row = InventoryRow {
        last_status: Some(LastStatus::Exported),
        serial: Some("01".into()),
        ..InventoryRow::new("k", "v", ARN, "n")
    };
    let names: Vec<&str> = row.attributes().iter().map(|(n, _)| *n).collect();
    let expected = [
        "CertificateArn",
        "CertName",
        "TargetTagKey",
        "TargetTagValue",
    ];
    assert_eq!(names[..4], expected);
    assert_eq!(names[4..], ["LastStatus", "Serial"]);
    assert_eq!(row.attributes()[4].1, s("EXPORTED"));
}

#[test]
fn install_ends_set_status_date_and_count() {
    let installed = InstallEnd::Installed {
        date: "t".into(),
        instances: 2,
        verified: 1,
    };
    assert_eq!(
        installed.attributes(),
        vec![
            ("LastStatus", s("INSTALLED")),
            ("LastInstalledDate", s("t")),
            ("InstalledInstances", AttributeValue::N("2".into())),
            ("VerifiedInstances", AttributeValue::N("1".into())),
        ]
    );
    assert_eq!(
        InstallEnd::Failed.attributes(),
        vec![("LastStatus", s("INSTALL_FAILED"))]
    );
}

#[test]
fn the_fleet_state_is_read_and_counts_only_the_row_s_serial() {
    let mut item = full().to_item();
    item.insert("InstancesSerial".into(), s("0a:1b"));
    item.insert(
        "InstancesAtSerial".into(),
        AttributeValue::Ss(vec!["i-2".into(), "i-1".into()]),
    );
    item.insert("TargetInstances".into(), AttributeValue::N("5".into()));
    item.insert("TargetSeenDate".into(), s("t"));
    let row = InventoryRow::from_item(&item).unwrap();
    assert_eq!(row.current_servers().len(), 2);
    assert_eq!(row.lagging(), Some(3));
    assert_eq!(row.target_seen_date.as_deref(), Some("t"));
    // A new export (another serial) has reached no server yet.
    let renewed = InventoryRow {
        serial: Some("0c".into()),
        ..row.clone()
    };
    assert!(renewed.current_servers().is_empty());
    assert_eq!(renewed.lagging(), Some(5));
    assert_eq!(full().lagging(), None, "never looked");
    // The fleet state is the install steps' to write, never the export's.
    let names: Vec<&str> = row.attributes().iter().map(|(n, _)| *n).collect();
    assert!(!names.contains(&"InstancesAtSerial") && !names.contains(&"InstancesSerial"));
    item.insert("InstancesAtSerial".into(), s("i-1"));
    assert_eq!(
        InventoryRow::from_item(&item).unwrap_err().to_string(),
        "inventory row attribute InstancesAtSerial is not a string set"
    );
}

#[test]
fn a_missing_attribute_is_named() {
    for name in [
        "CertName",
        "TargetTagKey",
        "TargetTagValue",
        "CertificateArn",
        "TagKeyValue",
        "CertificateArnCertName",
    ] {
        let mut item = full().to_item();
        item.remove(name);
        let err = InventoryRow::from_item(&item).unwrap_err();
        assert!(matches!(err, RowError::Missing(n) if n == name), "{err}");
        assert_eq!(
            err.to_string(),
            format!("inventory row has no {name} attribute")
        );
    }
}

#[test]
fn an_ill_typed_attribute_is_named() {
    let mut item = full().to_item();
    item.insert("Serial".into(), AttributeValue::N("1".into()));
    assert_eq!(
        InventoryRow::from_item(&item).unwrap_err().to_string(),
        "inventory row attribute Serial is not a string"
    );
    let mut item = full().to_item();
    item.insert("InstalledInstances".into(), s("3"));
    assert_eq!(
        InventoryRow::from_item(&item).unwrap_err(),
        RowError::WrongType {
            name: "InstalledInstances",
            expected: "a number"
        }
    );
    let mut item = full().to_item();
    item.insert("CertName".into(), AttributeValue::Bool(true));
    assert!(matches!(
        InventoryRow::from_item(&item),
        Err(RowError::WrongType {
            name: "CertName",
            ..
        })
    ));
}

#[test]
fn a_bad_value_is_named() {
    let mut item = full().to_item();
    item.insert("LastStatus".into(), s("DONE"));
    assert_eq!(
        InventoryRow::from_item(&item).unwrap_err().to_string(),
        "inventory row attribute LastStatus has value \"DONE\", which is not EXPORTED, INSTALLED or INSTALL_FAILED"
    );
    let mut item = full().to_item();
    item.insert("TagKeyValue".into(), s("Environment#test"));
    assert!(matches!(
        InventoryRow::from_item(&item),
        Err(RowError::BadValue {
            name: "TagKeyValue",
            ..
        })
    ));
    let mut item = full().to_item();
    item.insert("InstalledInstances".into(), AttributeValue::N("1.5".into()));
    assert!(matches!(
        InventoryRow::from_item(&item),
        Err(RowError::BadValue {
            name: "InstalledInstances",
            ..
        })
    ));
}

#[test]
fn last_statuses_keep_their_names() {
    for (st, wire) in [
        (LastStatus::Exported, "EXPORTED"),
        (LastStatus::Installed, "INSTALLED"),
        (LastStatus::InstallFailed, "INSTALL_FAILED"),
    ] {
        assert_eq!(st.to_string(), wire);
        assert_eq!(LastStatus::parse(wire), Some(st));
    }
    assert_eq!(LastStatus::parse("installed"), None);
}
