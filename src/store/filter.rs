//! MLflow's search grammar: the `filter` strings and `order_by` entries of the search endpoints
//! (runs, experiments, registered models, model versions, logged models), turned into a small AST
//! and validated per entity the way MLflow 3.17 does (`mlflow/utils/search_utils.py`, and the SQL
//! stores that finish its checks).
//!
//! This module does no I/O and builds no SQL: the store compiles [`Clause`] and [`OrderBy`] into
//! parameterized queries. Every error is a client mistake (`INVALID_PARAMETER_VALUE`); its message
//! names the offending token and its 0-based character position.
//!
//! What the store must still know, because it is semantics rather than syntax:
//! - a clause on a metric/param/tag the row lacks is false, `!=` included; `IS NULL` selects those;
//! - except ``tags.`mlflow.prompt.is_prompt` != 'true'`` (and `= 'false'`) on registered models and
//!   model versions, which models *without* that tag satisfy: the client appends it to every search;
//! - `LIKE` is case-sensitive, `ILIKE` is not; string values are compared exactly as written
//!   (MLflow does not unescape `''` or `\'` inside a scalar value, so neither does this parser).
//!
//! Where this parser is stricter than MLflow's sqlparse-based one (MLflow accepts these by
//! accident): a trailing, leading or doubled `AND`; two clauses with no `AND` between them; a list
//! with `=`; an empty key; non-ASCII outside quotes. Where it is more lenient (harmless): the
//! `attributes.`/`attr.` prefix and backtick-quoted keys on every entity, `IS  NOT  NULL` with any
//! spacing, `1e+5`, order_by aliases such as `` `Run name` ``.

use std::iter::Peekable;
use std::vec::IntoIter;

/// The longest filter or order_by entry accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// The most items one `IN (…)` / `NOT IN (…)` list may hold.
pub const MAX_LIST_ITEMS: usize = 10_000;

/// Integers beyond 2^53 would not survive the trip through [`Value::Number`].
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Longest piece of user input quoted back in an error message.
const MAX_SNIPPET_CHARS: usize = 40;

/// Which search endpoint a filter or order_by belongs to; each allows different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchEntity {
    Runs,
    Experiments,
    RegisteredModels,
    ModelVersions,
    LoggedModels,
}

/// One `key comparator value` clause; a filter is these joined by `AND`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub key: Key,
    pub op: Comparator,
    pub value: Value,
}

/// What a clause or order_by entry is about. Names are as written, prefix and quotes removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(Attribute),
    /// Runs only: a field of the run's input datasets.
    Dataset(DatasetField),
}

/// A column of the searched entity, aliases already resolved (`created` is [`Attribute::StartTime`],
/// `` `Run name` `` is [`Attribute::RunName`], …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// Runs, model versions.
    RunId,
    /// Runs; MLflow matches it against the `mlflow.runName` tag.
    RunName,
    /// Runs, logged models.
    Status,
    /// Runs.
    UserId,
    /// Runs.
    ArtifactUri,
    /// Runs (alias `created`).
    StartTime,
    /// Runs.
    EndTime,
    /// Never produced by the parser (no MLflow search accepts it); kept for callers' own filters.
    LifecycleStage,
    /// Experiments, registered models, model versions, logged models.
    Name,
    /// Experiments; a string on the wire, only `= != IN NOT IN`.
    ExperimentId,
    /// Experiments.
    CreationTime,
    /// Experiments.
    LastUpdateTime,
    /// Model versions and logged models (alias `creation_time`); registered models in order_by.
    CreationTimestamp,
    /// Model versions and logged models (alias `last_updated_time`); registered models in
    /// order_by, where `timestamp` also means this (as in MLflow's SQL store).
    LastUpdatedTimestamp,
    /// Model versions: the `version` column.
    VersionNumber,
    /// Model versions: the `source` column.
    SourcePath,
    /// Logged models.
    ModelId,
    /// Logged models.
    ModelType,
    /// Logged models.
    SourceRunId,
}

impl Attribute {
    /// True for timestamp and version columns, which compare as numbers with `= != < <= > >=`.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Attribute::StartTime
                | Attribute::EndTime
                | Attribute::CreationTime
                | Attribute::LastUpdateTime
                | Attribute::CreationTimestamp
                | Attribute::LastUpdatedTimestamp
                | Attribute::VersionNumber
        )
    }

    /// The canonical MLflow name, e.g. `start_time`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribute::RunId => "run_id",
            Attribute::RunName => "run_name",
            Attribute::Status => "status",
            Attribute::UserId => "user_id",
            Attribute::ArtifactUri => "artifact_uri",
            Attribute::StartTime => "start_time",
            Attribute::EndTime => "end_time",
            Attribute::LifecycleStage => "lifecycle_stage",
            Attribute::Name => "name",
            Attribute::ExperimentId => "experiment_id",
            Attribute::CreationTime => "creation_time",
            Attribute::LastUpdateTime => "last_update_time",
            Attribute::CreationTimestamp => "creation_timestamp",
            Attribute::LastUpdatedTimestamp => "last_updated_timestamp",
            Attribute::VersionNumber => "version_number",
            Attribute::SourcePath => "source_path",
            Attribute::ModelId => "model_id",
            Attribute::ModelType => "model_type",
            Attribute::SourceRunId => "source_run_id",
        }
    }
}

/// A field of a run's input datasets (`datasets.name`, …); `context` is the
/// `mlflow.data.context` tag of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetField {
    Name,
    Digest,
    Context,
}

/// A comparator; [`Comparator::as_str`] gives its SQL spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Comparator {
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE`, `ILIKE`, `IN`, `NOT IN`, `IS NULL`, `IS NOT NULL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "!=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Like => "LIKE",
            Comparator::ILike => "ILIKE",
            Comparator::In => "IN",
            Comparator::NotIn => "NOT IN",
            Comparator::IsNull => "IS NULL",
            Comparator::IsNotNull => "IS NOT NULL",
        }
    }
}

impl std::fmt::Display for Comparator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The right-hand side of a clause. Which one a clause carries follows from key and comparator:
/// `Number` for metrics and numeric attributes (integral where MLflow demands it), `String` for
/// everything else, `List` exactly for `IN`/`NOT IN` (never empty), `Null` exactly for
/// `IS NULL`/`IS NOT NULL`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    String(String),
    List(Vec<String>),
    Null,
}

/// One parsed order_by entry: `<key> [ASC|DESC]`, ascending by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub key: Key,
    pub ascending: bool,
}

/// Why a filter or order_by was rejected. The message is meant for the API client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("Search {what} is {length} bytes long; the limit is {max} bytes", max = MAX_INPUT_BYTES)]
    TooLong { what: &'static str, length: usize },
    #[error("Unexpected character {found:?} at position {position}{hint}")]
    UnexpectedCharacter {
        found: char,
        position: usize,
        hint: &'static str,
    },
    #[error("Unterminated quote {quote} at position {position}: the closing {quote} is missing")]
    UnterminatedQuote { quote: char, position: usize },
    #[error("Expected {expected} at position {position}, found {found}")]
    Syntax {
        expected: String,
        found: String,
        position: usize,
    },
    #[error("{found} at position {position} is not supported: {reason}")]
    Unsupported {
        found: String,
        position: usize,
        reason: &'static str,
    },
    #[error("Invalid entity prefix '{prefix}' at position {position}: expected one of {expected}")]
    UnknownPrefix {
        prefix: String,
        position: usize,
        expected: String,
    },
    #[error("Invalid {kind} '{name}' at position {position}: expected one of {expected}")]
    UnknownKey {
        kind: &'static str,
        name: String,
        position: usize,
        expected: String,
    },
    #[error(
        "Invalid comparator '{comparator}' for {subject} at position {position}: expected one of {expected}"
    )]
    InvalidComparator {
        comparator: String,
        subject: String,
        position: usize,
        expected: String,
    },
    #[error("Invalid value {found} for {subject} at position {position}: expected {expected}")]
    InvalidValue {
        found: String,
        subject: String,
        position: usize,
        expected: String,
    },
    #[error("The list for {subject} at position {position} has more than {max} items", max = MAX_LIST_ITEMS)]
    ListTooLong { subject: String, position: usize },
}

/// Parses a search filter: `clause [AND clause]*`. An empty or blank filter matches everything.
pub fn parse_filter(entity: SearchEntity, filter: &str) -> Result<Vec<Clause>, FilterError> {
    check_length("filter", filter)?;
    if filter.chars().all(is_space) {
        return Ok(Vec::new());
    }
    let mut parser = Parser::new(entity, Context::Filter, filter)?;
    let mut clauses = Vec::new();
    loop {
        clauses.push(parser.clause()?);
        let Some(token) = parser.tokens.next() else {
            return Ok(clauses);
        };
        if token.is_word("AND") {
            if parser.tokens.peek().is_none() {
                return Err(FilterError::Syntax {
                    expected: "a clause after AND".into(),
                    found: parser.end_description(),
                    position: parser.end_position,
                });
            }
        } else if token.is_word("OR") {
            return Err(unsupported_or(&token));
        } else if token.kind == TokenKind::CloseParen {
            return Err(FilterError::Unsupported {
                found: token.describe(),
                position: token.position,
                reason: "unbalanced parenthesis; parentheses are not part of the filter grammar",
            });
        } else {
            return Err(FilterError::Syntax {
                expected: "AND or end of filter".into(),
                found: token.describe(),
                position: token.position,
            });
        }
    }
}

/// Parses one order_by entry: `<key> [ASC|DESC]`. For logged models (whose order_by is a JSON
/// object) pass its `field_name` and take the direction from its `ascending`.
pub fn parse_order_by(entity: SearchEntity, order_by: &str) -> Result<OrderBy, FilterError> {
    check_length("order_by", order_by)?;
    let mut parser = Parser::new(entity, Context::OrderBy, order_by)?;
    if parser.tokens.peek().is_none() {
        return Err(FilterError::Syntax {
            expected: "an order_by key".into(),
            found: "an empty order_by".into(),
            position: 0,
        });
    }
    let identifier = parser.identifier()?;
    let resolved = resolve_key(entity, Context::OrderBy, &identifier)?;
    let ascending = match parser.tokens.next() {
        None => true,
        Some(token) if token.is_word("ASC") => true,
        Some(token) if token.is_word("DESC") => false,
        Some(token) => {
            return Err(FilterError::Syntax {
                expected: "ASC, DESC or end of order_by".into(),
                found: token.describe(),
                position: token.position,
            });
        }
    };
    if let Some(token) = parser.tokens.next() {
        return Err(FilterError::Syntax {
            expected: "end of order_by (one key per order_by entry)".into(),
            found: token.describe(),
            position: token.position,
        });
    }
    Ok(OrderBy {
        key: resolved.key,
        ascending,
    })
}

fn check_length(what: &'static str, input: &str) -> Result<(), FilterError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(FilterError::TooLong {
            what,
            length: input.len(),
        });
    }
    Ok(())
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn snippet(text: &str) -> String {
    if text.chars().count() <= MAX_SNIPPET_CHARS {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX_SNIPPET_CHARS).collect();
        cut.push('…');
        cut
    }
}

fn unsupported_or(token: &Token) -> FilterError {
    FilterError::Unsupported {
        found: token.describe(),
        position: token.position,
        reason: "OR is not part of the filter grammar; a filter is clauses joined by AND",
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// A bare ASCII word: a key, a prefix or a keyword.
    Word,
    /// Text in `'…'`, `"…"` or `` `…` ``; the token's text is what is between the quotes, verbatim.
    Quoted(char),
    Number,
    /// A run of `<>=!~`, valid or not, so that `==` is reported as a bad comparator.
    Comparison,
    Dot,
    Comma,
    OpenParen,
    CloseParen,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    text: String,
    /// 0-based character index of the token's first character.
    position: usize,
    /// Character index just past the token.
    end: usize,
}

impl Token {
    fn is_word(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword)
    }

    /// The token as it appeared, quoted for an error message.
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::Quoted(quote) => format!("{quote}{}{quote}", snippet(&self.text)),
            _ => format!("'{}'", snippet(&self.text)),
        }
    }
}

fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if is_space(c) {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let after_dot = tokens.last().is_some_and(|t| t.kind == TokenKind::Dot);
        // `metrics.a.b`: a dot glued to a key continues the key; elsewhere `.5` is a number.
        let glued_to_key = tokens.last().is_some_and(|t| {
            t.end == i && matches!(t.kind, TokenKind::Word | TokenKind::Quoted(_))
        });
        let token = if after_dot && (c.is_ascii_alphanumeric() || c == '_') {
            // After a dot, MLflow takes `1x` as a key (`params.1x`), not as a number.
            let end = scan_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '_');
            simple_token(&chars, TokenKind::Word, i, end)
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = scan_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '_');
            simple_token(&chars, TokenKind::Word, i, end)
        } else if c.is_ascii_digit()
            || (c == '-' && starts_number(&chars, i + 1))
            || (c == '.' && !glued_to_key && next.is_some_and(|n| n.is_ascii_digit()))
        {
            lex_number(&chars, i)?
        } else if matches!(c, '\'' | '"' | '`') {
            lex_quoted(&chars, i, c)?
        } else if matches!(c, '<' | '>' | '=' | '!' | '~') {
            let end = scan_while(&chars, i, |c| matches!(c, '<' | '>' | '=' | '!' | '~'));
            simple_token(&chars, TokenKind::Comparison, i, end)
        } else if let Some(kind) = match c {
            '.' => Some(TokenKind::Dot),
            ',' => Some(TokenKind::Comma),
            '(' => Some(TokenKind::OpenParen),
            ')' => Some(TokenKind::CloseParen),
            _ => None,
        } {
            simple_token(&chars, kind, i, i + 1)
        } else {
            let hint = if !c.is_ascii() {
                ": only ASCII is allowed outside quotes; quote keys with backticks and values with '"
            } else if c == ';' {
                ": a filter is a single expression; join clauses with AND"
            } else if c == '+' {
                ": numbers take no '+' sign"
            } else if c == '-' {
                ": a minus sign must be followed directly by digits"
            } else {
                ""
            };
            return Err(FilterError::UnexpectedCharacter {
                found: c,
                position: i,
                hint,
            });
        };
        i = token.end;
        tokens.push(token);
    }
    Ok(tokens)
}

fn scan_while(chars: &[char], start: usize, accept: impl Fn(char) -> bool) -> usize {
    let mut end = start;
    while chars.get(end).is_some_and(|&c| accept(c)) {
        end += 1;
    }
    end
}

fn simple_token(chars: &[char], kind: TokenKind, start: usize, end: usize) -> Token {
    let text = chars.get(start..end).unwrap_or_default().iter().collect();
    Token {
        kind,
        text,
        position: start,
        end,
    }
}

fn starts_number(chars: &[char], at: usize) -> bool {
    match chars.get(at) {
        Some(c) if c.is_ascii_digit() => true,
        Some('.') => chars.get(at + 1).is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// `-?(digits[.digits*]|.digits)([eE][+-]?digits)?`, not glued to a word (`1abc` is no number).
fn lex_number(chars: &[char], start: usize) -> Result<Token, FilterError> {
    let mut end = start;
    if chars.get(end) == Some(&'-') {
        end += 1;
    }
    end = scan_while(chars, end, |c| c.is_ascii_digit());
    if chars.get(end) == Some(&'.') {
        end = scan_while(chars, end + 1, |c| c.is_ascii_digit());
    }
    if matches!(chars.get(end), Some('e' | 'E')) {
        let mut exponent = end + 1;
        if matches!(chars.get(exponent), Some('+' | '-')) {
            exponent += 1;
        }
        if chars.get(exponent).is_some_and(|c| c.is_ascii_digit()) {
            end = scan_while(chars, exponent, |c| c.is_ascii_digit());
        }
    }
    if chars
        .get(end)
        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        let garbage_end = scan_while(chars, end, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')
        });
        let found = simple_token(chars, TokenKind::Word, start, garbage_end);
        return Err(FilterError::Syntax {
            expected: "a number".into(),
            found: found.describe(),
            position: start,
        });
    }
    Ok(simple_token(chars, TokenKind::Number, start, end))
}

/// Quoted text as MLflow's lexer (sqlparse) reads it: a doubled quote, and for `'` and `"` a
/// backslash-quote, stay inside the text, verbatim. When the text never closes, that lexer's
/// regex backtracks to close at the last such escaped quote, so `'C:\'` is the text `C:\`.
fn lex_quoted(chars: &[char], start: usize, quote: char) -> Result<Token, FilterError> {
    let mut text = String::new();
    // (index of the quote to close at, length of `text` at that point)
    let mut fallback: Option<(usize, usize)> = None;
    let mut i = start + 1;
    loop {
        match chars.get(i).copied() {
            None => {
                let Some((close, text_len)) = fallback else {
                    return Err(FilterError::UnterminatedQuote {
                        quote,
                        position: start,
                    });
                };
                text.truncate(text_len);
                return Ok(Token {
                    kind: TokenKind::Quoted(quote),
                    text,
                    position: start,
                    end: close + 1,
                });
            }
            Some(c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    fallback = Some((i, text.len()));
                    text.push(quote);
                    text.push(quote);
                    i += 2;
                } else {
                    return Ok(Token {
                        kind: TokenKind::Quoted(quote),
                        text,
                        position: start,
                        end: i + 1,
                    });
                }
            }
            Some('\\') if quote != '`' && chars.get(i + 1) == Some(&quote) => {
                fallback = Some((i + 1, text.len() + 1));
                text.push('\\');
                text.push(quote);
                i += 2;
            }
            Some(c) => {
                text.push(c);
                i += 1;
            }
        }
    }
}

/// A list item the way MLflow reads lists (Python's `ast.literal_eval`): the common backslash
/// escapes are decoded, unknown ones kept verbatim, and `'a''b'` is two adjacent literals, `ab`.
fn python_string_value(text: &str, quote: char) -> String {
    let mut value = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let decoded = match chars.peek() {
                Some('\\') => Some(Some('\\')),
                Some('\'') => Some(Some('\'')),
                Some('"') => Some(Some('"')),
                Some('n') => Some(Some('\n')),
                Some('t') => Some(Some('\t')),
                Some('r') => Some(Some('\r')),
                Some('\n') => Some(None), // a line continuation
                _ => None,
            };
            match decoded {
                Some(decoded) => {
                    chars.next();
                    value.extend(decoded);
                }
                None => value.push('\\'),
            }
        } else if c == quote && chars.peek() == Some(&quote) {
            chars.next();
        } else {
            value.push(c);
        }
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Keys

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Filter,
    OrderBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

const METRIC_PARAM_TAG_ATTRIBUTE_PREFIXES: &[(&str, KeyKind)] = &[
    ("metrics", KeyKind::Metric),
    ("metric", KeyKind::Metric),
    ("params", KeyKind::Param),
    ("param", KeyKind::Param),
    ("parameters", KeyKind::Param),
    ("parameter", KeyKind::Param),
    ("tags", KeyKind::Tag),
    ("tag", KeyKind::Tag),
    ("attributes", KeyKind::Attribute),
    ("attribute", KeyKind::Attribute),
    ("attr", KeyKind::Attribute),
];

const RUN_ONLY_PREFIXES: &[(&str, KeyKind)] = &[
    ("run", KeyKind::Attribute),
    ("datasets", KeyKind::Dataset),
    ("dataset", KeyKind::Dataset),
];

const RUN_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("run_id", Attribute::RunId),
    ("run_name", Attribute::RunName),
    ("status", Attribute::Status),
    ("user_id", Attribute::UserId),
    ("artifact_uri", Attribute::ArtifactUri),
    ("start_time", Attribute::StartTime),
    ("end_time", Attribute::EndTime),
    ("created", Attribute::StartTime),
    ("Created", Attribute::StartTime),
    ("run name", Attribute::RunName),
    ("Run name", Attribute::RunName),
    ("Run Name", Attribute::RunName),
];

const EXPERIMENT_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("name", Attribute::Name),
    ("experiment_id", Attribute::ExperimentId),
    ("creation_time", Attribute::CreationTime),
    ("last_update_time", Attribute::LastUpdateTime),
];

const REGISTERED_MODEL_FILTER_ATTRIBUTES: &[(&str, Attribute)] = &[("name", Attribute::Name)];

const REGISTERED_MODEL_ORDER_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("name", Attribute::Name),
    ("timestamp", Attribute::LastUpdatedTimestamp),
    ("last_updated_timestamp", Attribute::LastUpdatedTimestamp),
    ("creation_timestamp", Attribute::CreationTimestamp),
];

const MODEL_VERSION_FILTER_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("name", Attribute::Name),
    ("run_id", Attribute::RunId),
    ("source_path", Attribute::SourcePath),
    ("version_number", Attribute::VersionNumber),
];

const MODEL_VERSION_ORDER_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("name", Attribute::Name),
    ("version_number", Attribute::VersionNumber),
    ("creation_timestamp", Attribute::CreationTimestamp),
    ("last_updated_timestamp", Attribute::LastUpdatedTimestamp),
];

const LOGGED_MODEL_ATTRIBUTES: &[(&str, Attribute)] = &[
    ("name", Attribute::Name),
    ("model_id", Attribute::ModelId),
    ("model_type", Attribute::ModelType),
    ("status", Attribute::Status),
    ("source_run_id", Attribute::SourceRunId),
    ("creation_timestamp", Attribute::CreationTimestamp),
    ("creation_time", Attribute::CreationTimestamp),
    ("last_updated_timestamp", Attribute::LastUpdatedTimestamp),
    ("last_updated_time", Attribute::LastUpdatedTimestamp),
];

const DATASET_FIELDS: &[(&str, DatasetField)] = &[
    ("name", DatasetField::Name),
    ("digest", DatasetField::Digest),
    ("context", DatasetField::Context),
];

impl SearchEntity {
    fn allows(self, context: Context, kind: KeyKind) -> bool {
        use KeyKind::*;
        match (self, context) {
            (SearchEntity::Runs, Context::Filter) => true,
            (SearchEntity::Runs, Context::OrderBy) => kind != Dataset,
            (
                SearchEntity::Experiments
                | SearchEntity::RegisteredModels
                | SearchEntity::ModelVersions,
                Context::Filter,
            ) => {
                matches!(kind, Tag | Attribute)
            }
            (
                SearchEntity::Experiments
                | SearchEntity::RegisteredModels
                | SearchEntity::ModelVersions,
                Context::OrderBy,
            ) => kind == Attribute,
            (SearchEntity::LoggedModels, Context::Filter) => {
                matches!(kind, Metric | Param | Tag | Attribute)
            }
            (SearchEntity::LoggedModels, Context::OrderBy) => matches!(kind, Metric | Attribute),
        }
    }

    fn prefixes(self, context: Context) -> Vec<(&'static str, KeyKind)> {
        let run_only: &[(&str, KeyKind)] = if self == SearchEntity::Runs {
            RUN_ONLY_PREFIXES
        } else {
            &[]
        };
        METRIC_PARAM_TAG_ATTRIBUTE_PREFIXES
            .iter()
            .chain(run_only)
            .filter(|(_, kind)| self.allows(context, *kind))
            .copied()
            .collect()
    }

    fn attributes(self, context: Context) -> &'static [(&'static str, Attribute)] {
        match (self, context) {
            (SearchEntity::Runs, _) => RUN_ATTRIBUTES,
            (SearchEntity::Experiments, _) => EXPERIMENT_ATTRIBUTES,
            (SearchEntity::RegisteredModels, Context::Filter) => REGISTERED_MODEL_FILTER_ATTRIBUTES,
            (SearchEntity::RegisteredModels, Context::OrderBy) => REGISTERED_MODEL_ORDER_ATTRIBUTES,
            (SearchEntity::ModelVersions, Context::Filter) => MODEL_VERSION_FILTER_ATTRIBUTES,
            (SearchEntity::ModelVersions, Context::OrderBy) => MODEL_VERSION_ORDER_ATTRIBUTES,
            (SearchEntity::LoggedModels, _) => LOGGED_MODEL_ATTRIBUTES,
        }
    }
}

fn quoted_names<T>(table: &[(&str, T)]) -> String {
    table
        .iter()
        .map(|(name, _)| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One part of a dotted key as written: `metrics`, `` `a b` ``, `"x"`.
#[derive(Debug)]
struct Segment {
    text: String,
    quoted: bool,
    position: usize,
}

#[derive(Debug)]
struct Identifier {
    segments: Vec<Segment>,
    position: usize,
}

/// A key with the words an error message uses for it, e.g. `metric 'acc'`.
#[derive(Debug)]
struct ResolvedKey {
    key: Key,
    subject: String,
}

fn resolve_key(
    entity: SearchEntity,
    context: Context,
    identifier: &Identifier,
) -> Result<ResolvedKey, FilterError> {
    let (prefix, rest) = match identifier.segments.as_slice() {
        [] => {
            return Err(FilterError::Syntax {
                expected: "a key".into(),
                found: "nothing".into(),
                position: identifier.position,
            });
        }
        [only] => return resolve_attribute(entity, context, &only.text, only.position),
        [prefix, rest @ ..] => (prefix, rest),
    };
    let prefixes = entity.prefixes(context);
    let Some(&(_, kind)) = prefixes.iter().find(|(name, _)| *name == prefix.text) else {
        return Err(FilterError::UnknownPrefix {
            prefix: snippet(&prefix.text),
            position: prefix.position,
            expected: prefixes
                .iter()
                .map(|(name, _)| format!("'{name}.'"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let key_position = rest
        .first()
        .map_or(prefix.position, |segment| segment.position);
    let key = match rest {
        [single] => single.text.clone(),
        _ => {
            // `tags.mlflow.runName` is one key; a quoted part must be the whole key.
            if let Some(quoted) = rest.iter().find(|segment| segment.quoted) {
                return Err(FilterError::Syntax {
                    expected: format!(
                        "a key quoted as a whole after '{}.', e.g. {}.`a.b`",
                        prefix.text, prefix.text
                    ),
                    found: "a quoted part of a dotted key".into(),
                    position: quoted.position,
                });
            }
            rest.iter()
                .map(|segment| segment.text.as_str())
                .collect::<Vec<_>>()
                .join(".")
        }
    };
    if key.is_empty() {
        return Err(FilterError::Syntax {
            expected: format!("a non-empty key after '{}.'", prefix.text),
            found: "an empty key".into(),
            position: key_position,
        });
    }
    let name = snippet(&key);
    Ok(match kind {
        KeyKind::Metric => ResolvedKey {
            subject: format!("metric '{name}'"),
            key: Key::Metric(key),
        },
        KeyKind::Param => ResolvedKey {
            subject: format!("param '{name}'"),
            key: Key::Param(key),
        },
        KeyKind::Tag => ResolvedKey {
            subject: format!("tag '{name}'"),
            key: Key::Tag(key),
        },
        KeyKind::Attribute => return resolve_attribute(entity, context, &key, key_position),
        KeyKind::Dataset => {
            let Some(&(_, field)) = DATASET_FIELDS.iter().find(|(field, _)| *field == key) else {
                return Err(FilterError::UnknownKey {
                    kind: "dataset field",
                    name,
                    position: key_position,
                    expected: quoted_names(DATASET_FIELDS),
                });
            };
            ResolvedKey {
                subject: format!("dataset field '{name}'"),
                key: Key::Dataset(field),
            }
        }
    })
}

fn resolve_attribute(
    entity: SearchEntity,
    context: Context,
    name: &str,
    position: usize,
) -> Result<ResolvedKey, FilterError> {
    let attributes = entity.attributes(context);
    match attributes.iter().find(|(known, _)| *known == name) {
        Some(&(_, attribute)) => Ok(ResolvedKey {
            key: Key::Attribute(attribute),
            subject: format!("attribute '{name}'"),
        }),
        None => Err(FilterError::UnknownKey {
            kind: if context == Context::Filter {
                "attribute"
            } else {
                "order_by attribute"
            },
            name: snippet(name),
            position,
            expected: quoted_names(attributes),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparators and values

const NUMERIC_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Lt,
    Comparator::Le,
    Comparator::Gt,
    Comparator::Ge,
];
const STRING_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
];
const STRING_OR_LIST_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
    Comparator::In,
    Comparator::NotIn,
];
const NULLABLE_STRING_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
    Comparator::IsNull,
    Comparator::IsNotNull,
];
const IDENTIFIER_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::In,
    Comparator::NotIn,
];

fn allowed_comparators(entity: SearchEntity, key: &Key) -> &'static [Comparator] {
    match (entity, key) {
        (_, Key::Metric(_)) => NUMERIC_COMPARATORS,
        (_, Key::Attribute(attribute)) if attribute.is_numeric() => NUMERIC_COMPARATORS,
        (_, Key::Dataset(_)) => STRING_OR_LIST_COMPARATORS,
        // IS NULL exists for run params/tags and experiment tags only, as in MLflow.
        (SearchEntity::Runs | SearchEntity::Experiments, Key::Param(_) | Key::Tag(_)) => {
            NULLABLE_STRING_COMPARATORS
        }
        (SearchEntity::LoggedModels, Key::Param(_) | Key::Tag(_)) => STRING_OR_LIST_COMPARATORS,
        (_, Key::Param(_) | Key::Tag(_)) => STRING_COMPARATORS,
        (SearchEntity::Experiments, Key::Attribute(Attribute::ExperimentId)) => {
            IDENTIFIER_COMPARATORS
        }
        (SearchEntity::Runs, Key::Attribute(Attribute::RunId)) => STRING_OR_LIST_COMPARATORS,
        (SearchEntity::RegisteredModels, Key::Attribute(_)) => STRING_OR_LIST_COMPARATORS,
        (SearchEntity::ModelVersions, Key::Attribute(Attribute::Name | Attribute::RunId)) => {
            STRING_OR_LIST_COMPARATORS
        }
        (SearchEntity::LoggedModels, Key::Attribute(_)) => STRING_OR_LIST_COMPARATORS,
        (_, Key::Attribute(_)) => STRING_COMPARATORS,
    }
}

fn comparator_list(comparators: &[Comparator]) -> String {
    comparators
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a scalar value must be written for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueType {
    String,
    /// Any number literal (metrics; run and logged-model timestamps).
    Number,
    /// An integer literal; MLflow's SQL stores reject fractions here.
    Integer {
        quoted_allowed: bool,
    },
}

fn value_type(entity: SearchEntity, key: &Key) -> ValueType {
    match (entity, key) {
        (_, Key::Metric(_)) => ValueType::Number,
        // MLflow's model-version store int()s the value, so `version_number = '3'` works there.
        (SearchEntity::ModelVersions, Key::Attribute(Attribute::VersionNumber)) => {
            ValueType::Integer {
                quoted_allowed: true,
            }
        }
        (SearchEntity::Experiments, Key::Attribute(attribute)) if attribute.is_numeric() => {
            ValueType::Integer {
                quoted_allowed: false,
            }
        }
        (_, Key::Attribute(attribute)) if attribute.is_numeric() => ValueType::Number,
        _ => ValueType::String,
    }
}

/// Python's `int()` of a string: surrounding space, a sign, digits with single `_` between.
fn parse_python_int(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    if !digits.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    let magnitude: f64 = cleaned.parse().ok()?;
    (magnitude <= MAX_EXACT_INTEGER).then_some(if negative { -magnitude } else { magnitude })
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    entity: SearchEntity,
    context: Context,
    tokens: Peekable<IntoIter<Token>>,
    end_position: usize,
}

impl Parser {
    fn new(entity: SearchEntity, context: Context, input: &str) -> Result<Self, FilterError> {
        Ok(Parser {
            entity,
            context,
            tokens: lex(input)?.into_iter().peekable(),
            end_position: input.chars().count(),
        })
    }

    fn end_description(&self) -> String {
        match self.context {
            Context::Filter => "end of filter".into(),
            Context::OrderBy => "end of order_by".into(),
        }
    }

    fn describe(&self, token: Option<&Token>) -> String {
        token.map_or_else(|| self.end_description(), Token::describe)
    }

    fn position(&self, token: Option<&Token>) -> usize {
        token.map_or(self.end_position, |token| token.position)
    }

    fn clause(&mut self) -> Result<Clause, FilterError> {
        let identifier = self.identifier()?;
        let resolved = resolve_key(self.entity, Context::Filter, &identifier)?;
        let (op, written, op_position) = self.comparator(&resolved.subject)?;
        let allowed = allowed_comparators(self.entity, &resolved.key);
        let op = match op {
            Some(op) if allowed.contains(&op) => op,
            _ => {
                return Err(FilterError::InvalidComparator {
                    comparator: snippet(&written),
                    subject: resolved.subject,
                    position: op_position,
                    expected: comparator_list(allowed),
                });
            }
        };
        let value = match op {
            Comparator::IsNull | Comparator::IsNotNull => Value::Null,
            Comparator::In | Comparator::NotIn => self.list(&resolved.subject)?,
            _ => self.scalar(&resolved)?,
        };
        Ok(Clause {
            key: resolved.key,
            op,
            value,
        })
    }

    /// Reads `segment(.segment)*` where a segment is a bare word or quoted text.
    fn identifier(&mut self) -> Result<Identifier, FilterError> {
        let what = if self.context == Context::Filter {
            "a clause"
        } else {
            "an order_by key"
        };
        let token = self.tokens.next();
        let first = match token {
            Some(token) if token.is_word("AND") => {
                return Err(FilterError::Syntax {
                    expected: format!("{what} (empty clause)"),
                    found: token.describe(),
                    position: token.position,
                });
            }
            Some(token) if token.is_word("OR") => return Err(unsupported_or(&token)),
            Some(token) if token.is_word("NOT") => {
                return Err(FilterError::Unsupported {
                    found: token.describe(),
                    position: token.position,
                    reason: "NOT only appears in NOT IN and IS NOT NULL",
                });
            }
            Some(token) if token.kind == TokenKind::OpenParen => {
                return Err(FilterError::Unsupported {
                    found: token.describe(),
                    position: token.position,
                    reason: "parentheses are not part of the filter grammar; a filter is clauses joined by AND",
                });
            }
            Some(token) if token.kind == TokenKind::CloseParen => {
                return Err(FilterError::Unsupported {
                    found: token.describe(),
                    position: token.position,
                    reason: "unbalanced parenthesis; parentheses are not part of the filter grammar",
                });
            }
            Some(token) if matches!(token.kind, TokenKind::Word | TokenKind::Quoted('"' | '`')) => {
                token
            }
            Some(token) if token.kind == TokenKind::Quoted('\'') => {
                return Err(FilterError::Syntax {
                    expected: format!(
                        "{what}; keys are quoted with backticks or double quotes, not '"
                    ),
                    found: token.describe(),
                    position: token.position,
                });
            }
            other => {
                return Err(FilterError::Syntax {
                    expected: what.into(),
                    found: self.describe(other.as_ref()),
                    position: self.position(other.as_ref()),
                });
            }
        };
        let position = first.position;
        let mut segments = vec![Segment {
            quoted: first.kind != TokenKind::Word,
            text: first.text,
            position: first.position,
        }];
        while self
            .tokens
            .next_if(|token| token.kind == TokenKind::Dot)
            .is_some()
        {
            match self.tokens.next() {
                Some(token) if matches!(token.kind, TokenKind::Word | TokenKind::Quoted(_)) => {
                    segments.push(Segment {
                        quoted: token.kind != TokenKind::Word,
                        text: token.text,
                        position: token.position,
                    });
                }
                other => {
                    return Err(FilterError::Syntax {
                        expected: "a key after '.'".into(),
                        found: self.describe(other.as_ref()),
                        position: self.position(other.as_ref()),
                    });
                }
            }
        }
        Ok(Identifier { segments, position })
    }

    /// Reads a comparator; `None` with its spelling when it is no comparator MLflow knows here.
    fn comparator(
        &mut self,
        subject: &str,
    ) -> Result<(Option<Comparator>, String, usize), FilterError> {
        let missing =
            |parser: &Self, token: Option<&Token>, expected: String| FilterError::Syntax {
                expected,
                found: parser.describe(token),
                position: parser.position(token),
            };
        let Some(token) = self.tokens.next() else {
            return Err(missing(self, None, format!("a comparator after {subject}")));
        };
        let position = token.position;
        let op = match token.kind {
            TokenKind::Comparison => match token.text.as_str() {
                "=" => Some(Comparator::Eq),
                "!=" => Some(Comparator::Ne),
                "<" => Some(Comparator::Lt),
                "<=" => Some(Comparator::Le),
                ">" => Some(Comparator::Gt),
                ">=" => Some(Comparator::Ge),
                _ => None,
            },
            TokenKind::Word => match token.text.to_ascii_uppercase().as_str() {
                "LIKE" => Some(Comparator::Like),
                "ILIKE" => Some(Comparator::ILike),
                "IN" => Some(Comparator::In),
                "NOT" => match self.tokens.next() {
                    Some(next) if next.is_word("IN") => {
                        return Ok((Some(Comparator::NotIn), "NOT IN".into(), position));
                    }
                    Some(next)
                        if ["LIKE", "ILIKE", "RLIKE"]
                            .iter()
                            .any(|word| next.is_word(word)) =>
                    {
                        let written = format!("NOT {}", next.text.to_ascii_uppercase());
                        return Ok((None, written, position));
                    }
                    other => return Err(missing(self, other.as_ref(), "IN after NOT".into())),
                },
                "IS" => match self.tokens.next() {
                    Some(next) if next.is_word("NULL") => {
                        return Ok((Some(Comparator::IsNull), "IS NULL".into(), position));
                    }
                    Some(next) if next.is_word("NOT") => match self.tokens.next() {
                        Some(last) if last.is_word("NULL") => {
                            return Ok((
                                Some(Comparator::IsNotNull),
                                "IS NOT NULL".into(),
                                position,
                            ));
                        }
                        other => {
                            return Err(missing(self, other.as_ref(), "NULL after IS NOT".into()));
                        }
                    },
                    other => {
                        return Err(missing(
                            self,
                            other.as_ref(),
                            "NULL or NOT NULL after IS".into(),
                        ));
                    }
                },
                "RLIKE" | "REGEXP" | "GLOB" | "MATCH" | "BETWEEN" => None,
                _ => {
                    return Err(missing(
                        self,
                        Some(&token),
                        format!("a comparator after {subject}"),
                    ));
                }
            },
            _ => {
                return Err(missing(
                    self,
                    Some(&token),
                    format!("a comparator after {subject}"),
                ));
            }
        };
        let written = if token.kind == TokenKind::Word {
            token.text.to_ascii_uppercase()
        } else {
            token.text
        };
        Ok((op, written, position))
    }

    fn scalar(&mut self, resolved: &ResolvedKey) -> Result<Value, FilterError> {
        let Some(token) = self.tokens.next() else {
            return Err(FilterError::Syntax {
                expected: format!("a value for {}", resolved.subject),
                found: self.end_description(),
                position: self.end_position,
            });
        };
        let invalid = |expected: &str| FilterError::InvalidValue {
            found: if token.kind == TokenKind::OpenParen {
                "a list".into()
            } else {
                token.describe()
            },
            subject: resolved.subject.clone(),
            position: token.position,
            expected: expected.into(),
        };
        let list_hint = "a single value; lists go with IN or NOT IN";
        match value_type(self.entity, &resolved.key) {
            ValueType::String => match token.kind {
                TokenKind::Quoted('\'' | '"') => Ok(Value::String(token.text.clone())),
                TokenKind::Quoted(_) => Err(invalid(
                    "a string quoted with ' or \" (backticks quote keys)",
                )),
                TokenKind::OpenParen => Err(invalid(list_hint)),
                _ => Err(invalid("a string quoted with ' or \"")),
            },
            ValueType::Number => match token.kind {
                TokenKind::Number => match token.text.parse::<f64>() {
                    Ok(number) => Ok(Value::Number(number)),
                    Err(_) => Err(invalid("a number")),
                },
                TokenKind::Quoted(_) => Err(invalid("a number (numbers are not quoted)")),
                TokenKind::OpenParen => Err(invalid(list_hint)),
                _ => Err(invalid("a number")),
            },
            ValueType::Integer { quoted_allowed } => {
                let integer = match token.kind {
                    TokenKind::Number if !token.text.contains(['.', 'e', 'E']) => token
                        .text
                        .parse::<f64>()
                        .ok()
                        .filter(|number| number.abs() <= MAX_EXACT_INTEGER),
                    TokenKind::Quoted('\'' | '"') if quoted_allowed => {
                        parse_python_int(&token.text)
                    }
                    TokenKind::Quoted(_) => {
                        return Err(invalid("an integer (numbers are not quoted)"));
                    }
                    TokenKind::OpenParen => return Err(invalid(list_hint)),
                    _ => None,
                };
                integer
                    .map(Value::Number)
                    .ok_or_else(|| invalid("an integer"))
            }
        }
    }

    /// Reads `('a', "b", …)`: quoted strings only, at least one, a trailing comma allowed.
    fn list(&mut self, subject: &str) -> Result<Value, FilterError> {
        let open = match self.tokens.next() {
            Some(token) if token.kind == TokenKind::OpenParen => token,
            other => {
                return Err(FilterError::InvalidValue {
                    found: self.describe(other.as_ref()),
                    subject: subject.into(),
                    position: self.position(other.as_ref()),
                    expected: "a parenthesized list of quoted strings, e.g. ('a', 'b')".into(),
                });
            }
        };
        let unclosed = |parser: &Self, token: Option<&Token>, expected: &str| FilterError::Syntax {
            expected: format!(
                "{expected} to close the list opened at position {}",
                open.position
            ),
            found: parser.describe(token),
            position: parser.position(token),
        };
        let mut items = Vec::new();
        loop {
            let item = self.tokens.next();
            match item {
                Some(token) if token.kind == TokenKind::CloseParen && items.is_empty() => {
                    return Err(FilterError::InvalidValue {
                        found: "'()'".into(),
                        subject: subject.into(),
                        position: open.position,
                        expected: "a non-empty list of quoted strings".into(),
                    });
                }
                Some(Token {
                    kind: TokenKind::Quoted(quote @ ('\'' | '"')),
                    text,
                    ..
                }) => {
                    if items.len() == MAX_LIST_ITEMS {
                        return Err(FilterError::ListTooLong {
                            subject: subject.into(),
                            position: open.position,
                        });
                    }
                    items.push(python_string_value(&text, quote));
                }
                None => return Err(unclosed(self, None, "a quoted string or ')'")),
                Some(token) => {
                    return Err(FilterError::InvalidValue {
                        found: token.describe(),
                        subject: subject.into(),
                        position: token.position,
                        expected: "a list item quoted with ' or \"".into(),
                    });
                }
            }
            match self.tokens.next() {
                Some(token) if token.kind == TokenKind::CloseParen => break,
                Some(token) if token.kind == TokenKind::Comma => {
                    if self
                        .tokens
                        .next_if(|token| token.kind == TokenKind::CloseParen)
                        .is_some()
                    {
                        break;
                    }
                }
                other => return Err(unclosed(self, other.as_ref(), "',' or ')'")),
            }
        }
        Ok(Value::List(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Attribute as A;
    use SearchEntity::*;

    fn parse(entity: SearchEntity, filter: &str) -> Vec<Clause> {
        parse_filter(entity, filter)
            .unwrap_or_else(|error| panic!("{filter:?} should parse: {error}"))
    }

    fn one(entity: SearchEntity, filter: &str) -> Clause {
        let mut clauses = parse(entity, filter);
        assert_eq!(clauses.len(), 1, "{filter:?}");
        clauses.remove(0)
    }

    fn clause(key: Key, op: Comparator, value: Value) -> Clause {
        Clause { key, op, value }
    }

    fn string(text: &str) -> Value {
        Value::String(text.into())
    }

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|item| (*item).to_owned()).collect())
    }

    fn metric(name: &str) -> Key {
        Key::Metric(name.into())
    }

    fn param(name: &str) -> Key {
        Key::Param(name.into())
    }

    fn tag(name: &str) -> Key {
        Key::Tag(name.into())
    }

    /// Asserts the filter is rejected with a message containing every fragment.
    #[track_caller]
    fn rejects(entity: SearchEntity, filter: &str, fragments: &[&str]) -> FilterError {
        let error = match parse_filter(entity, filter) {
            Ok(clauses) => panic!("{filter:?} should be rejected, parsed as {clauses:?}"),
            Err(error) => error,
        };
        let message = error.to_string();
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "{filter:?}: {message:?} lacks {fragment:?}"
            );
        }
        error
    }

    #[track_caller]
    fn rejects_order(entity: SearchEntity, order_by: &str, fragments: &[&str]) {
        let message = match parse_order_by(entity, order_by) {
            Ok(parsed) => panic!("{order_by:?} should be rejected, parsed as {parsed:?}"),
            Err(error) => error.to_string(),
        };
        for fragment in fragments {
            assert!(
                message.contains(fragment),
                "{order_by:?}: {message:?} lacks {fragment:?}"
            );
        }
    }

    fn order(entity: SearchEntity, order_by: &str) -> OrderBy {
        parse_order_by(entity, order_by)
            .unwrap_or_else(|error| panic!("{order_by:?} should parse: {error}"))
    }

    const ALL_ENTITIES: [SearchEntity; 5] = [
        Runs,
        Experiments,
        RegisteredModels,
        ModelVersions,
        LoggedModels,
    ];

    const EVERY_COMPARATOR: [(&str, Comparator); 12] = [
        ("=", Comparator::Eq),
        ("!=", Comparator::Ne),
        ("<", Comparator::Lt),
        ("<=", Comparator::Le),
        (">", Comparator::Gt),
        (">=", Comparator::Ge),
        ("LIKE", Comparator::Like),
        ("ILIKE", Comparator::ILike),
        ("IN", Comparator::In),
        ("NOT IN", Comparator::NotIn),
        ("IS NULL", Comparator::IsNull),
        ("IS NOT NULL", Comparator::IsNotNull),
    ];

    /// Writes a clause with a value fitting the comparator and the key's type.
    fn filter_with(key: &str, op: &str, numeric: bool) -> String {
        match op {
            "IN" | "NOT IN" => format!("{key} {op} ('a', 'b')"),
            "IS NULL" | "IS NOT NULL" => format!("{key} {op}"),
            _ if numeric => format!("{key} {op} 5"),
            _ => format!("{key} {op} 'a'"),
        }
    }

    /// Checks that exactly `allowed` of all twelve comparators parse for `key`.
    #[track_caller]
    fn check_comparators(entity: SearchEntity, key: &str, numeric: bool, allowed: &[Comparator]) {
        for (spelling, comparator) in EVERY_COMPARATOR {
            let filter = filter_with(key, spelling, numeric);
            if allowed.contains(&comparator) {
                let parsed = one(entity, &filter);
                assert_eq!(parsed.op, comparator, "{filter}");
                let expected_value = match comparator {
                    Comparator::In | Comparator::NotIn => list(&["a", "b"]),
                    Comparator::IsNull | Comparator::IsNotNull => Value::Null,
                    _ if numeric => Value::Number(5.0),
                    _ => string("a"),
                };
                assert_eq!(parsed.value, expected_value, "{filter}");
            } else {
                rejects(
                    entity,
                    &filter,
                    &[
                        &format!("Invalid comparator '{spelling}'"),
                        "expected one of",
                    ],
                );
            }
        }
    }

    const NUMERIC: &[Comparator] = NUMERIC_COMPARATORS;
    const STRING: &[Comparator] = STRING_COMPARATORS;
    const STRING_OR_LIST: &[Comparator] = STRING_OR_LIST_COMPARATORS;
    const NULLABLE: &[Comparator] = NULLABLE_STRING_COMPARATORS;

    // ---- empty input ----

    #[test]
    fn empty_or_blank_filter_matches_everything() {
        for entity in ALL_ENTITIES {
            assert_eq!(parse(entity, ""), vec![]);
            assert_eq!(parse(entity, "   \t\n "), vec![]);
        }
    }

    // ---- comparators per key type ----

    #[test]
    fn run_comparators_per_key_type() {
        check_comparators(Runs, "metrics.acc", true, NUMERIC);
        check_comparators(Runs, "params.lr", false, NULLABLE);
        check_comparators(Runs, "tags.t", false, NULLABLE);
        check_comparators(Runs, "run_id", false, STRING_OR_LIST);
        for string_attribute in ["run_name", "status", "user_id", "artifact_uri"] {
            check_comparators(Runs, string_attribute, false, STRING);
        }
        for numeric_attribute in ["start_time", "end_time", "created"] {
            check_comparators(Runs, numeric_attribute, true, NUMERIC);
        }
        for dataset_field in ["datasets.name", "datasets.digest", "datasets.context"] {
            check_comparators(Runs, dataset_field, false, STRING_OR_LIST);
        }
    }

    #[test]
    fn experiment_comparators_per_key_type() {
        check_comparators(Experiments, "name", false, STRING);
        check_comparators(Experiments, "experiment_id", false, IDENTIFIER_COMPARATORS);
        check_comparators(Experiments, "creation_time", true, NUMERIC);
        check_comparators(Experiments, "last_update_time", true, NUMERIC);
        check_comparators(Experiments, "tags.t", false, NULLABLE);
    }

    #[test]
    fn registered_model_comparators_per_key_type() {
        check_comparators(RegisteredModels, "name", false, STRING_OR_LIST);
        check_comparators(RegisteredModels, "tags.t", false, STRING);
    }

    #[test]
    fn model_version_comparators_per_key_type() {
        check_comparators(ModelVersions, "name", false, STRING_OR_LIST);
        check_comparators(ModelVersions, "run_id", false, STRING_OR_LIST);
        check_comparators(ModelVersions, "source_path", false, STRING);
        check_comparators(ModelVersions, "version_number", true, NUMERIC);
        check_comparators(ModelVersions, "tags.t", false, STRING);
    }

    #[test]
    fn logged_model_comparators_per_key_type() {
        for string_attribute in ["name", "model_id", "model_type", "status", "source_run_id"] {
            check_comparators(LoggedModels, string_attribute, false, STRING_OR_LIST);
        }
        for numeric_attribute in [
            "creation_timestamp",
            "creation_time",
            "last_updated_timestamp",
            "last_updated_time",
        ] {
            check_comparators(LoggedModels, numeric_attribute, true, NUMERIC);
        }
        check_comparators(LoggedModels, "metrics.m", true, NUMERIC);
        check_comparators(LoggedModels, "params.p", false, STRING_OR_LIST);
        check_comparators(LoggedModels, "tags.t", false, STRING_OR_LIST);
    }

    #[test]
    fn invalid_comparator_message_names_token_key_and_position() {
        let error = rejects(Runs, "metrics.acc ~ 1", &[]);
        assert_eq!(
            error.to_string(),
            "Invalid comparator '~' for metric 'acc' at position 12: expected one of =, !=, <, <=, >, >="
        );
        rejects(Runs, "metrics.acc == 1", &["'=='", "position 12"]);
        rejects(Runs, "metrics.acc <> 1", &["'<>'"]);
        rejects(Runs, "metrics.acc =~ 1", &["'=~'"]);
        rejects(
            Runs,
            "params.a NOT LIKE 'x'",
            &["'NOT LIKE'", "param 'a'", "position 9"],
        );
        rejects(Runs, "params.a rlike 'x'", &["'RLIKE'"]);
        rejects(
            Runs,
            "params.a < 'x'",
            &[
                "'<'",
                "param 'a'",
                "=, !=, LIKE, ILIKE, IS NULL, IS NOT NULL",
            ],
        );
        rejects(Runs, "status IN ('a')", &["'IN'", "attribute 'status'"]);
        rejects(Runs, "metrics.a IS NULL", &["'IS NULL'", "metric 'a'"]);
        rejects(
            Runs,
            "start_time IS NOT NULL",
            &["'IS NOT NULL'", "attribute 'start_time'"],
        );
        rejects(
            RegisteredModels,
            "tags.a IS NULL",
            &["'IS NULL'", "tag 'a'"],
        );
        rejects(Experiments, "name IN ('a')", &["'IN'", "attribute 'name'"]);
        rejects(
            Experiments,
            "experiment_id LIKE '1%'",
            &["'LIKE'", "attribute 'experiment_id'"],
        );
        rejects(
            ModelVersions,
            "source_path IN ('a')",
            &["'IN'", "attribute 'source_path'"],
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let clauses = parse(
            Runs,
            "params.a like 'x%' and tags.b ilike '%Y' And run_id in ('r1') aNd run_id not in ('r2') \
             AND params.c is null and params.d Is Not Null",
        );
        let ops: Vec<Comparator> = clauses.iter().map(|clause| clause.op).collect();
        assert_eq!(
            ops,
            [
                Comparator::Like,
                Comparator::ILike,
                Comparator::In,
                Comparator::NotIn,
                Comparator::IsNull,
                Comparator::IsNotNull,
            ]
        );
        assert_eq!(
            one(Runs, "params.a IS  NOT\tNULL").op,
            Comparator::IsNotNull
        );
    }

    // ---- prefixes, aliases, quoting of keys ----

    #[test]
    fn every_run_prefix_alias() {
        for prefix in ["metrics", "metric"] {
            assert_eq!(one(Runs, &format!("{prefix}.m > 1")).key, metric("m"));
        }
        for prefix in ["params", "param", "parameters", "parameter"] {
            assert_eq!(one(Runs, &format!("{prefix}.p = 'x'")).key, param("p"));
        }
        for prefix in ["tags", "tag"] {
            assert_eq!(one(Runs, &format!("{prefix}.t = 'x'")).key, tag("t"));
        }
        for prefix in ["attributes.", "attribute.", "attr.", "run.", ""] {
            assert_eq!(
                one(Runs, &format!("{prefix}status = 'x'")).key,
                Key::Attribute(A::Status)
            );
        }
        for prefix in ["datasets", "dataset"] {
            assert_eq!(
                one(Runs, &format!("{prefix}.digest = 'x'")).key,
                Key::Dataset(DatasetField::Digest)
            );
        }
        assert_eq!(one(Runs, "`tags`.t = 'x'").key, tag("t"));
    }

    #[test]
    fn every_run_attribute_and_alias() {
        let expected = [
            ("run_id", A::RunId),
            ("run_name", A::RunName),
            ("status", A::Status),
            ("user_id", A::UserId),
            ("artifact_uri", A::ArtifactUri),
            ("`run name`", A::RunName),
            ("`Run name`", A::RunName),
            ("`Run Name`", A::RunName),
            ("\"Run name\"", A::RunName),
            ("attributes.`Run name`", A::RunName),
        ];
        for (written, attribute) in expected {
            assert_eq!(
                one(Runs, &format!("{written} = 'x'")).key,
                Key::Attribute(attribute),
                "{written}"
            );
        }
        for (written, attribute) in [
            ("start_time", A::StartTime),
            ("end_time", A::EndTime),
            ("created", A::StartTime),
            ("Created", A::StartTime),
        ] {
            assert_eq!(
                one(Runs, &format!("{written} > 1")).key,
                Key::Attribute(attribute),
                "{written}"
            );
        }
        for field in [
            ("name", DatasetField::Name),
            ("digest", DatasetField::Digest),
            ("context", DatasetField::Context),
        ] {
            assert_eq!(
                one(Runs, &format!("datasets.{} = 'x'", field.0)).key,
                Key::Dataset(field.1)
            );
        }
    }

    #[test]
    fn attributes_and_prefixes_of_other_entities() {
        for (written, attribute) in [("name", A::Name), ("experiment_id", A::ExperimentId)] {
            for prefix in ["", "attribute.", "attributes.", "attr."] {
                let filter = format!("{prefix}{written} = 'x'");
                assert_eq!(
                    one(Experiments, &filter).key,
                    Key::Attribute(attribute),
                    "{filter}"
                );
            }
        }
        for (written, attribute) in [
            ("creation_time", A::CreationTime),
            ("last_update_time", A::LastUpdateTime),
        ] {
            assert_eq!(
                one(Experiments, &format!("{written} > 1")).key,
                Key::Attribute(attribute)
            );
        }
        for entity in [Experiments, RegisteredModels, ModelVersions, LoggedModels] {
            assert_eq!(one(entity, "tags.t = 'x'").key, tag("t"));
            assert_eq!(one(entity, "tag.t = 'x'").key, tag("t"));
            assert_eq!(one(entity, "`name` = 'x'").key, Key::Attribute(A::Name));
            assert_eq!(one(entity, "\"name\" = 'x'").key, Key::Attribute(A::Name));
        }
        for (written, attribute) in [
            ("name", A::Name),
            ("run_id", A::RunId),
            ("source_path", A::SourcePath),
        ] {
            assert_eq!(
                one(ModelVersions, &format!("{written} = 'x'")).key,
                Key::Attribute(attribute)
            );
        }
        assert_eq!(
            one(ModelVersions, "version_number = 1").key,
            Key::Attribute(A::VersionNumber)
        );
        for (written, attribute) in [
            ("name", A::Name),
            ("model_id", A::ModelId),
            ("model_type", A::ModelType),
            ("status", A::Status),
            ("source_run_id", A::SourceRunId),
        ] {
            assert_eq!(
                one(LoggedModels, &format!("{written} = 'x'")).key,
                Key::Attribute(attribute)
            );
        }
        for (written, attribute) in [
            ("creation_timestamp", A::CreationTimestamp),
            ("creation_time", A::CreationTimestamp),
            ("last_updated_timestamp", A::LastUpdatedTimestamp),
            ("last_updated_time", A::LastUpdatedTimestamp),
        ] {
            assert_eq!(
                one(LoggedModels, &format!("{written} > 1")).key,
                Key::Attribute(attribute)
            );
        }
        for prefix in ["metrics", "metric"] {
            assert_eq!(
                one(LoggedModels, &format!("{prefix}.m > 1")).key,
                metric("m")
            );
        }
        for prefix in ["params", "param", "parameters", "parameter"] {
            assert_eq!(
                one(LoggedModels, &format!("{prefix}.p = 'x'")).key,
                param("p")
            );
        }
    }

    #[test]
    fn quoted_and_dotted_keys() {
        assert_eq!(
            one(Runs, "tags.`mlflow.runName` = 'x'").key,
            tag("mlflow.runName")
        );
        assert_eq!(
            one(Runs, "tags.mlflow.runName = 'x'").key,
            tag("mlflow.runName")
        );
        assert_eq!(one(Runs, "tags.\"a b\" = 'x'").key, tag("a b"));
        assert_eq!(one(Runs, "tags.'a b' = 'x'").key, tag("a b"));
        assert_eq!(
            one(Runs, "metrics.`val-loss/épique` < 1").key,
            metric("val-loss/épique")
        );
        assert_eq!(one(Runs, "metrics.\"a b\" >= 0.5").key, metric("a b"));
        assert_eq!(one(Runs, "params.1x = 'a'").key, param("1x"));
        assert_eq!(one(Runs, "params.a_1.b2.c = 'a'").key, param("a_1.b2.c"));
        // Quoting is verbatim, as in MLflow: a doubled backtick stays doubled.
        assert_eq!(one(Runs, "tags.`a``b` = 'x'").key, tag("a``b"));
    }

    #[test]
    fn unknown_prefixes_and_attributes_are_named() {
        rejects(
            Runs,
            "foo.a = 'x'",
            &[
                "Invalid entity prefix 'foo' at position 0",
                "'metrics.'",
                "'datasets.'",
            ],
        );
        rejects(Runs, "Metrics.a > 1", &["prefix 'Metrics'"]);
        rejects(
            Runs,
            "bogus = 'x'",
            &["Invalid attribute 'bogus' at position 0", "'run_id'"],
        );
        rejects(
            Runs,
            "lifecycle_stage = 'x'",
            &["attribute 'lifecycle_stage'"],
        );
        rejects(Runs, "experiment_id = 'x'", &["attribute 'experiment_id'"]);
        rejects(
            Runs,
            "attributes.nope = 'x'",
            &["attribute 'nope' at position 11"],
        );
        rejects(
            Runs,
            "datasets.foo = 'x'",
            &["Invalid dataset field 'foo' at position 9", "'digest'"],
        );
        rejects(
            Experiments,
            "metrics.a > 1",
            &["prefix 'metrics'", "'tags.'"],
        );
        rejects(Experiments, "params.a = 'x'", &["prefix 'params'"]);
        rejects(Experiments, "run.name = 'x'", &["prefix 'run'"]);
        rejects(
            Experiments,
            "lifecycle_stage = 'x'",
            &["attribute 'lifecycle_stage'"],
        );
        rejects(
            RegisteredModels,
            "creation_timestamp > 1",
            &["attribute 'creation_timestamp'", "'name'"],
        );
        rejects(RegisteredModels, "params.a = 'x'", &["prefix 'params'"]);
        rejects(ModelVersions, "version = 1", &["attribute 'version'"]);
        rejects(
            ModelVersions,
            "creation_timestamp > 1",
            &["attribute 'creation_timestamp'"],
        );
        rejects(LoggedModels, "datasets.name = 'x'", &["prefix 'datasets'"]);
        rejects(
            LoggedModels,
            "experiment_id = '1'",
            &["attribute 'experiment_id'"],
        );
    }

    #[test]
    fn empty_and_partly_quoted_keys_are_rejected() {
        rejects(Runs, "tags.`` = 'x'", &["non-empty key", "position 5"]);
        rejects(Runs, "tags.\"\" = 'x'", &["non-empty key"]);
        rejects(
            Runs,
            "tags.`a`.b = 'x'",
            &["quoted as a whole", "position 5"],
        );
        rejects(Runs, "tags. = 'x'", &["a key after '.'", "found '='"]);
        rejects(Runs, "tags.", &["a key after '.'", "end of filter"]);
        rejects(
            Runs,
            "'status' = 'x'",
            &["backticks or double quotes", "'status'"],
        );
    }

    // ---- values ----

    #[test]
    fn string_values_in_single_or_double_quotes_verbatim() {
        assert_eq!(one(Runs, "params.a = 'x y'").value, string("x y"));
        assert_eq!(one(Runs, "params.a = \"dq\"").value, string("dq"));
        assert_eq!(one(Runs, "params.a = ''").value, string(""));
        // MLflow compares the text between the quotes as is: no unescaping.
        assert_eq!(one(Runs, "params.a = 'it''s'").value, string("it''s"));
        assert_eq!(one(Runs, r"params.a = 'it\'s'").value, string(r"it\'s"));
        assert_eq!(
            one(Runs, "tags.a = \"say \"\"hi\"\"\"").value,
            string("say \"\"hi\"\"")
        );
        assert_eq!(one(Runs, r"params.a = 'C:\'").value, string(r"C:\"));
        assert_eq!(one(Runs, r"params.a = 'a\\'").value, string(r"a\\"));
        assert_eq!(one(Runs, "tags.a = 'é日本 %_'").value, string("é日本 %_"));
        assert_eq!(
            one(Runs, "params.a = 'x AND y = 1'").value,
            string("x AND y = 1")
        );
    }

    #[test]
    fn number_values() {
        let cases = [
            ("1", 1.0),
            ("-1", -1.0),
            ("0", 0.0),
            ("-0", 0.0),
            ("1.5", 1.5),
            ("1.", 1.0),
            (".5", 0.5),
            ("-.5", -0.5),
            ("1e5", 1e5),
            ("1E-5", 1e-5),
            ("1.5e3", 1500.0),
            ("1e+5", 1e5),
            ("123456789012", 123_456_789_012.0),
        ];
        for (written, number) in cases {
            assert_eq!(
                one(Runs, &format!("metrics.m > {written}")).value,
                Value::Number(number),
                "{written}"
            );
            assert_eq!(
                one(Runs, &format!("metrics.m>{written}")).value,
                Value::Number(number),
                "{written}"
            );
        }
        assert_eq!(one(Runs, "start_time >= 5.5").value, Value::Number(5.5));
        assert_eq!(
            one(LoggedModels, "creation_timestamp > 1e3").value,
            Value::Number(1000.0)
        );
    }

    #[test]
    fn malformed_numbers_are_rejected() {
        rejects(
            Runs,
            "metrics.m > +5",
            &["Unexpected character '+' at position 12"],
        );
        rejects(
            Runs,
            "metrics.m > - 1",
            &["Unexpected character '-' at position 12"],
        );
        rejects(
            Runs,
            "metrics.m > 0x10",
            &["Expected a number at position 12, found '0x10'"],
        );
        rejects(Runs, "metrics.m > 1abc", &["found '1abc'"]);
        rejects(Runs, "metrics.m > 1.2.3", &["found '1.2.3'"]);
        rejects(Runs, "metrics.m > 1e", &["found '1e'"]);
    }

    #[test]
    fn integer_only_attributes() {
        assert_eq!(
            one(Experiments, "creation_time > 1700000000000").value,
            Value::Number(1_700_000_000_000.0)
        );
        assert_eq!(
            one(Experiments, "last_update_time < -3").value,
            Value::Number(-3.0)
        );
        rejects(
            Experiments,
            "creation_time > 5.5",
            &["Invalid value '5.5'", "an integer"],
        );
        rejects(Experiments, "creation_time > 1e3", &["an integer"]);
        rejects(
            Experiments,
            "creation_time > 99999999999999999999",
            &["an integer"],
        );
        rejects(
            Experiments,
            "creation_time > '5'",
            &["numbers are not quoted"],
        );
        assert_eq!(
            one(ModelVersions, "version_number = 3").value,
            Value::Number(3.0)
        );
        // MLflow's model-version store int()s quoted values.
        assert_eq!(
            one(ModelVersions, "version_number = '3'").value,
            Value::Number(3.0)
        );
        assert_eq!(
            one(ModelVersions, "version_number = ' +1_0 '").value,
            Value::Number(10.0)
        );
        rejects(ModelVersions, "version_number = 3.5", &["an integer"]);
        rejects(
            ModelVersions,
            "version_number = 'three'",
            &["Invalid value 'three'", "an integer"],
        );
        rejects(ModelVersions, "version_number = '1__0'", &["an integer"]);
    }

    #[test]
    fn value_type_mismatches_are_rejected() {
        rejects(
            Runs,
            "metrics.acc > '1'",
            &[
                "Invalid value '1' for metric 'acc' at position 14",
                "not quoted",
            ],
        );
        rejects(Runs, "metrics.acc > \"1\"", &["not quoted"]);
        rejects(
            Runs,
            "metrics.acc > abc",
            &["Invalid value 'abc'", "a number"],
        );
        rejects(
            Runs,
            "start_time > '5'",
            &["attribute 'start_time'", "not quoted"],
        );
        rejects(
            Runs,
            "params.a = abc",
            &[
                "Invalid value 'abc' for param 'a' at position 11",
                "quoted with '",
            ],
        );
        rejects(Runs, "params.a = 1", &["Invalid value '1' for param 'a'"]);
        rejects(
            Runs,
            "params.a = `abc`",
            &["Invalid value `abc`", "backticks quote keys"],
        );
        rejects(
            Experiments,
            "experiment_id = 1",
            &["attribute 'experiment_id'", "quoted"],
        );
        rejects(
            RegisteredModels,
            "name = 5",
            &["attribute 'name'", "quoted"],
        );
        rejects(Runs, "params.a = AND", &["Invalid value 'AND'"]);
    }

    #[test]
    fn missing_pieces_are_named() {
        rejects(
            Runs,
            "metrics.a >",
            &["Expected a value for metric 'a' at position 11, found end of filter"],
        );
        rejects(
            Runs,
            "metrics.a",
            &["Expected a comparator after metric 'a' at position 9, found end of filter"],
        );
        rejects(
            Runs,
            "metrics.a 1",
            &["a comparator after metric 'a'", "position 10", "found '1'"],
        );
        rejects(Runs, "params.a foo 'x'", &["a comparator", "found 'foo'"]);
        rejects(
            Runs,
            "= 'x'",
            &["Expected a clause at position 0, found '='"],
        );
        rejects(
            Runs,
            "params.a IS",
            &["NULL or NOT NULL after IS", "end of filter"],
        );
        rejects(Runs, "params.a IS NOT", &["NULL after IS NOT"]);
        rejects(
            Runs,
            "params.a IS 'x'",
            &["NULL or NOT NULL after IS", "found 'x'"],
        );
        rejects(Runs, "run_id NOT ('a')", &["IN after NOT", "found '('"]);
    }

    // ---- lists ----

    #[test]
    fn lists() {
        assert_eq!(one(Runs, "run_id IN ('a','b')").value, list(&["a", "b"]));
        assert_eq!(one(Runs, "run_id IN ('a')").value, list(&["a"]));
        assert_eq!(one(Runs, "run_id IN ('a',)").value, list(&["a"]));
        assert_eq!(
            one(Runs, "run_id IN ( \"a\" , 'b' )").value,
            list(&["a", "b"])
        );
        assert_eq!(one(Runs, "run_id IN('a')").value, list(&["a"]));
        // Items are read as Python literals, as MLflow's ast.literal_eval does.
        assert_eq!(
            one(Runs, r"run_id IN ('a\'b', 'c\\d', 'e\nf', 'g''h', '\d')").value,
            list(&["a'b", r"c\d", "e\nf", "gh", r"\d"])
        );
        assert_eq!(one(Runs, "datasets.name NOT IN ('x')").value, list(&["x"]));
        assert_eq!(
            one(Experiments, "experiment_id IN ('1', '2')").value,
            list(&["1", "2"])
        );
    }

    #[test]
    fn malformed_lists_are_rejected() {
        rejects(
            Runs,
            "run_id IN ()",
            &[
                "Invalid value '()' for attribute 'run_id' at position 10",
                "non-empty",
            ],
        );
        rejects(
            Runs,
            "run_id IN ('a', 1)",
            &["Invalid value '1'", "position 16", "quoted"],
        );
        rejects(Runs, "run_id IN ('a',,)", &["Invalid value ','"]);
        rejects(Runs, "run_id IN (('a'))", &["Invalid value '('"]);
        rejects(
            Runs,
            "run_id IN ('a' 'b')",
            &[
                "',' or ')' to close the list opened at position 10",
                "found 'b'",
            ],
        );
        rejects(
            Runs,
            "run_id IN ('a'",
            &["to close the list opened at position 10", "end of filter"],
        );
        rejects(
            Runs,
            "run_id IN ('a',",
            &["a quoted string or ')'", "end of filter"],
        );
        rejects(
            Runs,
            "run_id IN 'a'",
            &["Invalid value 'a'", "parenthesized list"],
        );
        rejects(Runs, "run_id IN", &["parenthesized list", "end of filter"]);
        rejects(
            Runs,
            "run_id = ('a','b')",
            &["Invalid value a list", "lists go with IN"],
        );
        rejects(
            Runs,
            "metrics.a = (1)",
            &["Invalid value a list", "lists go with IN"],
        );
        rejects(
            Runs,
            "tags.a IN ('x')",
            &["Invalid comparator 'IN' for tag 'a'"],
        );
    }

    #[test]
    fn list_size_is_capped() {
        let items = |count: usize| vec!["'r'"; count].join(",");
        let at_cap = format!("run_id IN ({})", items(MAX_LIST_ITEMS));
        assert_eq!(
            one(Runs, &at_cap).value,
            Value::List(vec!["r".to_owned(); MAX_LIST_ITEMS])
        );
        let over = format!("run_id IN ({})", items(MAX_LIST_ITEMS + 1));
        rejects(Runs, &over, &["more than 10000 items", "position 10"]);
    }

    // ---- grammar-level errors ----

    #[test]
    fn and_placement() {
        assert_eq!(parse(Runs, "params.a='x'AND params.b='y'").len(), 2);
        rejects(
            Runs,
            "metrics.a > 1 AND",
            &["Expected a clause after AND at position 17, found end of filter"],
        );
        rejects(
            Runs,
            "AND metrics.a > 1",
            &["empty clause", "found 'AND'", "position 0"],
        );
        rejects(
            Runs,
            "metrics.a > 1 AND AND params.b = 'x'",
            &["empty clause", "position 18"],
        );
        rejects(
            Runs,
            "metrics.a > 1 params.b = 'x'",
            &["Expected AND or end of filter at position 14, found 'params'"],
        );
        rejects(
            Runs,
            "metrics.a > 1 2",
            &["Expected AND or end of filter at position 14, found '2'"],
        );
        rejects(Runs, "params.a = 'x' 'y'", &["found 'y'"]);
    }

    #[test]
    fn or_not_and_parentheses_are_unsupported() {
        rejects(
            Runs,
            "metrics.a > 1 OR metrics.b < 2",
            &["'OR' at position 14 is not supported", "AND"],
        );
        rejects(
            Runs,
            "metrics.a > 1 or metrics.b < 2",
            &["'or' at position 14"],
        );
        rejects(Runs, "OR metrics.a > 1", &["'OR' at position 0"]);
        rejects(
            Runs,
            "NOT metrics.a > 1",
            &["'NOT' at position 0 is not supported"],
        );
        rejects(
            Runs,
            "(metrics.a > 1)",
            &["'(' at position 0 is not supported", "parentheses"],
        );
        rejects(
            Runs,
            "metrics.a > 1)",
            &["')' at position 13 is not supported", "unbalanced"],
        );
        rejects(Runs, ")", &["')' at position 0", "unbalanced"]);
        rejects(
            Runs,
            "metrics.a > 1 AND (params.b = 'x')",
            &["'(' at position 18"],
        );
    }

    #[test]
    fn unterminated_quotes() {
        rejects(
            Runs,
            "params.a = 'unterminated",
            &["Unterminated quote ' at position 11"],
        );
        rejects(
            Runs,
            "params.a = \"x",
            &["Unterminated quote \" at position 11"],
        );
        rejects(
            Runs,
            "tags.`a = 'x'",
            &["Unterminated quote ` at position 5"],
        );
        // MLflow's lexer closes at the last escaped quote; what is left is still unterminated.
        rejects(
            Runs,
            "params.a = 'it''s",
            &["Unterminated quote ' at position 15"],
        );
        rejects(
            Runs,
            "params.a = 'x''",
            &["Unterminated quote ' at position 14"],
        );
    }

    #[test]
    fn stray_characters() {
        rejects(
            Runs,
            "metrics.a > 1 ; params.b = 'x'",
            &["Unexpected character ';' at position 14", "AND"],
        );
        rejects(
            Runs,
            "params.a = 'x' # comment",
            &["Unexpected character '#' at position 15"],
        );
        rejects(Runs, "params.a = $1", &["Unexpected character '$'"]);
        rejects(Runs, "params.a = 'x' AND metrics.b * 2 > 1", &["'*'"]);
        rejects(Runs, "run_id IN ['a']", &["'['"]);
    }

    #[test]
    fn non_ascii_only_inside_quotes() {
        rejects(
            Runs,
            "tags.é = 'x'",
            &["Unexpected character 'é' at position 5", "only ASCII"],
        );
        rejects(
            Runs,
            "params.a = 'x' AND params.b\u{a0}= 'y'",
            &[r"'\u{a0}' at position 27"],
        );
        rejects(
            Runs,
            "params.a = 'x'\u{0}",
            &[r"Unexpected character '\0' at position 14"],
        );
        rejects(Runs, "params.a = 日本", &["'日' at position 11"]);
        assert_eq!(
            one(Runs, "tags.`é` = 'ü'"),
            clause(tag("é"), Comparator::Eq, string("ü"))
        );
    }

    #[test]
    fn input_length_is_capped() {
        let value = "x".repeat(MAX_INPUT_BYTES - "params.a = ''".len());
        let at_cap = format!("params.a = '{value}'");
        assert_eq!(at_cap.len(), MAX_INPUT_BYTES);
        assert_eq!(one(Runs, &at_cap).value, Value::String(value));
        let over = format!("{at_cap} ");
        rejects(
            Runs,
            &over,
            &["Search filter is 65537 bytes long; the limit is 65536 bytes"],
        );
        rejects_order(
            Runs,
            &" ".repeat(MAX_INPUT_BYTES + 1),
            &["Search order_by is 65537 bytes long"],
        );
        // Long offending tokens are quoted back shortened.
        let long_key = format!("{} = 'x'", "k".repeat(100));
        let message = rejects(Runs, &long_key, &["…"]).to_string();
        assert!(
            !message.contains(&"k".repeat(MAX_SNIPPET_CHARS + 1)),
            "{message}"
        );
    }

    #[test]
    fn many_clauses() {
        let filter = vec!["params.p = 'x'"; 2000].join(" AND ");
        assert_eq!(parse(Runs, &filter).len(), 2000);
    }

    // ---- realistic filters sent by the MLflow client and UI ----

    #[test]
    fn client_filters() {
        // `add_prompt_filter_string`, appended to every registered-model search.
        let prompt_filter = "tag.`mlflow.prompt.is_prompt` != 'true'";
        assert_eq!(
            parse(RegisteredModels, prompt_filter),
            vec![clause(
                tag("mlflow.prompt.is_prompt"),
                Comparator::Ne,
                string("true")
            )]
        );
        assert_eq!(
            parse(
                RegisteredModels,
                &format!("name = 'my-model' AND {prompt_filter}")
            ),
            vec![
                clause(Key::Attribute(A::Name), Comparator::Eq, string("my-model")),
                clause(
                    tag("mlflow.prompt.is_prompt"),
                    Comparator::Ne,
                    string("true")
                ),
            ]
        );
        assert_eq!(
            parse(
                RegisteredModels,
                &format!("name LIKE 'demo.%' AND {prompt_filter}")
            )[0],
            clause(Key::Attribute(A::Name), Comparator::Like, string("demo.%"))
        );
        // get_latest_versions / search_model_versions.
        assert_eq!(
            parse(ModelVersions, &format!("name='m' AND {prompt_filter}")),
            vec![
                clause(Key::Attribute(A::Name), Comparator::Eq, string("m")),
                clause(
                    tag("mlflow.prompt.is_prompt"),
                    Comparator::Ne,
                    string("true")
                ),
            ]
        );
        assert_eq!(
            one(ModelVersions, "run_id='0123456789abcdef0123456789abcdef'"),
            clause(
                Key::Attribute(A::RunId),
                Comparator::Eq,
                string("0123456789abcdef0123456789abcdef")
            )
        );
        assert_eq!(
            parse(
                ModelVersions,
                "name = 'm' AND tag.`mlflow.prompt.is_prompt` = 'true'"
            )[1],
            clause(
                tag("mlflow.prompt.is_prompt"),
                Comparator::Eq,
                string("true")
            )
        );
        // Experiments: get_experiment_by_name on some stores, `mlflow gc --older-than`.
        assert_eq!(
            one(Experiments, "name = 'Default'"),
            clause(Key::Attribute(A::Name), Comparator::Eq, string("Default"))
        );
        assert_eq!(
            one(Experiments, "last_update_time < 1700000000000"),
            clause(
                Key::Attribute(A::LastUpdateTime),
                Comparator::Lt,
                Value::Number(1_700_000_000_000.0)
            )
        );
        // Runs: optuna, log_artifacts bookkeeping, the docs' examples, the UI search box.
        assert_eq!(
            one(Runs, "tags.mlflow.runName = 'trial-1'").key,
            tag("mlflow.runName")
        );
        assert_eq!(
            one(Runs, "tags.mlflow.parentRunId='abc'").value,
            string("abc")
        );
        assert_eq!(
            one(Runs, "tags.mlflow.loggedArtifacts LIKE '%table.json%'"),
            clause(
                tag("mlflow.loggedArtifacts"),
                Comparator::Like,
                string("%table.json%")
            )
        );
        assert_eq!(
            parse(
                Runs,
                "metrics.rmse < 1 and params.model = 'tree' and attributes.status = 'FINISHED'"
            ),
            vec![
                clause(metric("rmse"), Comparator::Lt, Value::Number(1.0)),
                clause(param("model"), Comparator::Eq, string("tree")),
                clause(
                    Key::Attribute(A::Status),
                    Comparator::Eq,
                    string("FINISHED")
                ),
            ]
        );
        assert_eq!(
            one(Runs, "attributes.run_name ILIKE '%bert%'"),
            clause(
                Key::Attribute(A::RunName),
                Comparator::ILike,
                string("%bert%")
            )
        );
        assert_eq!(
            one(Runs, "attributes.`Run name` LIKE '%x%'").key,
            Key::Attribute(A::RunName)
        );
        assert_eq!(
            one(Runs, "attributes.run_id IN ('a1', 'b2')"),
            clause(
                Key::Attribute(A::RunId),
                Comparator::In,
                list(&["a1", "b2"])
            )
        );
        assert_eq!(
            one(Runs, "datasets.digest IN ('s8ds293b', 'jks834s2')"),
            clause(
                Key::Dataset(DatasetField::Digest),
                Comparator::In,
                list(&["s8ds293b", "jks834s2"])
            )
        );
        assert_eq!(
            parse(Runs, "tags.`mlflow.source.type` = 'LOCAL' AND metrics.`f1 score` >= 0.9 AND params.lr IS NOT NULL")
                .len(),
            3
        );
        assert_eq!(
            one(Runs, "created > 1700000000000").key,
            Key::Attribute(A::StartTime)
        );
        // Logged models: `name = '…'` on every models:/ download, plus metric/param filters.
        assert_eq!(
            one(LoggedModels, "name = 'model'"),
            clause(Key::Attribute(A::Name), Comparator::Eq, string("model"))
        );
        assert_eq!(
            parse(
                LoggedModels,
                "metrics.accuracy > 0.9 AND params.alpha = '0.5' AND source_run_id = 'r1'"
            ),
            vec![
                clause(metric("accuracy"), Comparator::Gt, Value::Number(0.9)),
                clause(param("alpha"), Comparator::Eq, string("0.5")),
                clause(Key::Attribute(A::SourceRunId), Comparator::Eq, string("r1")),
            ]
        );
    }

    // ---- order_by ----

    #[test]
    fn run_order_by() {
        assert_eq!(
            order(Runs, "metrics.acc"),
            OrderBy {
                key: metric("acc"),
                ascending: true
            }
        );
        assert_eq!(
            order(Runs, "metrics.acc DESC"),
            OrderBy {
                key: metric("acc"),
                ascending: false
            }
        );
        assert!(!order(Runs, "metrics.acc desc").ascending);
        assert!(order(Runs, "metrics.acc ASC").ascending);
        assert!(order(Runs, "  metrics.acc   asc ").ascending);
        assert_eq!(order(Runs, "metric.`a b` DESC").key, metric("a b"));
        assert_eq!(order(Runs, "metrics.\"a b\"").key, metric("a b"));
        assert_eq!(order(Runs, "params.lr").key, param("lr"));
        assert_eq!(
            order(Runs, "tags.mlflow.runName").key,
            tag("mlflow.runName")
        );
        assert_eq!(
            order(Runs, "tags.`mlflow.runName` ASC").key,
            tag("mlflow.runName")
        );
        for (written, attribute) in [
            ("start_time", A::StartTime),
            ("attributes.start_time", A::StartTime),
            ("created", A::StartTime),
            ("end_time", A::EndTime),
            ("run_name", A::RunName),
            ("`Run name`", A::RunName),
            ("status", A::Status),
            ("run_id", A::RunId),
            ("user_id", A::UserId),
            ("artifact_uri", A::ArtifactUri),
        ] {
            assert_eq!(
                order(Runs, &format!("{written} DESC")).key,
                Key::Attribute(attribute),
                "{written}"
            );
        }
        rejects_order(Runs, "datasets.name", &["prefix 'datasets'"]);
        rejects_order(
            Runs,
            "lifecycle_stage",
            &["Invalid order_by attribute 'lifecycle_stage'"],
        );
        rejects_order(Runs, "timestamp", &["order_by attribute 'timestamp'"]);
        rejects_order(Runs, "foo.x", &["prefix 'foo'"]);
    }

    #[test]
    fn order_by_of_other_entities() {
        for (written, attribute) in [
            ("name", A::Name),
            ("attribute.name", A::Name),
            ("experiment_id", A::ExperimentId),
            ("creation_time", A::CreationTime),
            ("last_update_time", A::LastUpdateTime),
        ] {
            assert_eq!(order(Experiments, written).key, Key::Attribute(attribute));
        }
        rejects_order(Experiments, "tags.x", &["prefix 'tags'"]);
        // MLflow's SQL store reads `timestamp` as last_updated_timestamp for registered models.
        for (written, attribute) in [
            ("name", A::Name),
            ("timestamp", A::LastUpdatedTimestamp),
            ("last_updated_timestamp", A::LastUpdatedTimestamp),
            ("creation_timestamp", A::CreationTimestamp),
        ] {
            assert_eq!(
                order(RegisteredModels, &format!("{written} DESC")).key,
                Key::Attribute(attribute)
            );
        }
        rejects_order(RegisteredModels, "tags.x", &["prefix 'tags'"]);
        for (written, attribute) in [
            ("name", A::Name),
            ("version_number", A::VersionNumber),
            ("creation_timestamp", A::CreationTimestamp),
            ("last_updated_timestamp", A::LastUpdatedTimestamp),
        ] {
            assert_eq!(order(ModelVersions, written).key, Key::Attribute(attribute));
        }
        rejects_order(
            ModelVersions,
            "timestamp",
            &["order_by attribute 'timestamp'"],
        );
        rejects_order(ModelVersions, "run_id", &["order_by attribute 'run_id'"]);
        assert_eq!(
            order(LoggedModels, "metrics.accuracy").key,
            metric("accuracy")
        );
        assert_eq!(
            order(LoggedModels, "creation_time").key,
            Key::Attribute(A::CreationTimestamp)
        );
        assert_eq!(
            order(LoggedModels, "model_id DESC").key,
            Key::Attribute(A::ModelId)
        );
        rejects_order(
            LoggedModels,
            "params.alpha",
            &["prefix 'params'", "'metrics.'"],
        );
    }

    #[test]
    fn malformed_order_by() {
        rejects_order(
            Runs,
            "",
            &["Expected an order_by key at position 0, found an empty order_by"],
        );
        rejects_order(Runs, "   ", &["empty order_by"]);
        rejects_order(
            Runs,
            "metrics.acc sideways",
            &["Expected ASC, DESC or end of order_by at position 12, found 'sideways'"],
        );
        rejects_order(
            Runs,
            "metrics.acc asc extra",
            &["end of order_by (one key per order_by entry)", "'extra'"],
        );
        rejects_order(Runs, "metrics.a, metrics.b", &["found ','"]);
        rejects_order(Runs, "metrics.acc DESC NULLS LAST", &["found 'NULLS'"]);
        rejects_order(Runs, "metrics.`acc", &["Unterminated quote `"]);
        rejects_order(Runs, "DESC", &["order_by attribute 'DESC'"]);
        rejects_order(Runs, "AND", &["an order_by key (empty clause)"]);
        rejects_order(Runs, "'start_time'", &["backticks or double quotes"]);
        rejects_order(Runs, "metrics.é", &["Unexpected character 'é'"]);
        rejects_order(Runs, "metrics.", &["a key after '.'", "end of order_by"]);
    }

    // ---- the small public helpers ----

    #[test]
    fn attribute_and_comparator_helpers() {
        let numeric = [
            A::StartTime,
            A::EndTime,
            A::CreationTime,
            A::LastUpdateTime,
            A::CreationTimestamp,
            A::LastUpdatedTimestamp,
            A::VersionNumber,
        ];
        let textual = [
            A::RunId,
            A::RunName,
            A::Status,
            A::UserId,
            A::ArtifactUri,
            A::LifecycleStage,
            A::Name,
            A::ExperimentId,
            A::SourcePath,
            A::ModelId,
            A::ModelType,
            A::SourceRunId,
        ];
        for attribute in numeric {
            assert!(attribute.is_numeric(), "{attribute:?}");
        }
        for attribute in textual {
            assert!(!attribute.is_numeric(), "{attribute:?}");
        }
        assert_eq!(A::VersionNumber.as_str(), "version_number");
        assert_eq!(A::LastUpdatedTimestamp.as_str(), "last_updated_timestamp");
        for (spelling, comparator) in EVERY_COMPARATOR {
            assert_eq!(comparator.as_str(), spelling);
            assert_eq!(comparator.to_string(), spelling);
        }
    }

    /// Every parsed value has the shape the `Value` docs promise.
    fn assert_value_shapes(clauses: &[Clause]) {
        for clause in clauses {
            match (&clause.op, &clause.value) {
                (Comparator::In | Comparator::NotIn, Value::List(items)) => {
                    assert!(!items.is_empty())
                }
                (Comparator::IsNull | Comparator::IsNotNull, Value::Null) => {}
                (_, Value::Number(_) | Value::String(_)) => {}
                other => panic!("bad shape {other:?}"),
            }
        }
    }

    /// A deterministic stand-in for the cargo-fuzz target: splice grammar fragments at random
    /// and check that nothing panics and that what parses has the documented shape.
    #[test]
    fn random_splices_never_panic() {
        let fragments = [
            "metrics.",
            "params.",
            "tags.",
            "attributes.",
            "datasets.",
            "run_id",
            "name",
            "version_number",
            "`a b`",
            "\"k\"",
            "'v'",
            "'it''s'",
            "'\\'",
            "\"",
            "'",
            "`",
            " = ",
            "!=",
            "<=",
            ">",
            "~",
            " LIKE ",
            " ilike ",
            " IN ",
            " NOT IN ",
            " IS NULL",
            " IS NOT NULL",
            " AND ",
            " OR ",
            "(",
            ")",
            ",",
            "1",
            "-2.5e3",
            ".5",
            "1e",
            "+",
            "é",
            "日",
            " ",
            "DESC",
            "asc",
            "created",
            "`Run name`",
            "\u{0}",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let pieces = (next() % 8 + 1) as usize;
            let input: String = (0..pieces)
                .map(|_| fragments[(next() % fragments.len() as u64) as usize])
                .collect();
            for entity in ALL_ENTITIES {
                if let Ok(clauses) = parse_filter(entity, &input) {
                    assert_value_shapes(&clauses);
                }
                let _ = parse_order_by(entity, &input);
            }
        }
    }
}
