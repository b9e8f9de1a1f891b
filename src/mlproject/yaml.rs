//! Parameter defaults as MLflow reads them. MLflow loads the MLproject with PyYAML, which
//! resolves plain scalars by YAML 1.1's rules (`1e-3` stays the string `1e-3`, `010` is 8,
//! `1_000` is 1000), and passes `str()` of the result; serde_yaml follows YAML 1.2 (`1e-3` is
//! 0.001). So the text of each plain default is read again here and resolved PyYAML's way.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::python::float_repr;

/// `(entry point, parameter)` → the default's text as written (quotes removed).
pub type RawDefaults = HashMap<(String, String), String>;

/// Reads every `entry_points.<name>.parameters.<name>.default` as text. Any other shape
/// yields nothing for that place (the structural reading reports it). Every default must be a
/// scalar: serde_yaml cannot continue after being asked for the text of a list or mapping.
pub fn raw_defaults(text: &str) -> RawDefaults {
    serde_yaml::Deserializer::from_str(text)
        .next()
        .and_then(|document| document.deserialize_map(DocumentVisitor).ok())
        .unwrap_or_default()
}

/// `str()` of what PyYAML makes of a plain scalar that serde_yaml read as a number or bool.
pub fn pyyaml_plain_scalar_str(text: &str) -> String {
    let text = text.trim();
    if matches!(
        text,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON"
    ) {
        return "True".to_owned();
    }
    if matches!(
        text,
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF"
    ) {
        return "False".to_owned();
    }
    if let Some(value) = pyyaml_int(text) {
        return value.to_string();
    }
    if let Some(value) = pyyaml_float(text) {
        return float_repr(value);
    }
    text.to_owned()
}

/// PyYAML's `int` resolver and constructor: decimal, `0b…`, `0x…`, octal `0…`, with `_`.
fn pyyaml_int(text: &str) -> Option<i128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (digits, radix) = if let Some(rest) = body.strip_prefix("0b") {
        (rest, 2)
    } else if let Some(rest) = body.strip_prefix("0x") {
        (rest, 16)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else if body.starts_with(|c: char| c.is_ascii_digit()) {
        (body, 10)
    } else {
        return None;
    };
    let cleaned = digits.replace('_', "");
    if cleaned.is_empty() || (radix == 10 && digits.starts_with('_')) {
        return None;
    }
    let value = i128::from_str_radix(&cleaned, radix).ok()?;
    Some(if negative { -value } else { value })
}

/// PyYAML's `float` resolver and constructor: a `.` is required (`1.5`, `.5`, `1.5e+3`; an
/// exponent needs its sign), or `.inf`/`.nan`.
fn pyyaml_float(text: &str) -> Option<f64> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(sign * f64::INFINITY);
    }
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.')?;
    let whole_ok = if whole.is_empty() {
        fraction.starts_with(|c: char| c.is_ascii_digit())
    } else {
        whole.starts_with(|c: char| c.is_ascii_digit())
            && whole.chars().all(|c| c.is_ascii_digit() || c == '_')
    };
    let fraction_ok = fraction.chars().all(|c| c.is_ascii_digit() || c == '_');
    let exponent_ok = exponent.is_none_or(|e| {
        e.starts_with(['+', '-']) && e.len() > 1 && e[1..].chars().all(|c| c.is_ascii_digit())
    });
    if !(whole_ok && fraction_ok && exponent_ok) {
        return None;
    }
    let value: f64 = body.replace('_', "").parse().ok()?;
    Some(sign * value)
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = RawDefaults;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an MLproject mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDefaults, A::Error> {
        let mut defaults = RawDefaults::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "entry_points" {
                defaults = map.next_value::<EntryPoints>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(defaults)
    }
}

/// A mapping whose shape is not the expected one reads as nothing instead of failing.
macro_rules! lenient_map {
    ($name:ident, $value:ty, $expecting:literal, |$map:ident| $body:block) => {
        struct $name($value);

        impl<'de> de::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct LenientVisitor;
                impl<'de> Visitor<'de> for LenientVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<$name, A::Error> {
                        Ok($name($body))
                    }
                    fn visit_str<E: de::Error>(self, _: &str) -> Result<$name, E> {
                        Ok($name(Default::default()))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name(Default::default()))
                    }
                    fn visit_bool<E: de::Error>(self, _: bool) -> Result<$name, E> {
                        Ok($name(Default::default()))
                    }
                    fn visit_i64<E: de::Error>(self, _: i64) -> Result<$name, E> {
                        Ok($name(Default::default()))
                    }
                    fn visit_u64<E: de::Error>(self, _: u64) -> Result<$name, E> {
                        Ok($name(Default::default()))
                    }
                    fn visit_f64<E: de::Error>(self, _: f64) -> Result<$name, E> {
                        Ok($name(Default::default()))
                    }
                    fn visit_seq<A: de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$name, A::Error> {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        Ok($name(Default::default()))
                    }
                }
                deserializer.deserialize_any(LenientVisitor)
            }
        }
    };
}

lenient_map!(EntryPoints, RawDefaults, "entry points", |map| {
    let mut defaults = RawDefaults::new();
    while let Some(entry) = map.next_key::<String>()? {
        for (parameter, text) in map.next_value::<EntryPoint>()?.0 {
            defaults.insert((entry.clone(), parameter), text);
        }
    }
    defaults
});

lenient_map!(EntryPoint, Vec<(String, String)>, "an entry point", |map| {
    let mut found = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        if key == "parameters" {
            found = map.next_value::<Parameters>()?.0;
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    found
});

lenient_map!(Parameters, Vec<(String, String)>, "parameters", |map| {
    let mut found = Vec::new();
    while let Some(name) = map.next_key::<String>()? {
        if let Some(text) = map.next_value::<Parameter>()?.0 {
            found.push((name, text));
        }
    }
    found
});

lenient_map!(Parameter, Option<String>, "a parameter", |map| {
    let mut default = None;
    while let Some(key) = map.next_key::<String>()? {
        if key == "default" {
            default = Some(map.next_value::<ScalarText>()?.0);
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    default
});

/// A scalar's text as written.
struct ScalarText(String);

impl<'de> de::Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(text.to_owned()))
            }
        }
        // serde_yaml hands `deserialize_str` the scalar's text unresolved.
        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_as_pyyaml_resolves_them() {
        let cases = [
            ("1e-3", "1e-3"),
            ("1.5e3", "1.5e3"),
            ("1.5e+3", "1500.0"),
            ("0.50", "0.5"),
            (".5", "0.5"),
            ("5.", "5.0"),
            ("1_000", "1000"),
            ("010", "8"),
            ("0x1F", "31"),
            ("0b101", "5"),
            ("-7", "-7"),
            ("+3", "3"),
            ("0", "0"),
            ("true", "True"),
            ("Off", "False"),
            (".inf", "inf"),
            ("-.inf", "-inf"),
            ("1e5", "1e5"),
        ];
        for (text, expected) in cases {
            assert_eq!(pyyaml_plain_scalar_str(text), expected, "{text}");
        }
    }

    #[test]
    fn reads_the_text_of_each_default() {
        let defaults = raw_defaults(
            "name: x\nentry_points:\n  main:\n    command: c\n    parameters:\n      \
             lr: {type: float, default: 1e-3}\n      n: {type: int, default: '010'}\n      \
             s: float\n      m: {default: x}\n  other: 5\n",
        );
        assert_eq!(defaults.len(), 3, "{defaults:?}");
        assert_eq!(defaults[&("main".into(), "lr".into())], "1e-3");
        assert_eq!(defaults[&("main".into(), "n".into())], "010");
    }
}
