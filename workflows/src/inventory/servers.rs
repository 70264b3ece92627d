//! Which servers run a row's certificate: the row's fleet state.
//!
//! A row records the servers that installed its certificate as a string set,
//! [`attr::INSTANCES_AT_SERIAL`], beside the serial that set is about,
//! [`attr::INSTANCES_SERIAL`]. Reconciling compares it with the servers carrying the target
//! now: those not in it lag.
//!
//! 1. **A new export starts an empty set.** The export's `inventory` step sets the new
//!    serial and, when the set was about another serial, removes the set in the same write
//!    ([`write_export`]). Run again, it finds the set about its own serial and keeps it.
//! 2. **Installs only add.** After each batch, the servers that installed are added to the
//!    set ([`record_installs`]), on the condition that the set is about the job's serial: a
//!    job still installing an older certificate adds nothing (and says so). A set union
//!    makes a batch recorded twice change nothing.
//! 3. **A reconcile prunes.** Servers that no longer carry the target leave the set, and
//!    the count of servers carrying it is written with the time ([`observe`]).
//!
//! A DynamoDB item holds at most 400 KB, so a row records at most about
//! [`MAX_RECORDED_SERVERS`] servers; beyond that the install goes on and the row says
//! nothing more (the job's own entries still name every server).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use engine::StepError;

use super::{attr, Item};
use crate::aws::classify;

/// About how many server ids fit in a row (20 bytes each, under DynamoDB's 400 KB item).
pub const MAX_RECORDED_SERVERS: usize = 15_000;

/// What a [`record_installs`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The servers were added to the row's set.
    Added,
    /// The row has moved on to another serial: nothing was written.
    Stale {
        /// The row's serial now.
        row_serial: Option<String>,
    },
    /// The row would exceed DynamoDB's item size: nothing was written.
    TooLarge,
}

/// The export's write of its row: `attributes` set, the attributes named in `remove`
/// removed, and the installed-servers set emptied when it was about another serial than
/// `serial` (rule 1). One call in the usual cases (a new row, a new serial).
pub(crate) async fn write_export(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
    serial: &str,
    attributes: Vec<(&'static str, AttributeValue)>,
    remove: &[&'static str],
) -> Result<(), StepError> {
    let mut reset = attributes.clone();
    reset.push((
        attr::INSTANCES_SERIAL,
        AttributeValue::S(serial.to_string()),
    ));
    let mut gone = remove.to_vec();
    gone.push(attr::INSTANCES_AT_SERIAL);
    let update = Update::new(&reset, &gone, None).condition(
        "attribute_not_exists(#c0) OR #c0 <> :c0",
        attr::INSTANCES_SERIAL,
        serial,
    );
    match update.send(client, table, key.clone()).await {
        Ok(()) => Ok(()),
        Err(e) if is_condition_failed(&e) => {
            // The set is about this serial already (the same certificate exported again,
            // or this step run twice): keep it.
            Update::new(&attributes, remove, None)
                .send(client, table, key)
                .await
                .map_err(|e| classify("UpdateItem (inventory)", &e))
        }
        Err(e) => Err(classify("UpdateItem (inventory)", &e)),
    }
}

/// Adds `servers`, which installed `serial`, to the row's set, and sets `attributes`
/// (how the install ended) in the same write; both only if the row's set is about
/// `serial` (rule 2). A row from before the set existed, whose `Serial` is `serial`,
/// starts its set here.
pub(crate) async fn record_installs(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
    serial: &str,
    servers: &[String],
    attributes: Vec<(&'static str, AttributeValue)>,
) -> Result<Recorded, StepError> {
    let add = (!servers.is_empty()).then_some(servers);
    let op = "UpdateItem (inventory servers)";
    for _ in 0..2 {
        let update = Update::new(&attributes, &[], add).condition(
            "#c0 = :c0",
            attr::INSTANCES_SERIAL,
            serial,
        );
        match update.send(client, table, key.clone()).await {
            Ok(()) => return Ok(Recorded::Added),
            Err(e) if is_too_large(&e) => return Ok(Recorded::TooLarge),
            Err(e) if !is_condition_failed(&e) => return Err(classify(op, &e)),
            Err(_) => {}
        }
        // The set is about another serial, or there is none: start it, if the row's
        // certificate is still this one.
        let mut start = attributes.clone();
        start.push((
            attr::INSTANCES_SERIAL,
            AttributeValue::S(serial.to_string()),
        ));
        let mut replace = Update::new(&start, &[], None);
        if let Some(ids) = add {
            replace.set_servers(ids);
        } else {
            replace.remove.push(attr::INSTANCES_AT_SERIAL.to_string());
        }
        let replace = replace.condition("#c0 = :c0", attr::SERIAL, serial).and(
            "(attribute_not_exists(#c1) OR #c1 <> :c0)",
            attr::INSTANCES_SERIAL,
        );
        match replace.send(client, table, key.clone()).await {
            Ok(()) => return Ok(Recorded::Added),
            Err(e) if is_too_large(&e) => return Ok(Recorded::TooLarge),
            Err(e) if !is_condition_failed(&e) => return Err(classify(op, &e)),
            Err(_) => {}
        }
        // Either the row's serial is another (stale), or someone started the set for this
        // serial in between (then the first write succeeds on the next turn).
        let row = client
            .get_item()
            .table_name(table)
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .projection_expression("#s")
            .expression_attribute_names("#s", attr::SERIAL)
            .send()
            .await
            .map_err(|e| classify("GetItem (inventory)", &e))?;
        let row_serial = row
            .item()
            .and_then(|i| i.get(attr::SERIAL))
            .and_then(|v| v.as_s().ok())
            .cloned();
        if row_serial.as_deref() != Some(serial) {
            return Ok(Recorded::Stale { row_serial });
        }
    }
    Err(StepError::retry(
        "inventory servers: the row changed under two writes in a row",
    ))
}

/// A reconcile's look at the row's target: `carrying` servers carry it now, and those in
/// `departed` (in the set, not carrying the target any more) leave the set (rule 3).
pub(crate) async fn observe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
    carrying: u64,
    date: &str,
    departed: &[String],
) -> Result<(), StepError> {
    let attributes = vec![
        (
            attr::TARGET_INSTANCES,
            AttributeValue::N(carrying.to_string()),
        ),
        (attr::TARGET_SEEN_DATE, AttributeValue::S(date.to_string())),
    ];
    let mut update = Update::new(&attributes, &[], None);
    if !departed.is_empty() {
        update.delete = Some(departed.to_vec());
    }
    // Only a row that still exists: a row deleted meanwhile is not made again.
    let update = update.condition_exists(attr::CERTIFICATE_ARN);
    match update.send(client, table, key).await {
        Ok(()) => Ok(()),
        Err(e) if is_condition_failed(&e) => Ok(()),
        Err(e) => Err(classify("UpdateItem (inventory observation)", &e)),
    }
}

type UpdateError =
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>;

fn is_condition_failed(e: &UpdateError) -> bool {
    e.as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception())
}

fn is_too_large(e: &UpdateError) -> bool {
    e.as_service_error().is_some_and(|e| {
        e.code() == Some("ValidationException") && e.message().is_some_and(|m| m.contains("size"))
    })
}

/// One UpdateItem: SET, REMOVE, ADD and DELETE on the servers set, and a condition.
#[derive(Debug, Default)]
struct Update {
    set: Vec<(String, AttributeValue)>,
    remove: Vec<String>,
    add: Option<Vec<String>>,
    delete: Option<Vec<String>>,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    fn new(
        set: &[(&'static str, AttributeValue)],
        remove: &[&'static str],
        add: Option<&[String]>,
    ) -> Update {
        Update {
            set: set
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            remove: remove.iter().map(|n| n.to_string()).collect(),
            add: add.map(<[String]>::to_vec),
            ..Update::default()
        }
    }

    /// Sets the servers set to exactly `ids`.
    fn set_servers(&mut self, ids: &[String]) {
        self.set.push((
            attr::INSTANCES_AT_SERIAL.to_string(),
            AttributeValue::Ss(ids.to_vec()),
        ));
    }

    /// The condition `expression`, where `#c0` is `name` and `:c0` is `value`.
    fn condition(mut self, expression: &str, name: &str, value: &str) -> Update {
        self.names.insert("#c0".into(), name.to_string());
        self.values
            .insert(":c0".into(), AttributeValue::S(value.to_string()));
        self.condition = Some(expression.to_string());
        self
    }

    /// `AND expression`, where `#c1` is `name`.
    fn and(mut self, expression: &str, name: &str) -> Update {
        self.names.insert("#c1".into(), name.to_string());
        let c = self.condition.take().unwrap_or_default();
        self.condition = Some(format!("({c}) AND {expression}"));
        self
    }

    /// The condition that the attribute `name` exists.
    fn condition_exists(mut self, name: &str) -> Update {
        self.names.insert("#c0".into(), name.to_string());
        self.condition = Some("attribute_exists(#c0)".into());
        self
    }

    async fn send(
        mut self,
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        key: Item,
    ) -> Result<(), UpdateError> {
        let mut clauses = Vec::new();
        let mut sets = Vec::new();
        for (i, (name, value)) in std::mem::take(&mut self.set).into_iter().enumerate() {
            self.names.insert(format!("#a{i}"), name);
            self.values.insert(format!(":v{i}"), value);
            sets.push(format!("#a{i} = :v{i}"));
        }
        if !sets.is_empty() {
            clauses.push(format!("SET {}", sets.join(", ")));
        }
        if !self.remove.is_empty() {
            let mut names = Vec::new();
            for (i, name) in self.remove.iter().enumerate() {
                self.names.insert(format!("#r{i}"), name.clone());
                names.push(format!("#r{i}"));
            }
            clauses.push(format!("REMOVE {}", names.join(", ")));
        }
        for (verb, ids) in [("ADD", self.add.take()), ("DELETE", self.delete.take())] {
            if let Some(ids) = ids.filter(|ids| !ids.is_empty()) {
                let placeholder = format!(":{}", verb.to_ascii_lowercase());
                self.names
                    .insert("#servers".into(), attr::INSTANCES_AT_SERIAL.to_string());
                self.values
                    .insert(placeholder.clone(), AttributeValue::Ss(ids));
                clauses.push(format!("{verb} #servers {placeholder}"));
            }
        }
        client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(clauses.join(" "))
            .set_condition_expression(self.condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .send()
            .await?;
        Ok(())
    }
}
