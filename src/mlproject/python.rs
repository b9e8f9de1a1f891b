//! The bits of Python that `mlflow run` leans on, done the same way in Rust: `shlex.quote`,
//! `str.format` with named fields, `str()` of a YAML scalar, `float()`/`int()` acceptance and
//! `urllib.parse.urlparse(...).scheme`. Each is a small pure function, compared against the
//! real Python in e2e/tests/test_project_run_local.py.

use std::collections::HashMap;

/// `shlex.quote`: the value unchanged when it holds only characters no shell treats specially,
/// `''` when empty, else single-quoted with each `'` written as `'"'"'`.
pub fn shell_quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if value.is_empty() {
        "''".to_owned()
    } else if value.chars().all(safe) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r#"'"'"'"#))
    }
}

/// Why a `str.format` template could not be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("'{{{0}}}' names no parameter of the entry point")]
    UnknownField(String),
    #[error(
        "'{{{0}}}' is not a plain parameter name (positional fields, conversions and format specs are not supported)"
    )]
    UnsupportedField(String),
    #[error("single '{0}' encountered in the command (write '{0}{0}' for a literal one)")]
    UnmatchedBrace(char),
}

/// Python's `template.format(**fields)` for templates whose fields are plain names (`{alpha}`),
/// with `{{` and `}}` standing for literal braces.
pub fn format_named(template: &str, fields: &HashMap<&str, String>) -> Result<String, FormatError> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(FormatError::UnmatchedBrace('{')),
                    }
                }
                if name.is_empty() || name.contains(['!', ':', '.', '[', '{']) {
                    return Err(FormatError::UnsupportedField(name));
                }
                match fields.get(name.as_str()) {
                    Some(value) => out.push_str(value),
                    None => return Err(FormatError::UnknownField(name)),
                }
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '}' => return Err(FormatError::UnmatchedBrace('}')),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `str(value)` of what PyYAML loads for a scalar: `None` for null, `True`/`False`, integers in
/// decimal, floats as Python's `repr`, strings unchanged. Sequences and mappings have no
/// command-line form; `None` is returned for null only, so callers can tell "no default".
pub fn yaml_scalar_str(value: &serde_yaml::Value) -> Option<Result<String, &'static str>> {
    use serde_yaml::Value;
    match value {
        Value::Null => None,
        Value::Bool(true) => Some(Ok("True".to_owned())),
        Value::Bool(false) => Some(Ok("False".to_owned())),
        Value::Number(number) => Some(Ok(match number.as_f64() {
            Some(float) if number.is_f64() => float_repr(float),
            _ => number.to_string(),
        })),
        Value::String(text) => Some(Ok(text.clone())),
        Value::Tagged(tagged) => yaml_scalar_str(&tagged.value),
        Value::Sequence(_) | Value::Mapping(_) => Some(Err("a list or mapping")),
    }
}

/// Python's `repr(float)`: the shortest digits that read back the same, in fixed notation for
/// decimal exponents -4..16 (always with a `.`), else as `d.ddde±XX`.
pub fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // `{:e}` prints the shortest round-trip digits: `-1.25e-7`, `3e0`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        )
    }
}

/// Python's digit grouping: `1_000` is `1000`, an underscore only between two digits.
fn without_digit_underscores(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (index, byte) in bytes.iter().enumerate() {
        if *byte == b'_' {
            let before = index.checked_sub(1).and_then(|i| bytes.get(i));
            let after = bytes.get(index + 1);
            if !before.is_some_and(u8::is_ascii_digit) || !after.is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
    }
    Some(text.replace('_', ""))
}

/// Whether Python's `float(text)` accepts it.
pub fn is_python_float(text: &str) -> bool {
    let Some(text) = without_digit_underscores(text.trim()) else {
        return false;
    };
    // Rust also reads `inf`, `infinity` and `nan` in any case, as Python does; it refuses
    // hexadecimal and whitespace, as Python's float() does after the strip.
    !text.is_empty() && text.parse::<f64>().is_ok()
}

/// Whether Python's `int(text)` accepts it: optional sign, decimal digits.
pub fn is_python_int(text: &str) -> bool {
    let Some(text) = without_digit_underscores(text.trim()) else {
        return false;
    };
    let digits = text.strip_prefix(['+', '-']).unwrap_or(&text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `urllib.parse.urlparse(text).scheme`, lower-cased: the part before the first `:` when it
/// starts with a letter and holds only letters, digits, `+`, `-` and `.`; empty otherwise.
pub fn url_scheme(text: &str) -> String {
    // urlsplit drops leading C0 controls and spaces, and tabs and newlines anywhere.
    let text: String = text
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let Some((candidate, _)) = text.split_once(':') else {
        return String::new();
    };
    let valid = candidate
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if valid {
        candidate.to_ascii_lowercase()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_shlex() {
        let cases = [
            ("", "''"),
            ("abc", "abc"),
            ("a b", "'a b'"),
            ("it's", r#"'it'"'"'s'"#),
            ("$HOME", "'$HOME'"),
            ("a=b,c:d/e.f@g%h+i-j_k", "a=b,c:d/e.f@g%h+i-j_k"),
            ("é", "'é'"),
            ("a\nb", "'a\nb'"),
        ];
        for (value, quoted) in cases {
            assert_eq!(shell_quote(value), quoted, "{value:?}");
        }
    }

    #[test]
    fn format_fills_named_fields_and_unescapes_braces() {
        let fields = HashMap::from([("a", "1".to_owned()), ("b", "'x y'".to_owned())]);
        assert_eq!(
            format_named("run {a} {b} {{lit}} }}", &fields).unwrap(),
            "run 1 'x y' {lit} }"
        );
        assert_eq!(
            format_named("{c}", &fields),
            Err(FormatError::UnknownField("c".into()))
        );
        assert_eq!(
            format_named("{}", &fields),
            Err(FormatError::UnsupportedField(String::new()))
        );
        assert_eq!(
            format_named("{a:>3}", &fields),
            Err(FormatError::UnsupportedField("a:>3".into()))
        );
        assert_eq!(
            format_named("x {a", &fields),
            Err(FormatError::UnmatchedBrace('{'))
        );
        assert_eq!(
            format_named("x } y", &fields),
            Err(FormatError::UnmatchedBrace('}'))
        );
    }

    #[test]
    fn float_repr_is_pythons() {
        let cases = [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456.789, "123456.789"),
            (0.0, "0.0"),
            (f64::INFINITY, "inf"),
        ];
        for (value, repr) in cases {
            assert_eq!(float_repr(value), repr, "{value}");
        }
    }

    #[test]
    fn yaml_scalars_print_as_python_str() {
        let load = |text: &str| serde_yaml::from_str::<serde_yaml::Value>(text).unwrap();
        assert_eq!(yaml_scalar_str(&load("~")), None);
        assert_eq!(yaml_scalar_str(&load("true")), Some(Ok("True".into())));
        assert_eq!(yaml_scalar_str(&load("5")), Some(Ok("5".into())));
        assert_eq!(yaml_scalar_str(&load("0.50")), Some(Ok("0.5".into())));
        assert_eq!(yaml_scalar_str(&load("'0.50'")), Some(Ok("0.50".into())));
        assert!(matches!(yaml_scalar_str(&load("[1]")), Some(Err(_))));
    }

    #[test]
    fn numbers_are_read_as_python_reads_them() {
        for text in ["1", "-3", "+4", " 5 ", "1_000", "007"] {
            assert!(is_python_int(text), "{text}");
            assert!(is_python_float(text), "{text}");
        }
        for text in [
            "1.5",
            ".5",
            "5.",
            "1e-3",
            "-1E+3",
            "inf",
            "-Infinity",
            "nan",
            "1_0.5",
        ] {
            assert!(is_python_float(text), "{text}");
            assert!(!is_python_int(text), "{text}");
        }
        for text in ["", "abc", "1__0", "_1", "1_", "0x10", "1,5", "- 1"] {
            assert!(!is_python_float(text), "{text}");
            assert!(!is_python_int(text), "{text}");
        }
    }

    #[test]
    fn scheme_is_urlparses() {
        assert_eq!(url_scheme("runs:/abc/model"), "runs");
        assert_eq!(url_scheme("S3://bucket/key"), "s3");
        assert_eq!(url_scheme("mlflow-artifacts:/1/x"), "mlflow-artifacts");
        assert_eq!(url_scheme("/tmp/data.csv"), "");
        assert_eq!(url_scheme("data.csv"), "");
        assert_eq!(url_scheme("1abc:/x"), "");
        assert_eq!(url_scheme("a_b:/x"), "");
        assert_eq!(url_scheme("C:\\data"), "c");
    }
}
