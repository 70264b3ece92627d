//! The paging cursor of the store's listings
//! ([`Page::cursor`](crate::backend::Page::cursor)): a query's last evaluated key, as text
//! the caller hands back for the next page.
//!
//! The cursor is a JSON object of string values. That is enough because every key attribute
//! of the table and of its indexes is a string ([`schema`](crate::schema)). A cursor comes
//! back from outside (the CLI's `--cursor` carries it), so one that is not such an object is
//! an error, never a panic.

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::Item;

/// The cursor of a page that ended at `key`.
pub(super) fn encode_cursor(key: &Item) -> String {
    let map: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(s) => Some((k.clone(), serde_json::Value::String(s.clone()))),
            _ => None,
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The key to start the next page after; the error says the cursor is invalid.
pub(super) fn decode_cursor(cursor: &str) -> Result<Item, String> {
    let invalid = || format!("invalid cursor {cursor:?}");
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(cursor).map_err(|_| invalid())?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, AttributeValue::S(s))),
            _ => Err(invalid()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::schema;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_string())
    }

    #[test]
    fn a_cursor_round_trips() {
        let key: Item = HashMap::from([
            (schema::PK.to_string(), s("j\"1 with \\ and ü")),
            (schema::SK.to_string(), s(schema::RECORD_ITEM)),
            (schema::STATUS_ATTR.to_string(), s("FAILED")),
            (
                schema::UPDATED_AT_ATTR.to_string(),
                s("2023-11-14T22:13:20.123Z"),
            ),
        ]);
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
    }

    #[test]
    fn an_empty_key_round_trips() {
        assert_eq!(
            decode_cursor(&encode_cursor(&Item::new())).unwrap(),
            Item::new()
        );
    }

    #[test]
    fn garbage_is_an_error_naming_the_cursor() {
        for garbage in [
            "",
            "nope",
            "{",
            "{\"a\": 1}",
            "{\"a\": null}",
            "{\"a\": {\"S\": \"x\"}}",
            "[\"a\"]",
            "\"a\"",
            "42",
        ] {
            assert_eq!(
                decode_cursor(garbage),
                Err(format!("invalid cursor {garbage:?}")),
                "{garbage}"
            );
        }
    }
}
