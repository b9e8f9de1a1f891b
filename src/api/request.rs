//! Request decoding as MLflow's server does it (protobuf `ParseDict(ignore_unknown_fields)`):
//! GET fields come from the query string (a repeated field repeats its key), other methods
//! (DELETE included) from a JSON body; lowerCamel and snake_case names are both accepted;
//! int64 may be a number or a string; doubles may be "NaN"/"Infinity"; unknown fields are
//! ignored.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::ApiError;

/// A request message decoded from the query string (GET) or the JSON body.
pub struct Mlflow<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Mlflow<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = request.uri().query().map(query_to_json);
        let is_get = request.method() == Method::GET;
        let value = if is_get {
            query.unwrap_or_else(|| Value::Object(Map::new()))
        } else {
            let body = Bytes::from_request(request, state)
                .await
                .map_err(|rejection| {
                    ApiError::invalid(format!("Could not read the request body: {rejection}"))
                })?;
            if body.iter().all(u8::is_ascii_whitespace) {
                query.unwrap_or_else(|| Value::Object(Map::new()))
            } else {
                serde_json::from_slice(&body).map_err(|error| {
                    ApiError::invalid(format!("Malformed JSON in request body: {error}"))
                })?
            }
        };
        let value = snake_case_keys(value)?;
        let message = T::deserialize(value)
            .map_err(|error| ApiError::invalid(format!("Invalid request: {error}")))?;
        Ok(Mlflow(message))
    }
}

/// `a=1&b=2&b=3` → `{"a": "1", "b": ["2", "3"]}`.
fn query_to_json(query: &str) -> Value {
    let mut map = Map::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        let value = Value::String(percent_decode(value));
        match map.get_mut(&key) {
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                map.insert(key, value);
            }
        }
    }
    Value::Object(map)
}

/// Decodes a query-string component: `%XX` escapes and `+` for space.
pub fn percent_decode(text: &str) -> String {
    crate::percent::decode(&text.replace('+', " "))
}

/// Decodes a URL path: `%XX` escapes only (`+` is a literal plus in paths); `None` when the
/// bytes are not UTF-8.
pub fn percent_decode_path(text: &str) -> Option<String> {
    crate::percent::decode_utf8(text)
}

/// Renames lowerCamel keys to snake_case, recursively. A message naming one field both ways
/// is refused, as protobuf's parser does.
fn snake_case_keys(value: Value) -> Result<Value, ApiError> {
    Ok(match value {
        Value::Object(map) => {
            let mut renamed = Map::with_capacity(map.len());
            for (key, value) in map {
                let snake = to_snake_case(&key);
                if renamed.contains_key(&snake) {
                    return Err(ApiError::invalid(format!(
                        "Field '{snake}' was given more than once"
                    )));
                }
                renamed.insert(snake, snake_case_keys(value)?);
            }
            Value::Object(renamed)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(snake_case_keys)
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

fn to_snake_case(key: &str) -> String {
    if !key.chars().any(|c| c.is_ascii_uppercase()) {
        return key.to_owned();
    }
    let mut snake = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// Serde helpers for protobuf-JSON scalars.
pub mod lenient {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Int(i64),
        Float(f64),
        Text(String),
    }

    fn int_from(value: NumberOrString) -> Result<i64, String> {
        match value {
            NumberOrString::Int(v) => Ok(v),
            NumberOrString::Float(v) if v.fract() == 0.0 && v.abs() < 9.2e18 => Ok(v as i64),
            NumberOrString::Float(v) => Err(format!("expected an integer, got {v}")),
            NumberOrString::Text(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, got '{text}'")),
        }
    }

    /// An optional int64 given as number or string (protobuf JSON).
    pub fn opt_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        Option::<NumberOrString>::deserialize(deserializer)?
            .map(int_from)
            .transpose()
            .map_err(serde::de::Error::custom)
    }

    /// An optional double given as number or as "NaN"/"Infinity"/"-Infinity"/a numeric string.
    pub fn opt_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
        Option::<NumberOrString>::deserialize(deserializer)?
            .map(|value| match value {
                NumberOrString::Int(v) => Ok(v as f64),
                NumberOrString::Float(v) => Ok(v),
                NumberOrString::Text(text) => match text.trim() {
                    "NaN" | "nan" => Ok(f64::NAN),
                    "Infinity" | "inf" => Ok(f64::INFINITY),
                    "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                    other => other
                        .parse()
                        .map_err(|_| format!("expected a number, got '{text}'")),
                },
            })
            .transpose()
            .map_err(serde::de::Error::custom)
    }

    /// An optional bool given as JSON bool or "true"/"false".
    pub fn opt_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum BoolOrString {
            Bool(bool),
            Text(String),
        }
        Option::<BoolOrString>::deserialize(deserializer)?
            .map(|value| match value {
                BoolOrString::Bool(v) => Ok(v),
                BoolOrString::Text(text) => match text.to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(format!("expected true or false, got '{text}'")),
                },
            })
            .transpose()
            .map_err(serde::de::Error::custom)
    }

    /// A repeated field: a list, or one value (a query key given once).
    pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<T>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany<T> {
            Many(Vec<T>),
            One(T),
        }
        Ok(match Option::<OneOrMany<T>>::deserialize(deserializer)? {
            Some(OneOrMany::Many(items)) => items,
            Some(OneOrMany::One(item)) => vec![item],
            None => Vec::new(),
        })
    }

    /// A string field that a client may send as a number (ids).
    pub fn opt_string<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Ok(
            Option::<NumberOrString>::deserialize(deserializer)?.map(|value| match value {
                NumberOrString::Int(v) => v.to_string(),
                NumberOrString::Float(v) => v.to_string(),
                NumberOrString::Text(text) => text,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_repeat_keys_into_lists() {
        let value = query_to_json("run_ids=a&run_ids=b&metric_key=loss%2Ftrain&x=a+b");
        assert_eq!(value["run_ids"], serde_json::json!(["a", "b"]));
        assert_eq!(value["metric_key"], "loss/train");
        assert_eq!(value["x"], "a b");
    }

    #[test]
    fn camel_case_keys_become_snake_case_and_duplicates_are_refused() {
        let value =
            snake_case_keys(serde_json::json!({"runId": "x", "metrics": [{"key": "a"}]})).unwrap();
        assert_eq!(value["run_id"], "x");
        assert!(snake_case_keys(serde_json::json!({"runId": "x", "run_id": "y"})).is_err());
    }

    #[test]
    fn percent_decoding_handles_utf8_and_bad_escapes() {
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode_path("a+b%20c").as_deref(), Some("a+b c"));
    }
}
