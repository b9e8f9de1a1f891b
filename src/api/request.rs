//! Request decoding as MLflow's server does it (protobuf `ParseDict(ignore_unknown_fields)`):
//! GET fields come from the query string (a repeated field repeats its key), other methods
//! (DELETE included) from a JSON body; lowerCamel and snake_case names are both accepted;
//! int64 may be a number or a string; doubles may be "NaN"/"Infinity"; unknown fields are
//! ignored.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::ApiError;

/// A request message decoded from the query string (GET) or the JSON body.
pub struct Mlflow<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Mlflow<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = request.uri().query().map(str::to_owned);
        let body = if request.method() == Method::GET {
            None
        } else {
            match Bytes::from_request(request, state).await {
                Ok(body) => Some(body),
                // A chunked body declares no length: the limit is only found while reading.
                Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(super::body_too_large(None));
                }
                Err(rejection) => {
                    return Err(ApiError::invalid(format!(
                        "Could not read the request body: {rejection}"
                    ))
                    .into_response());
                }
            }
        };
        decode(query.as_deref(), body.as_ref())
            .map(Mlflow)
            .map_err(IntoResponse::into_response)
    }
}

fn decode<T: DeserializeOwned>(query: Option<&str>, body: Option<&Bytes>) -> Result<T, ApiError> {
    if let Some(message) = body.and_then(|body| decode_plain(body)) {
        return Ok(message);
    }
    match T::deserialize(message_value(query, body)?) {
        Ok(message) => Ok(message),
        // Decoded again only on failure: tracking the field path costs time on every
        // request (a 1000-metric batch), and only an error message needs it.
        Err(error) => Err(invalid_field::<T>(message_value(query, body)?, error)),
    }
}

/// A body that [`message_value`] would leave as it is, decoded straight into the message,
/// without building the JSON tree first (for a 1000-metric log-batch, a few allocations a point
/// fewer): one without an uppercase ASCII letter has no lowerCamel name to rename, and one
/// without a backslash has no escape, so no NUL. `None` for any other body and whenever
/// decoding fails (a duplicated field included, which the tree would have collapsed to its last
/// value): the tree path then decides, with its own messages.
fn decode_plain<T: DeserializeOwned>(body: &Bytes) -> Option<T> {
    if body.iter().any(|&b| b == b'\\' || b.is_ascii_uppercase()) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The request message as JSON with snake_case keys: the query string of a GET (or of a
/// request whose body is blank), else the JSON body. NUL characters are refused here, for
/// every field at once: Postgres text cannot hold them and SQLite would store them.
fn message_value(query: Option<&str>, body: Option<&Bytes>) -> Result<Value, ApiError> {
    let mut value = match body {
        Some(body) if !body.iter().all(u8::is_ascii_whitespace) => serde_json::from_slice(body)
            .map_err(|error| {
                ApiError::invalid(format!("Malformed JSON in request body: {error}"))
            })?,
        _ => query.map_or_else(|| Value::Object(Map::new()), query_to_json),
    };
    snake_case_keys(&mut value)?;
    refuse_nul(&value, &mut String::new())?;
    Ok(value)
}

/// Refuses a string holding NUL, naming its field (`params[0].value`).
fn refuse_nul(value: &Value, path: &mut String) -> Result<(), ApiError> {
    let depth = path.len();
    let result = match value {
        Value::String(text) if text.contains('\0') => Err(ApiError::invalid(format!(
            "Invalid value {value} for parameter '{path}' supplied: it contains a NUL character \
             (\\u0000), which is not allowed."
        ))),
        Value::Object(map) => map.iter().try_for_each(|(key, field)| {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let result = refuse_nul(field, path);
            path.truncate(depth);
            result
        }),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(index, item)| {
            let _ = write!(path, "[{index}]");
            let result = refuse_nul(item, path);
            path.truncate(depth);
            result
        }),
        _ => Ok(()),
    };
    path.truncate(depth);
    result
}

/// Names the field a message could not be decoded from, in MLflow's words when a value has the
/// wrong JSON type (`_validate_param_against_schema` in `mlflow/server/handlers.py`), e.g. an
/// id sent as a number: "Invalid value 0 for parameter 'experiment_id' supplied:  Hint: Value
/// was of type 'int'. See the API docs for more information about request parameters."
fn invalid_field<T: DeserializeOwned>(value: Value, error: serde_json::Error) -> ApiError {
    let located = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Err(located) => located,
        Ok(_) => return ApiError::invalid(format!("Invalid request: {error}")),
    };
    let path = located.path();
    let mut field = Some(&value);
    for segment in path {
        field = match segment {
            serde_path_to_error::Segment::Map { key } => field.and_then(|f| f.get(key)),
            serde_path_to_error::Segment::Seq { index } => field.and_then(|f| f.get(*index)),
            _ => None,
        };
    }
    match field {
        Some(field) if path.iter().next().is_some() => {
            let detail = located.inner().to_string();
            if detail.starts_with("invalid type") {
                ApiError::invalid(format!(
                    "Invalid value {field} for parameter '{path}' supplied:  Hint: Value was of type \
                     '{}'. See the API docs for more information about request parameters.",
                    python_type_name(field)
                ))
            } else {
                ApiError::invalid(format!(
                    "Invalid value {field} for parameter '{path}' supplied: {detail}"
                ))
            }
        }
        _ => ApiError::invalid(format!("Invalid request: {error}")),
    }
}

/// The Python type MLflow's message names for a JSON value.
fn python_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(number) if number.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Middleware: refuses a request whose path or query string decodes to a NUL character,
/// naming the query parameter, before any handler runs; [`Mlflow`] does the same for JSON
/// bodies. Together they are the one place that keeps NUL away from the store.
pub async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
    let uri = request.uri();
    if percent_decode_path(uri.path()).is_some_and(|path| path.contains('\0')) {
        return ApiError::invalid(
            "Invalid request path: it contains a NUL character (\\u0000), which is not allowed.",
        )
        .into_response();
    }
    if let Some(query) = uri.query()
        && let Err(error) = refuse_nul(&query_to_json(query), &mut String::new())
    {
        return error.into_response();
    }
    next.run(request).await
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

/// Renames lowerCamel keys to snake_case, recursively, in place: a map is rebuilt only when
/// one of its keys needs renaming (a 1000-metric batch has a thousand small maps). A message
/// naming one field both ways is refused, as protobuf's parser does.
fn snake_case_keys(value: &mut Value) -> Result<(), ApiError> {
    match value {
        Value::Object(map) => {
            if map
                .keys()
                .any(|key| key.bytes().any(|b| b.is_ascii_uppercase()))
            {
                for (key, field) in std::mem::take(map) {
                    let snake = to_snake_case(&key);
                    if map.contains_key(&snake) {
                        return Err(ApiError::invalid(format!(
                            "Field '{snake}' was given more than once"
                        )));
                    }
                    map.insert(snake, field);
                }
            }
            map.values_mut().try_for_each(snake_case_keys)
        }
        Value::Array(items) => items.iter_mut().try_for_each(snake_case_keys),
        _ => Ok(()),
    }
}

/// `experimentIds` → `experiment_ids`.
pub fn to_snake_case(key: &str) -> String {
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
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{self, IntoDeserializer, MapAccess, SeqAccess, Visitor};

    use super::*;

    /// A protobuf-JSON scalar as it arrived. Decoded by one visitor, not `#[serde(untagged)]`,
    /// which buffers the value and builds an error for every variant that does not match.
    enum NumberOrString {
        Int(i64),
        Float(f64),
        Text(String),
    }

    impl<'de> Deserialize<'de> for NumberOrString {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ScalarVisitor;
            impl Visitor<'_> for ScalarVisitor {
                type Value = NumberOrString;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a number or a string")
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                    Ok(NumberOrString::Int(v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                    Ok(i64::try_from(v)
                        .map_or(NumberOrString::Float(v as f64), NumberOrString::Int))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                    Ok(NumberOrString::Float(v))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(NumberOrString::Text(v.to_owned()))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                    Ok(NumberOrString::Text(v))
                }
            }
            deserializer.deserialize_any(ScalarVisitor)
        }
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

    /// A repeated field: a list, or one value (a query key given once); null is empty. The
    /// list's items are decoded as they stream by (an untagged enum would first copy it all).
    pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<T>, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list or a single value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(vec![T::deserialize(MapAccessDeserializer::new(map))?])
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![T::deserialize(v.into_deserializer())?])
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(vec![T::deserialize(v.into_deserializer())?])
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(vec![T::deserialize(v.into_deserializer())?])
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(vec![T::deserialize(v.into_deserializer())?])
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(vec![T::deserialize(v.into_deserializer())?])
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(vec![T::deserialize(v.into_deserializer())?])
            }
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }

    /// An enum given by name or by its number (protobuf JSON accepts both); ids and other
    /// string fields are plain `String`s, which refuse numbers as MLflow does.
    pub fn opt_enum<'de, D: Deserializer<'de>>(
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
        let mut value =
            serde_json::json!({"runId": "x", "metrics": [{"key": "a", "modelId": "m"}]});
        snake_case_keys(&mut value).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"run_id": "x", "metrics": [{"key": "a", "model_id": "m"}]})
        );
        assert!(snake_case_keys(&mut serde_json::json!({"runId": "x", "run_id": "y"})).is_err());
    }

    #[test]
    fn percent_decoding_handles_utf8_and_bad_escapes() {
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode_path("a+b%20c").as_deref(), Some("a+b c"));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Repeated {
        #[serde(default, deserialize_with = "lenient::list")]
        items: Vec<Item>,
        #[serde(default, deserialize_with = "lenient::list")]
        ids: Vec<String>,
        #[serde(default, deserialize_with = "lenient::opt_i64")]
        step: Option<i64>,
        #[serde(default, deserialize_with = "lenient::opt_f64")]
        value: Option<f64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        key: String,
    }

    fn decode(value: Value) -> Result<Repeated, serde_json::Error> {
        Repeated::deserialize(value)
    }

    #[test]
    fn repeated_fields_take_a_list_one_value_or_null() {
        let item = |key: &str| Item { key: key.into() };
        let both =
            decode(serde_json::json!({"items": [{"key": "a"}, {"key": "b"}], "ids": "x"})).unwrap();
        assert_eq!(both.items, [item("a"), item("b")]);
        assert_eq!(both.ids, ["x"]);
        let one = decode(serde_json::json!({"items": {"key": "a"}, "ids": ["x", "y"]})).unwrap();
        assert_eq!(
            (one.items, one.ids),
            (vec![item("a")], vec!["x".to_owned(), "y".to_owned()])
        );
        let none = decode(serde_json::json!({"items": null})).unwrap();
        assert!(none.items.is_empty() && none.ids.is_empty());
        let error = decode(serde_json::json!({"items": [{"key": 1}]}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("expected a string"), "{error}");
    }

    #[test]
    fn scalars_accept_numbers_and_strings() {
        let scalars = |step: Value, value: Value| {
            decode(serde_json::json!({"step": step, "value": value})).map(|r| (r.step, r.value))
        };
        assert_eq!(scalars(5.into(), 1.5.into()).unwrap(), (Some(5), Some(1.5)));
        assert_eq!(
            scalars("7".into(), "2".into()).unwrap(),
            (Some(7), Some(2.0))
        );
        assert_eq!(scalars(3.0.into(), 4.into()).unwrap(), (Some(3), Some(4.0)));
        assert!(
            scalars(Value::Null, "NaN".into())
                .unwrap()
                .1
                .unwrap()
                .is_nan()
        );
        assert_eq!(
            scalars(Value::Null, "-Infinity".into()).unwrap(),
            (None, Some(f64::NEG_INFINITY))
        );
        let too_big = scalars(u64::MAX.into(), Value::Null)
            .unwrap_err()
            .to_string();
        assert!(too_big.contains("expected an integer"), "{too_big}");
        assert!(
            scalars("x".into(), Value::Null)
                .unwrap_err()
                .to_string()
                .contains("'x'")
        );
        assert!(
            scalars(true.into(), Value::Null)
                .unwrap_err()
                .to_string()
                .contains("a number or a string")
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct RunId {
        run_id: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Batch {
        #[serde(flatten)]
        run: RunId,
        #[serde(default, deserialize_with = "lenient::list")]
        metrics: Vec<Point>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Point {
        key: Option<String>,
        #[serde(default, deserialize_with = "lenient::opt_f64")]
        value: Option<f64>,
        #[serde(default, deserialize_with = "lenient::opt_i64")]
        step: Option<i64>,
        model_id: Option<String>,
    }

    /// Bodies taken straight into the message decode exactly as through the JSON tree, and the
    /// ones that need the tree (renamed fields, escapes, a field given twice) still take it.
    #[test]
    fn plain_bodies_decode_as_through_the_tree() {
        let through_tree = |body: &str| {
            Batch::deserialize(message_value(None, Some(&Bytes::from(body.to_owned()))).unwrap())
                .map_err(|error| error.to_string())
        };
        for body in [
            r#"{"run_id":"r","metrics":[{"key":"a/b c:d","value":0.1,"step":"7"},{"key":"b","value":"-inf","step":2}]}"#,
            r#"{"run_id":"r","metrics":{"key":"a","value":1e-300,"step":9007199254740993}}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":18446744073709551615}],"ignored":[1,{"x":null}]}"#,
            r#"{"runId":"r","metrics":[{"key":"a","modelId":"m","value":2}]}"#,
            r#"{"run_id":"first","run_id":"last","metrics":[]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","key":"b"}]}"#,
            r#"{"run_id":"r\u0041","metrics":[{"k\u0065y":"\u00fc"}]}"#,
            r#"{"run_id":"r","metrics":[{"key":"a","value":true}]}"#,
        ] {
            let plain = decode_plain::<Batch>(&Bytes::from(body.to_owned()));
            let decoded = super::decode::<Batch>(None, Some(&Bytes::from(body.to_owned())));
            let expected = through_tree(body);
            if let Some(plain) = &plain {
                assert_eq!(Ok(plain), expected.as_ref(), "{body}");
            }
            assert_eq!(decoded.map_err(|_| ()), expected.map_err(|_| ()), "{body}");
        }
        let plain = |body: &str| decode_plain::<Batch>(&Bytes::from(body.to_owned())).is_some();
        assert!(plain(r#"{"run_id":"r","metrics":[{"key":"a","value":1}]}"#));
        assert!(
            !plain(r#"{"runId":"r"}"#),
            "a lowerCamel name is renamed by the tree"
        );
        assert!(
            !plain(r#"{"run_id":"a\u0000b"}"#),
            "an escape may hide a NUL"
        );
        assert!(
            !plain(r#"{"run_id":"first","run_id":"last"}"#),
            "the tree keeps the last"
        );
    }
}
