//! Entries: a job's per-item results, kept beside its record instead of in it.
//!
//! A job that acts on many things (a thousand servers, three hundred child jobs) records
//! one **entry** per thing, so that its record, which every commit rewrites, stays small
//! whatever their number. The record keeps only what decides the next step (counts, the
//! first failures); the entries keep the rest, for the operator.
//!
//! An entry lives in a named **collection** of its job (`servers`, `children`), under a
//! **key** unique in that collection (a server's id), in a **group** (a short word the
//! workflow chooses, such as `failed` or `ok`) that a listing can filter on, with a JSON
//! **data** document.
//!
//! # Rules
//!
//! 1. An entry is written whole, and a later write of the same key replaces it: writing
//!    the same observation twice changes nothing, so a step that runs again (a retry, a
//!    duplicate task, a holder that lost its lease) may write its entries again.
//! 2. Entries are written with the commit of the task whose steps wrote them
//!    ([`EntryWrites`]): in the commit's own transaction when they fit in it, else just
//!    before it. A crash before the commit loses them with the decisions they belong to,
//!    and the steps that run again write them again; the record never names an entry that
//!    was not written. Until then, the task's own steps read them as if written.
//! 3. Entries expire with the job's history (the job's deadline plus the retention).
//! 4. Listings are in key order, and a page's cursor is the last key it returned.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::Millis;

/// Longest collection name, in bytes.
pub const MAX_COLLECTION_LEN: usize = 32;
/// Longest entry key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Longest group name, in bytes.
pub const MAX_GROUP_LEN: usize = 32;

/// One entry of a job's collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique in its collection; listings are in key order.
    pub key: String,
    /// A short word listings can filter on (`failed`, `ok`, `pending`, …).
    pub group: String,
    /// What the workflow records about the item.
    pub data: serde_json::Value,
    /// When it was written (set by the store), epoch milliseconds.
    #[serde(default)]
    pub at: Millis,
}

impl Entry {
    /// An entry of `data` under `key`, in `group`.
    pub fn new(key: impl Into<String>, group: impl Into<String>, data: serde_json::Value) -> Self {
        Entry {
            key: key.into(),
            group: group.into(),
            data,
            at: 0,
        }
    }
}

/// Which groups a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Groups {
    /// Every entry.
    #[default]
    All,
    /// Only entries in these groups.
    Only(Vec<String>),
    /// Every entry not in these groups.
    Except(Vec<String>),
}

impl Groups {
    /// Whether an entry in `group` is listed.
    pub fn admits(&self, group: &str) -> bool {
        match self {
            Groups::All => true,
            Groups::Only(g) => g.iter().any(|x| x == group),
            Groups::Except(g) => !g.iter().any(|x| x == group),
        }
    }
}

/// The entries a task's steps wrote, waiting for the task's commit (rule 2): one per
/// collection and key, a later write replacing an earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryWrites {
    by_key: BTreeMap<(String, String), Entry>,
}

impl EntryWrites {
    /// Adds `entries` to `collection`, each replacing an earlier write of its key.
    pub fn put(&mut self, collection: &str, entries: &[Entry]) {
        for e in entries {
            self.by_key
                .insert((collection.to_string(), e.key.clone()), e.clone());
        }
    }

    /// How many entries are waiting.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The waiting entries, by collection then key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.by_key.iter().map(|((c, _), e)| (c.as_str(), e))
    }

    /// The waiting entries grouped by collection, for stores that write a collection at a
    /// time.
    pub fn by_collection(&self) -> BTreeMap<&str, Vec<Entry>> {
        let mut out: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
        for (c, e) in self.iter() {
            out.entry(c).or_default().push(e.clone());
        }
        out
    }

    /// `stored` (a whole collection as the store lists it, in `groups`, in key order) as
    /// it reads once the waiting writes of `collection` land.
    pub fn overlay(&self, collection: &str, groups: &Groups, stored: Vec<Entry>) -> Vec<Entry> {
        let mine: BTreeMap<&str, &Entry> = self
            .iter()
            .filter(|(c, _)| *c == collection)
            .map(|(_, e)| (e.key.as_str(), e))
            .collect();
        if mine.is_empty() {
            return stored;
        }
        let mut all: BTreeMap<String, Entry> = stored
            .into_iter()
            .filter(|e| !mine.contains_key(e.key.as_str()))
            .map(|e| (e.key.clone(), e))
            .collect();
        for (k, e) in mine {
            if groups.admits(&e.group) {
                all.insert(k.to_string(), e.clone());
            }
        }
        all.into_values().collect()
    }
}

/// One page of a collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryPage {
    /// The entries, in key order.
    pub entries: Vec<Entry>,
    /// Pass back as `after` for the next page, when there may be more.
    pub next: Option<String>,
}

/// Why an entry cannot be stored.
pub(crate) fn invalid(collection: &str, entry: Option<&Entry>) -> Option<String> {
    let name_ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name_ok(collection, MAX_COLLECTION_LEN) {
        return Some(format!(
            "entry collection {collection:?}: 1 to {MAX_COLLECTION_LEN} letters, digits, '-' or '_'"
        ));
    }
    let e = entry?;
    if e.key.is_empty() || e.key.len() > MAX_KEY_LEN || e.key.chars().any(char::is_control) {
        return Some(format!(
            "entry key {:?} in {collection}: 1 to {MAX_KEY_LEN} bytes, no control characters",
            e.key
        ));
    }
    if !name_ok(&e.group, MAX_GROUP_LEN) {
        return Some(format!(
            "entry group {:?} of {} in {collection}: 1 to {MAX_GROUP_LEN} letters, digits, '-' or '_'",
            e.group, e.key
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_filter_as_named() {
        assert!(Groups::All.admits("x"));
        let only = Groups::Only(vec!["failed".into()]);
        assert!(only.admits("failed") && !only.admits("ok"));
        let except = Groups::Except(vec!["failed".into()]);
        assert!(!except.admits("failed") && except.admits("ok"));
    }

    #[test]
    fn waiting_writes_replace_what_the_store_lists() {
        let e = |k: &str, g: &str| Entry::new(k, g, serde_json::json!({ "g": g }));
        let mut w = EntryWrites::default();
        w.put("servers", &[e("b", "ok"), e("c", "pending")]);
        w.put("servers", &[e("c", "failed")]);
        w.put("children", &[e("x", "ok")]);
        assert_eq!(w.len(), 4 - 1, "one write per collection and key");
        let stored = vec![e("a", "pending"), e("b", "pending"), e("c", "pending")];
        let all = w.overlay("servers", &Groups::All, stored.clone());
        let seen: Vec<_> = all
            .iter()
            .map(|x| (x.key.as_str(), x.group.as_str()))
            .collect();
        assert_eq!(seen, [("a", "pending"), ("b", "ok"), ("c", "failed")]);
        // A waiting write that moves an entry out of the groups asked for hides it.
        let pending = Groups::Only(vec!["pending".into()]);
        let stored_pending = stored.clone();
        let only = w.overlay("servers", &pending, stored_pending);
        let keys: Vec<_> = only.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(keys, ["a"]);
        assert_eq!(w.overlay("other", &Groups::All, stored.clone()), stored);
        assert_eq!(w.by_collection()["children"].len(), 1);
    }

    #[test]
    fn names_keys_and_groups_are_checked() {
        let ok = Entry::new("i-0123", "ok", serde_json::json!({}));
        assert_eq!(invalid("servers", Some(&ok)), None);
        assert!(invalid("", None).is_some());
        assert!(invalid("a#b", None).unwrap().contains("collection"));
        let bad_key = Entry::new("a\nb", "ok", serde_json::json!({}));
        assert!(invalid("servers", Some(&bad_key)).unwrap().contains("key"));
        let bad_group = Entry::new("k", "no way", serde_json::json!({}));
        assert!(invalid("servers", Some(&bad_group))
            .unwrap()
            .contains("group"));
    }
}
