//! MLflow's input rules (`mlflow/utils/validation.py`): key syntax, length limits and
//! the truncation of over-long values. Pure; the store calls these before it writes.

use super::{Error, Result};

/// Longest metric, param and run-tag key.
pub const MAX_ENTITY_KEY_LENGTH: usize = 250;
/// Longest param value kept; longer values are truncated (MLflow's default).
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// Longest run-tag value kept; longer values are truncated.
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
/// Longest experiment name.
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;
/// Longest experiment-tag value.
pub const MAX_EXPERIMENT_TAG_VALUE_LENGTH: usize = 20000;
/// log-batch limits per request.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_PER_BATCH: usize = 100;
pub const MAX_TAGS_PER_BATCH: usize = 100;
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// Dataset field limits.
pub const MAX_DATASET_NAME_LENGTH: usize = 500;
pub const MAX_DATASET_DIGEST_LENGTH: usize = 36;
pub const MAX_DATASET_SOURCE_LENGTH: usize = 65535;
pub const MAX_DATASET_SCHEMA_LENGTH: usize = 1_048_575;
pub const MAX_DATASET_PROFILE_LENGTH: usize = 16_777_215;
pub const MAX_INPUT_TAG_KEY_LENGTH: usize = 255;
pub const MAX_INPUT_TAG_VALUE_LENGTH: usize = 500;

/// Which kind of key is being checked, for the error message.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Metric,
    Param,
    Tag,
}

impl KeyKind {
    fn noun(self) -> &'static str {
        match self {
            KeyKind::Metric => "metric",
            KeyKind::Param => "parameter",
            KeyKind::Tag => "tag",
        }
    }
}

/// Checks a metric, param or run-tag key: allowed characters, length, and that it names
/// a unique path (`a/../b`, `/a`, `a//b` are refused, as MLflow stores keys as paths).
pub fn validate_key(kind: KeyKind, key: &str) -> Result<()> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':');
    if !key.chars().all(allowed) {
        return Err(Error::Invalid(format!(
            "Invalid {noun} name: '{key}'. Names may only contain alphanumerics, underscores (_), \
             dashes (-), periods (.), spaces ( ), colon(:) and slashes (/).",
            noun = kind.noun()
        )));
    }
    if !is_normalized_path(key) {
        return Err(Error::Invalid(format!(
            "Invalid {noun} name: '{key}'. Names cannot resolve to a different path when normalized, \
             be empty, start with a slash or contain '.' or '..' segments.",
            noun = kind.noun()
        )));
    }
    // the label is built only for the error: this runs for every point of a log-batch
    if key.chars().count() <= MAX_ENTITY_KEY_LENGTH {
        return Ok(());
    }
    validate_length(
        &format!("{} key", capitalized(kind.noun())),
        key,
        MAX_ENTITY_KEY_LENGTH,
    )
}

fn capitalized(noun: &str) -> String {
    let mut chars = noun.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// True when POSIX normalisation leaves `key` unchanged and it is not `.`/`..`-relative.
fn is_normalized_path(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && !key.ends_with('/')
        && key
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Refuses a value over `limit` characters with MLflow's message.
pub fn validate_length(what: &str, value: &str, limit: usize) -> Result<()> {
    let length = value.chars().count();
    if length > limit {
        let shown: String = value.chars().take(250).collect();
        return Err(Error::Invalid(format!(
            "{what} '{shown}' had length {length}, which exceeded length limit of {limit}"
        )));
    }
    Ok(())
}

/// Truncates an over-long value to `limit` characters (MLflow's MLFLOW_TRUNCATE_LONG_VALUES).
pub fn truncate(value: &str, limit: usize) -> String {
    match value.char_indices().nth(limit) {
        Some((byte_index, _)) => value[..byte_index].to_owned(),
        None => value.to_owned(),
    }
}

/// Checks an experiment name.
pub fn validate_experiment_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid(
            "Invalid experiment name: ''. Experiment name must not be empty.".into(),
        ));
    }
    validate_length("Experiment name", name, MAX_EXPERIMENT_NAME_LENGTH)
}

/// Metric timestamps must not be negative.
pub fn validate_timestamp(timestamp: i64) -> Result<()> {
    if timestamp < 0 {
        return Err(Error::Invalid(format!(
            "Got invalid timestamp {timestamp}. Timestamp must be a nonnegative long (64-bit integer)"
        )));
    }
    Ok(())
}

/// MLflow keeps NaN as `value 0, is_nan` and clamps ±inf, so both SQL stores can hold it.
pub fn stored_metric_value(value: f64) -> (f64, bool) {
    if value.is_nan() {
        (0.0, true)
    } else if value.is_infinite() {
        (if value > 0.0 { f64::MAX } else { f64::MIN }, false)
    } else {
        (value, false)
    }
}

/// The value MLflow reads back: NaN for `is_nan`, else the stored value (so infinities
/// come back clamped to ±f64::MAX, exactly as MLflow's SQL store answers).
pub fn read_metric_value(value: f64, is_nan: bool) -> f64 {
    if is_nan { f64::NAN } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflow_syntax() {
        for good in ["acc", "loss/train", "a b", "x:y", "a.b-c_d", "ünïcode"] {
            assert!(validate_key(KeyKind::Metric, good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            ".",
            "..",
            "a/",
            "semi;colon",
            "q?",
        ] {
            assert!(validate_key(KeyKind::Param, bad).is_err(), "{bad}");
        }
        let long = "k".repeat(251);
        let message = validate_key(KeyKind::Param, &long).unwrap_err().to_string();
        assert!(
            message.contains("exceeded length limit of 250"),
            "{message}"
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ééé", 2), "éé");
        assert_eq!(truncate("ab", 5), "ab");
    }

    #[test]
    fn special_floats_are_stored_like_mlflow() {
        assert_eq!(stored_metric_value(f64::NAN), (0.0, true));
        assert_eq!(stored_metric_value(f64::INFINITY), (f64::MAX, false));
        assert!(read_metric_value(0.0, true).is_nan());
        assert_eq!(read_metric_value(f64::MIN, false), f64::MIN);
        assert_eq!(read_metric_value(1.5, false), 1.5);
    }
}
