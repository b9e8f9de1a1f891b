//! Feeds arbitrary text to the search filter and order_by parsers of every entity. None may
//! panic; what parses must have the shape the AST documents; errors must stay short, because a
//! client's 64 KiB input must never be echoed back whole.
#![no_main]

// Parts of the public API the target does not call are not dead in the crate.
#[allow(dead_code)]
#[path = "../../src/store/filter.rs"]
mod filter;

use filter::{Comparator, MAX_LIST_ITEMS, SearchEntity, Value, parse_filter, parse_order_by};
use libfuzzer_sys::fuzz_target;

const ENTITIES: [SearchEntity; 5] = [
    SearchEntity::Runs,
    SearchEntity::Experiments,
    SearchEntity::RegisteredModels,
    SearchEntity::ModelVersions,
    SearchEntity::LoggedModels,
];

const MAX_MESSAGE_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // Lossy decoding keeps every input in play; the API takes &str, as the HTTP layer does.
    let input = String::from_utf8_lossy(data);
    for entity in ENTITIES {
        match parse_filter(entity, &input) {
            Ok(clauses) => {
                let blank = input
                    .chars()
                    .all(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
                assert_eq!(clauses.is_empty(), blank, "{input:?}");
                for clause in &clauses {
                    match (clause.op, &clause.value) {
                        (Comparator::In | Comparator::NotIn, Value::List(items)) => {
                            assert!(!items.is_empty() && items.len() <= MAX_LIST_ITEMS);
                        }
                        (Comparator::IsNull | Comparator::IsNotNull, Value::Null) => {}
                        (
                            Comparator::Eq
                            | Comparator::Ne
                            | Comparator::Lt
                            | Comparator::Le
                            | Comparator::Gt
                            | Comparator::Ge
                            | Comparator::Like
                            | Comparator::ILike,
                            Value::Number(_) | Value::String(_),
                        ) => {}
                        other => panic!("clause with a mismatched value {other:?} from {input:?}"),
                    }
                }
            }
            Err(error) => assert!(error.to_string().len() <= MAX_MESSAGE_BYTES, "{error}"),
        }
        if let Err(error) = parse_order_by(entity, &input) {
            assert!(error.to_string().len() <= MAX_MESSAGE_BYTES, "{error}");
        }
    }
});
