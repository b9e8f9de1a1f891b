//! The GraphQL query language, as far as MLflow's UI writes it: operations with variable
//! definitions and directives, selection sets of fields with aliases and arguments, and
//! argument values (variables, literals, lists, objects). Fragments are refused by name.

use serde_json::{Map, Number, Value};

/// One selected field (`alias: name(arguments) { selections }`).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub alias: Option<String>,
    pub name: String,
    pub arguments: Vec<(String, ArgumentValue)>,
    pub selections: Vec<Field>,
}

impl Field {
    /// The key this field has in the answer.
    pub fn response_key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// An argument value before variables are substituted.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgumentValue {
    Variable(String),
    Literal(Value),
    List(Vec<ArgumentValue>),
    Object(Vec<(String, ArgumentValue)>),
}

impl ArgumentValue {
    /// The value as JSON, with `$variables` taken from the request.
    pub fn resolve(&self, variables: &Map<String, Value>) -> Result<Value, String> {
        Ok(match self {
            ArgumentValue::Variable(name) => variables.get(name).cloned().unwrap_or(Value::Null),
            ArgumentValue::Literal(value) => value.clone(),
            ArgumentValue::List(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.resolve(variables))
                    .collect::<Result<_, _>>()?,
            ),
            ArgumentValue::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), value.resolve(variables)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// The root selections of the operation named `operation_name` (or of the only one).
pub fn parse_operation(query: &str, operation_name: Option<&str>) -> Result<Vec<Field>, String> {
    let mut parser = Parser {
        tokens: tokenize(query)?,
        position: 0,
    };
    let mut operations = Vec::new();
    while parser.peek().is_some() {
        operations.push(parser.operation()?);
    }
    let chosen = match operation_name {
        Some(wanted) => operations
            .into_iter()
            .find(|(name, _)| name.as_deref() == Some(wanted))
            .ok_or_else(|| format!("Unknown operation named '{wanted}'."))?,
        None if operations.len() == 1 => operations.remove(0),
        None => {
            return Err(
                "Must provide operation name if query contains multiple operations.".into(),
            );
        }
    };
    Ok(chosen.1)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Punctuator(char),
    Spread,
    Name(String),
    Int(i64),
    Float(f64),
    Text(String),
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some((start, character)) = chars.next() {
        match character {
            // Commas are insignificant in GraphQL, like white space.
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => {}
            '#' => while chars.next_if(|(_, c)| *c != '\n').is_some() {},
            '{' | '}' | '(' | ')' | ':' | '$' | '@' | '!' | '[' | ']' | '=' | '|' | '&' => {
                tokens.push(Token::Punctuator(character));
            }
            '.' => {
                if source[start..].starts_with("...") {
                    chars.next();
                    chars.next();
                    tokens.push(Token::Spread);
                } else {
                    return Err(format!("Syntax Error: Unexpected '.' at {start}."));
                }
            }
            '"' => tokens.push(Token::Text(string_literal(&mut chars, start)?)),
            c if c == '-' || c.is_ascii_digit() => {
                let mut end = start + c.len_utf8();
                while let Some((index, c)) = chars
                    .next_if(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'))
                {
                    end = index + c.len_utf8();
                }
                let text = &source[start..end];
                tokens.push(match text.parse::<i64>() {
                    Ok(int) => Token::Int(int),
                    Err(_) => Token::Float(
                        text.parse()
                            .map_err(|_| format!("Syntax Error: Invalid number '{text}'."))?,
                    ),
                });
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let mut name = String::from(c);
                while let Some((_, c)) =
                    chars.next_if(|(_, c)| *c == '_' || c.is_ascii_alphanumeric())
                {
                    name.push(c);
                }
                tokens.push(Token::Name(name));
            }
            other => return Err(format!("Syntax Error: Unexpected character '{other}'.")),
        }
    }
    Ok(tokens)
}

fn string_literal(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    start: usize,
) -> Result<String, String> {
    let mut text = String::new();
    loop {
        match chars.next() {
            None | Some((_, '\n')) => {
                return Err(format!("Syntax Error: Unterminated string at {start}."));
            }
            Some((_, '"')) => return Ok(text),
            Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('r') => text.push('\r'),
                Some('b') => text.push('\u{8}'),
                Some('f') => text.push('\u{c}'),
                Some('u') => {
                    let hex: String = (0..4)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("Syntax Error: Invalid escape '\\u{hex}'."))?;
                    text.push(code);
                }
                Some(c @ ('"' | '\\' | '/')) => text.push(c),
                _ => return Err("Syntax Error: Invalid escape in a string.".into()),
            },
            Some((_, c)) => text.push(c),
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Result<Token, String> {
        let token = self
            .tokens
            .get(self.position)
            .cloned()
            .ok_or_else(|| "Syntax Error: Unexpected end of the document.".to_owned())?;
        self.position += 1;
        Ok(token)
    }

    fn at(&self, punctuator: char) -> bool {
        self.peek() == Some(&Token::Punctuator(punctuator))
    }

    fn expect(&mut self, punctuator: char) -> Result<(), String> {
        match self.next()? {
            Token::Punctuator(found) if found == punctuator => Ok(()),
            other => Err(format!(
                "Syntax Error: Expected '{punctuator}', found {other:?}."
            )),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next()? {
            Token::Name(name) => Ok(name),
            other => Err(format!("Syntax Error: Expected a name, found {other:?}.")),
        }
    }

    /// `query|mutation [Name] [(variables)] [@directives] { … }`, or a bare `{ … }`.
    fn operation(&mut self) -> Result<(Option<String>, Vec<Field>), String> {
        if self.at('{') {
            return Ok((None, self.selection_set()?));
        }
        match self.name()?.as_str() {
            "query" | "mutation" => {}
            "fragment" => return Err("Fragments are not supported by this server.".into()),
            other => return Err(format!("Syntax Error: Unexpected name '{other}'.")),
        }
        let name = match self.peek() {
            Some(Token::Name(_)) => Some(self.name()?),
            _ => None,
        };
        if self.at('(') {
            self.skip_balanced('(', ')')?;
        }
        self.directives()?;
        Ok((name, self.selection_set()?))
    }

    /// Skips a bracketed group (variable definitions: their types and defaults are not checked).
    fn skip_balanced(&mut self, open: char, close: char) -> Result<(), String> {
        let mut depth = 0usize;
        loop {
            match self.next()? {
                Token::Punctuator(c) if c == open => depth += 1,
                Token::Punctuator(c) if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }

    /// Directives (`@component(name: "…")`) carry nothing this server acts on.
    fn directives(&mut self) -> Result<(), String> {
        while self.at('@') {
            self.next()?;
            self.name()?;
            if self.at('(') {
                self.arguments()?;
            }
        }
        Ok(())
    }

    fn selection_set(&mut self) -> Result<Vec<Field>, String> {
        self.expect('{')?;
        let mut selections = Vec::new();
        while !self.at('}') {
            if self.peek() == Some(&Token::Spread) {
                return Err("Fragments are not supported by this server.".into());
            }
            selections.push(self.field()?);
        }
        self.expect('}')?;
        Ok(selections)
    }

    fn field(&mut self) -> Result<Field, String> {
        let first = self.name()?;
        let (alias, name) = if self.at(':') {
            self.next()?;
            (Some(first), self.name()?)
        } else {
            (None, first)
        };
        let arguments = if self.at('(') {
            self.arguments()?
        } else {
            Vec::new()
        };
        self.directives()?;
        let selections = if self.at('{') {
            self.selection_set()?
        } else {
            Vec::new()
        };
        Ok(Field {
            alias,
            name,
            arguments,
            selections,
        })
    }

    fn arguments(&mut self) -> Result<Vec<(String, ArgumentValue)>, String> {
        self.expect('(')?;
        let mut arguments = Vec::new();
        while !self.at(')') {
            let name = self.name()?;
            self.expect(':')?;
            arguments.push((name, self.value()?));
        }
        self.expect(')')?;
        Ok(arguments)
    }

    fn value(&mut self) -> Result<ArgumentValue, String> {
        Ok(match self.next()? {
            Token::Punctuator('$') => ArgumentValue::Variable(self.name()?),
            Token::Punctuator('[') => {
                let mut items = Vec::new();
                while !self.at(']') {
                    items.push(self.value()?);
                }
                self.expect(']')?;
                ArgumentValue::List(items)
            }
            Token::Punctuator('{') => {
                let mut fields = Vec::new();
                while !self.at('}') {
                    let name = self.name()?;
                    self.expect(':')?;
                    fields.push((name, self.value()?));
                }
                self.expect('}')?;
                ArgumentValue::Object(fields)
            }
            Token::Int(int) => ArgumentValue::Literal(Value::from(int)),
            Token::Float(float) => {
                ArgumentValue::Literal(Number::from_f64(float).map_or(Value::Null, Value::Number))
            }
            Token::Text(text) => ArgumentValue::Literal(Value::String(text)),
            Token::Name(name) => ArgumentValue::Literal(match name.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                // An enum value (`ACTIVE_ONLY`) travels as its name, as REST takes it.
                _ => Value::String(name),
            }),
            other => return Err(format!("Syntax Error: Unexpected {other:?}.")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uis_operation_shape_parses() {
        let query = r#"query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!) @component(name: "MLflow.ExperimentRunTracking") {
            mlflowGetExperiment(input: $input) { apiError { code message } experiment { experimentId tags { key value } } }
          }"#;
        let selections = parse_operation(query, Some("MlflowGetExperimentQuery")).unwrap();
        let root = &selections[0];
        assert_eq!(root.name, "mlflowGetExperiment");
        assert_eq!(
            root.arguments,
            vec![("input".into(), ArgumentValue::Variable("input".into()))]
        );
        assert_eq!(root.selections.len(), 2);
    }

    #[test]
    fn literals_aliases_and_variables_resolve() {
        let query = r#"mutation { a: mlflowSearchRuns(input: {experimentIds: ["1", $id], maxResults: 5, runViewType: ALL, x: -1.5, y: null}) { runs { info { runUuid } } } }"#;
        let selections = parse_operation(query, None).unwrap();
        let root = &selections[0];
        assert_eq!(root.response_key(), "a");
        let mut variables = Map::new();
        variables.insert("id".into(), Value::String("2".into()));
        assert_eq!(
            root.arguments[0].1.resolve(&variables).unwrap(),
            serde_json::json!({"experimentIds": ["1", "2"], "maxResults": 5, "runViewType": "ALL", "x": -1.5, "y": null})
        );
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "query {",
            "query { a(",
            "{ ...F }",
            "fragment F on X { a }",
            "{ a(x: \"open) }",
            "{ a } }",
            "q { a }",
        ] {
            assert!(parse_operation(bad, None).is_err(), "{bad}");
        }
    }
}
