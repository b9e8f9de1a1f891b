//! What the reconcilers of store-backed kinds share: the store's owner record for a resource,
//! and the pure diffs between what a store row holds and what a resource declares (tags,
//! aliases). No I/O here; the reconcilers write the changes.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::store::KeyValue;
use crate::store::registry::{OWNER_TAG, Owner};

/// Tags under this prefix belong to MLflow itself (e.g. prompt markers) and are never removed
/// because git does not list them.
pub const SYSTEM_TAG_PREFIX: &str = "mlflow.";

/// The store's owner record for a resource.
pub fn owner_of<K: kube::Resource<DynamicType = ()>>(obj: &K) -> Owner {
    Owner {
        namespace: obj.namespace().unwrap_or_default(),
        kind: K::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
    }
}

/// A spec tag map as store tags.
pub fn tags_of(tags: Option<&BTreeMap<String, String>>) -> Vec<KeyValue> {
    tags.into_iter()
        .flatten()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect()
}

/// What to write so that a row's tags become the declared map.
#[derive(Debug, PartialEq)]
pub struct TagChanges {
    /// Declared tags that are missing or have another value.
    pub set: Vec<KeyValue>,
    /// Keys present but not declared, except MLflow's own (`mlflow.`) and the store's record
    /// of the owner ([`OWNER_TAG`]).
    pub delete: Vec<String>,
}

/// Compares a row's `current` tags with the `declared` map (the whole tag set a resource owns).
pub fn tag_changes(current: &[KeyValue], declared: &BTreeMap<String, String>) -> TagChanges {
    let set = declared
        .iter()
        .filter(|(key, value)| {
            current.iter().find(|t| &t.key == *key).map(|t| &t.value) != Some(*value)
        })
        .map(|(key, value)| KeyValue::new(key, value))
        .collect();
    let delete = current
        .iter()
        .filter(|t| {
            !declared.contains_key(&t.key)
                && !t.key.starts_with(SYSTEM_TAG_PREFIX)
                && t.key != OWNER_TAG
        })
        .map(|t| t.key.clone())
        .collect();
    TagChanges { set, delete }
}

/// One alias to point at a version.
#[derive(Debug, PartialEq, Eq)]
pub struct AliasMove {
    pub alias: String,
    pub to: i64,
}

/// What to write so that a model's aliases become the declared map.
#[derive(Debug, PartialEq, Eq)]
pub struct AliasChanges {
    /// Declared aliases that are missing or point elsewhere, in alias order.
    pub set: Vec<AliasMove>,
    /// Aliases present but not declared, in alias order.
    pub delete: Vec<String>,
}

/// Compares a model's `current` (alias, version) pairs with the `declared` map (the whole
/// alias set a resource owns).
pub fn alias_changes(current: &[(String, i64)], declared: &BTreeMap<String, i64>) -> AliasChanges {
    let current: BTreeMap<&str, i64> = current
        .iter()
        .map(|(alias, version)| (alias.as_str(), *version))
        .collect();
    let set = declared
        .iter()
        .filter(|(alias, to)| current.get(alias.as_str()) != Some(*to))
        .map(|(alias, &to)| AliasMove {
            alias: alias.clone(),
            to,
        })
        .collect();
    let delete = current
        .keys()
        .filter(|alias| !declared.contains_key(**alias))
        .map(|alias| (*alias).to_owned())
        .collect();
    AliasChanges { set, delete }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_changes_set_what_differs_and_delete_what_is_undeclared() {
        let current = vec![
            KeyValue::new("owner", "growth"),
            KeyValue::new("stale", "x"),
            KeyValue::new("team", "old"),
            KeyValue::new("mlflow.prompt.is_prompt", "false"),
        ];
        let declared = BTreeMap::from([
            ("owner".to_owned(), "growth".to_owned()),
            ("team".to_owned(), "new".to_owned()),
            ("tier".to_owned(), "gold".to_owned()),
        ]);
        assert_eq!(
            tag_changes(&current, &declared),
            TagChanges {
                set: vec![KeyValue::new("team", "new"), KeyValue::new("tier", "gold")],
                delete: vec!["stale".to_owned()],
            }
        );
    }

    #[test]
    fn tag_changes_of_matching_tags_are_empty_and_an_empty_map_clears_all_but_system_tags() {
        let current = vec![
            KeyValue::new("owner", "growth"),
            KeyValue::new("mlflow.note.content", "kept"),
            KeyValue::new(OWNER_TAG, "team-a/RegisteredModel/churn"),
        ];
        let declared = BTreeMap::from([("owner".to_owned(), "growth".to_owned())]);
        assert_eq!(
            tag_changes(&current, &declared),
            TagChanges {
                set: vec![],
                delete: vec![],
            }
        );
        assert_eq!(
            tag_changes(&current, &BTreeMap::new()),
            TagChanges {
                set: vec![],
                delete: vec!["owner".to_owned()],
            }
        );
    }

    #[test]
    fn alias_changes_move_add_and_remove_and_leave_matching_ones() {
        let current = vec![
            ("champion".to_owned(), 3),
            ("challenger".to_owned(), 4),
            ("old".to_owned(), 1),
        ];
        let declared = BTreeMap::from([
            ("champion".to_owned(), 4),
            ("challenger".to_owned(), 4),
            ("shadow".to_owned(), 5),
        ]);
        assert_eq!(
            alias_changes(&current, &declared),
            AliasChanges {
                set: vec![
                    AliasMove {
                        alias: "champion".to_owned(),
                        to: 4,
                    },
                    AliasMove {
                        alias: "shadow".to_owned(),
                        to: 5,
                    },
                ],
                delete: vec!["old".to_owned()],
            }
        );
        assert_eq!(
            alias_changes(&current, &BTreeMap::new()).delete,
            ["challenger", "champion", "old"]
        );
        let same: BTreeMap<String, i64> = current.iter().cloned().collect();
        assert_eq!(
            alias_changes(&current, &same),
            AliasChanges {
                set: vec![],
                delete: vec![],
            }
        );
    }
}
