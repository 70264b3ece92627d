//! The codec's tests: layouts round-trip, and a malformed item names what is wrong.

use std::collections::BTreeSet;

use super::*;

const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A record with every optional field set (and a terminal status, so that it expires).
fn full_record() -> JobRecord {
    JobRecord {
        job_id: JobId::new("j-1"),
        workflow: "export".into(),
        status: JobStatus::Failed,
        step: "poll".into(),
        attempt: 2,
        version: 7,
        data: serde_json::json!({"a": [1, 2], "b": "x"}),
        labels: BTreeMap::from([("CertName".to_string(), "web".to_string())]),
        created_at: 1_700_000_000_123,
        updated_at: 1_700_000_100_456,
        next_wake_at: 1_700_000_200_000,
        deadline_at: 1_700_086_400_000,
        lease_owner: Some("w-1".into()),
        lease_until: Some(1_700_000_130_000),
        driven_by: Some("m-1".into()),
        last_error: Some("throttled".into()),
        cancel_requested: true,
        history_count: 4,
        expires_at: Some(1_700_000_100 + 30 * 24 * 3600),
        trace_parent: Some("00-abc-def-01".into()),
        request_digest: Some("sha256:00ff".into()),
    }
}

/// A running record with every optional field unset.
fn bare_record() -> JobRecord {
    JobRecord {
        status: JobStatus::Running,
        labels: BTreeMap::new(),
        lease_owner: None,
        lease_until: None,
        driven_by: None,
        last_error: None,
        cancel_requested: false,
        expires_at: None,
        trace_parent: None,
        request_digest: None,
        ..full_record()
    }
}

fn event() -> HistoryEvent {
    HistoryEvent {
        seq: 3,
        at: 1_700_000_100_456,
        kind: EventKind::RetryScheduled,
        step: "poll".into(),
        attempt: 2,
        duration_ms: Some(12),
        to_step: "poll".into(),
        to_status: JobStatus::Waiting,
        error: Some("throttled".into()),
        note: Some("3 left".into()),
        worker: "w-1".into(),
    }
}

/// The reason of a [`StoreError::Malformed`], or a panic naming what came instead.
fn reason<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Malformed { reason, .. }) => reason,
        other => panic!("expected a malformed item, got {other:?}"),
    }
}

#[test]
fn record_with_every_optional_field_round_trips() {
    let rec = full_record();
    let item = record_item(&rec, RETENTION);
    assert_eq!(item[schema::SK], s(schema::RECORD_ITEM));
    assert_eq!(item[schema::CREATED_AT_ATTR], s("2023-11-14T22:13:20.123Z"));
    assert_eq!(parse_record(&item).unwrap(), rec);
}

#[test]
fn record_without_optional_fields_round_trips() {
    let rec = bare_record();
    let item = record_item(&rec, RETENTION);
    for absent in [
        schema::LEASE_OWNER_ATTR,
        schema::LEASE_UNTIL_ATTR,
        schema::DRIVEN_BY_ATTR,
        schema::LAST_ERROR_ATTR,
        schema::TRACE_PARENT_ATTR,
        schema::TTL_ATTR,
    ] {
        assert!(!item.contains_key(absent), "{absent} written");
    }
    assert_eq!(parse_record(&item).unwrap(), rec);
}

#[test]
fn only_a_finished_record_expires_retention_after_its_last_update() {
    let mut rec = bare_record();
    for status in JobStatus::ALL {
        rec.status = status;
        let item = record_item(&rec, Duration::from_secs(60));
        let expected = status.is_terminal().then(|| n(1_700_000_100 + 60));
        assert_eq!(item.get(schema::TTL_ATTR).cloned(), expected, "{status:?}");
    }
}

#[test]
fn a_record_without_cancel_requested_reads_as_not_cancelled() {
    let mut item = record_item(&bare_record(), RETENTION);
    item.remove(schema::CANCEL_REQUESTED_ATTR);
    assert!(!parse_record(&item).unwrap().cancel_requested);
}

#[test]
fn the_reserved_attributes_are_exactly_what_the_engine_writes_on_a_record() {
    // Every optional field set and a finished job: every engine attribute is written.
    let item = record_item(&full_record(), RETENTION);
    let written: BTreeSet<&str> = item.keys().map(String::as_str).collect();
    let reserved: BTreeSet<&str> = schema::RESERVED_ATTRS.iter().copied().collect();
    assert_eq!(reserved.len(), schema::RESERVED_ATTRS.len(), "a name twice");
    assert_eq!(
        written.difference(&reserved).collect::<Vec<_>>(),
        [&"CertName"]
    );
    assert_eq!(reserved.difference(&written).count(), 0);
}

#[test]
fn labels_are_top_level_strings_and_never_shadow_the_engine() {
    let mut rec = bare_record();
    rec.labels = BTreeMap::from([
        ("CertName".to_string(), "web".to_string()),
        ("Empty".to_string(), String::new()),
        (schema::STEP_ATTR.to_string(), "forged".to_string()),
    ]);
    let item = record_item(&rec, RETENTION);
    assert_eq!(item["CertName"], s("web"));
    // An index key cannot be empty: the label is not stored.
    assert!(!item.contains_key("Empty"));
    assert_eq!(item[schema::STEP_ATTR], s(&rec.step));

    let back = parse_record(&item).unwrap();
    assert_eq!(
        back.labels,
        BTreeMap::from([("CertName".to_string(), "web".to_string())])
    );
}

#[test]
fn unknown_string_attributes_read_back_as_labels_and_others_are_ignored() {
    let mut item = record_item(&bare_record(), RETENTION);
    item.insert("Owner".into(), s("team-a"));
    item.insert("Count".into(), n(3));
    let back = parse_record(&item).unwrap();
    assert_eq!(
        back.labels,
        BTreeMap::from([("Owner".to_string(), "team-a".to_string())])
    );
}

#[test]
fn history_item_round_trips_and_expires_after_the_deadline() {
    let item = history_item(&full_record(), &event(), Duration::from_secs(60));
    assert_eq!(item[schema::SK], s("H#000003"));
    assert_eq!(item[schema::TTL_ATTR], n(1_700_086_400 + 60));
    assert_eq!(parse_event(&JobId::new("j-1"), &item).unwrap(), event());

    let bare = HistoryEvent {
        duration_ms: None,
        error: None,
        note: None,
        ..event()
    };
    let item = history_item(&full_record(), &bare, RETENTION);
    assert_eq!(parse_event(&JobId::new("j-1"), &item).unwrap(), bare);
}

#[test]
fn history_item_carries_no_index_attributes() {
    let item = history_item(&full_record(), &event(), RETENTION);
    for index_attr in [
        schema::STATUS_ATTR,
        schema::UPDATED_AT_ATTR,
        schema::CREATED_AT_ATTR,
        "CertName",
    ] {
        assert!(!item.contains_key(index_attr), "{index_attr} written");
    }
}

#[test]
fn a_record_key_names_the_record_item() {
    let key = record_key(&JobId::new("j-1"));
    assert_eq!(key.len(), 2);
    assert_eq!(key[schema::PK], s("j-1"));
    assert_eq!(key[schema::SK], s(schema::RECORD_ITEM));
}

/// What reading `item` with `name` set to `value` (or removed) reports.
fn malformed_after(
    read: impl Fn(&Item) -> Result<(), StoreError>,
    item: &Item,
    name: &str,
    value: Option<AttributeValue>,
) -> String {
    let mut item = item.clone();
    match value {
        Some(v) => item.insert(name.to_string(), v),
        None => item.remove(name),
    };
    reason(read(&item))
}

#[test]
fn a_malformed_record_names_the_attribute() {
    let good = record_item(&full_record(), RETENTION);
    let read = |item: &Item| parse_record(item).map(drop);
    for (name, value, expected) in [
        (schema::WORKFLOW_ATTR, None, "Workflow is missing"),
        (schema::VERSION_ATTR, None, "Version is missing"),
        (schema::STEP_ATTR, Some(n(1)), "Step is not a string"),
        (
            schema::ATTEMPT_ATTR,
            Some(s("2")),
            "Attempt is not a number",
        ),
        (
            schema::ATTEMPT_ATTR,
            Some(n(-1)),
            "Attempt = -1 is out of range",
        ),
        (
            schema::VERSION_ATTR,
            Some(n("1.5")),
            "Version = 1.5 is out of range",
        ),
        (
            schema::LEASE_UNTIL_ATTR,
            Some(s("soon")),
            "LeaseUntil is not a number",
        ),
        (
            schema::CANCEL_REQUESTED_ATTR,
            Some(s("yes")),
            "CancelRequested is not a boolean",
        ),
        (
            schema::STATUS_ATTR,
            Some(s("LOST")),
            "Status = \"LOST\" is not a status",
        ),
        (
            schema::UPDATED_AT_ATTR,
            Some(s("yesterday")),
            "UpdatedAt = \"yesterday\" is not RFC 3339",
        ),
    ] {
        assert_eq!(malformed_after(read, &good, name, value), expected);
    }
    let bad_data = malformed_after(read, &good, schema::DATA_ATTR, Some(s("{")));
    assert!(bad_data.starts_with("Data is not JSON"), "{bad_data}");
}

#[test]
fn a_malformed_record_names_its_job_when_it_can() {
    let mut item = record_item(&full_record(), RETENTION);
    item.remove(schema::HISTORY_COUNT_ATTR);
    let Err(StoreError::Malformed { job_id, reason }) = parse_record(&item) else {
        panic!("not malformed");
    };
    assert_eq!(
        (job_id.as_str(), reason.as_str()),
        ("j-1", "HistoryCount is missing")
    );

    item.insert(schema::PK.into(), n(1));
    let Err(StoreError::Malformed { job_id, reason }) = parse_record(&item) else {
        panic!("not malformed");
    };
    assert_eq!(
        (job_id.as_str(), reason.as_str()),
        ("?", "JobId is missing or not a string")
    );
}

#[test]
fn a_malformed_history_item_names_the_attribute() {
    let good = history_item(&full_record(), &event(), RETENTION);
    let read = |item: &Item| parse_event(&JobId::new("j-1"), item).map(drop);
    for (name, value, expected) in [
        (schema::WORKER_ATTR, None, "Worker is missing"),
        (schema::SEQ_ATTR, Some(s("3")), "Seq is not a number"),
        (
            schema::DURATION_MS_ATTR,
            Some(n(-5)),
            "DurationMs = -5 is out of range",
        ),
        (schema::NOTE_ATTR, Some(n(1)), "Note is not a string"),
        (
            schema::EVENT_ATTR,
            Some(s("exploded")),
            "Event = \"exploded\" is not an event kind",
        ),
        (
            schema::TO_STATUS_ATTR,
            Some(s("GONE")),
            "ToStatus = \"GONE\" is not a status",
        ),
    ] {
        assert_eq!(malformed_after(read, &good, name, value), expected);
    }
}

#[test]
fn an_entry_round_trips_under_its_collection_and_expires_with_the_history() {
    let id = JobId::new("j-1");
    let e = Entry::new("i-0abc", "failed", serde_json::json!({"Status": "Failed"}));
    let now = 1_700_000_000_123;
    let item = entry_item(&id, "servers", &e, now, 1_700_086_400_000, RETENTION);
    assert_eq!(item[schema::SK], s("E#servers#i-0abc"));
    assert!(
        !item.contains_key(schema::STATUS_ATTR),
        "entries stay out of the status index"
    );
    assert_eq!(
        item[schema::TTL_ATTR],
        n(1_700_086_400 + RETENTION.as_secs() as i64)
    );
    let back = parse_entry(&id, "servers", &item).unwrap();
    assert_eq!(back, Entry { at: now, ..e });
    let err = parse_entry(&id, "children", &item).unwrap_err().to_string();
    assert!(err.contains("not an entry of children"), "{err}");
}
