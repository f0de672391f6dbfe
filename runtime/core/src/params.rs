//! Parameter schemas in StackStorm's action metadata format.
//!
//! An action's `parameters` block is a map from name to a JSON-Schema
//! (draft 4) property plus StackStorm's extensions: `required: true` on the
//! property itself, `secret`, `immutable` and `position`. [`ParamSchema`]
//! turns that block into one compiled validator once, at load time; every run
//! then goes through [`ParamSchema::resolve`], which rejects unknown and
//! immutable parameters, applies defaults, checks required ones and validates
//! types, ranges, enums and patterns — before any guest runs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The JSON types a parameter may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    Null,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "array" => Self::Array,
            "object" => Self::Object,
            "null" => Self::Null,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
            Self::Null => "null",
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub ty: Option<ParamType>,
    pub required: bool,
    pub default: Option<Value>,
    pub position: Option<u64>,
    pub secret: bool,
    pub immutable: bool,
    pub description: Option<String>,
}

/// A problem in a `parameters` block, found when the manifest is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter '{name}': {message}")]
pub struct SchemaError {
    pub name: String,
    pub message: String,
}

/// Why a set of parameters was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter '{name}' (known: {known})")]
    Unknown { name: String, known: String },
    #[error("missing required parameter '{name}'")]
    Missing { name: String },
    #[error("parameter '{name}' is immutable and cannot be set")]
    Immutable { name: String },
    #[error("parameter '{name}': {message}")]
    Invalid { name: String, message: String },
}

/// A compiled `parameters` block.
#[derive(Clone)]
pub struct ParamSchema {
    specs: BTreeMap<String, ParamSpec>,
    validator: Arc<jsonschema::Validator>,
    /// The block as written, for the API (`/api/v1/actions`).
    source: Arc<Map<String, Value>>,
}

impl fmt::Debug for ParamSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamSchema")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

/// Keys that StackStorm (and Squall's config schemas: `directory`, `file`)
/// add to JSON Schema; they are stripped before the property is compiled.
const ST2_KEYS: [&str; 6] = [
    "required",
    "secret",
    "immutable",
    "position",
    "directory",
    "file",
];

impl ParamSchema {
    /// An empty block: no parameters accepted.
    pub fn empty() -> Self {
        Self::parse(&Map::new()).expect("an empty parameters block is valid")
    }

    /// Compile a `parameters` block (already converted from YAML to JSON).
    pub fn parse(block: &Map<String, Value>) -> Result<Self, SchemaError> {
        let mut specs = BTreeMap::new();
        let mut properties = Map::new();
        for (name, raw) in block {
            let err = |message: String| SchemaError {
                name: name.clone(),
                message,
            };
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(err("a parameter name uses letters, digits and '_'".into()));
            }
            let Value::Object(raw) = raw else {
                return Err(err(format!("expected a mapping, found {}", kind(raw))));
            };
            let spec = parse_spec(name, raw).map_err(err)?;
            let mut property = raw.clone();
            for key in ST2_KEYS {
                property.remove(key);
            }
            // Defaults are checked against the property's own schema so a
            // bad default is a load error, not a surprise at run time.
            if let Some(default) = &spec.default {
                let compiled = jsonschema::draft4::new(&Value::Object(property.clone()))
                    .map_err(|e| err(format!("invalid schema: {e}")))?;
                if let Some(e) = compiled.iter_errors(default).next() {
                    return Err(err(format!("default {default} is invalid: {e}")));
                }
            }
            properties.insert(name.clone(), Value::Object(property));
            specs.insert(name.clone(), spec);
        }
        let schema = serde_json::json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        let validator = jsonschema::draft4::new(&schema).map_err(|e| SchemaError {
            name: e
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .to_owned(),
            message: format!("invalid schema: {e}"),
        })?;
        Ok(Self {
            specs,
            validator: Arc::new(validator),
            source: Arc::new(block.clone()),
        })
    }

    /// The `parameters` block as written.
    pub fn source(&self) -> &Map<String, Value> {
        &self.source
    }

    /// The declared parameters, by name.
    pub fn specs(&self) -> impl Iterator<Item = &ParamSpec> {
        self.specs.values()
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Validate what a caller gave, apply defaults, and return the complete
    /// parameter object the action will receive.
    pub fn resolve(&self, given: Map<String, Value>) -> Result<Map<String, Value>, ParamError> {
        for name in given.keys() {
            let Some(spec) = self.specs.get(name) else {
                return Err(ParamError::Unknown {
                    name: name.clone(),
                    known: self.known_names(),
                });
            };
            if spec.immutable {
                return Err(ParamError::Immutable { name: name.clone() });
            }
        }
        let mut resolved = given;
        for spec in self.specs.values() {
            if resolved.contains_key(&spec.name) {
                continue;
            }
            match &spec.default {
                Some(default) => {
                    resolved.insert(spec.name.clone(), default.clone());
                }
                None if spec.required => {
                    return Err(ParamError::Missing {
                        name: spec.name.clone(),
                    });
                }
                None => {}
            }
        }
        let instance = Value::Object(resolved);
        if let Some(e) = self.validator.iter_errors(&instance).next() {
            let path = e.instance_path().to_string();
            let name = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            return Err(ParamError::Invalid {
                name,
                message: e.to_string(),
            });
        }
        let Value::Object(resolved) = instance else {
            unreachable!("built as an object above")
        };
        Ok(resolved)
    }

    /// Turn the text of a command-line `name=value` into a JSON value of the
    /// parameter's declared type, as `st2 run` does: numbers and booleans are
    /// parsed, arrays are JSON or comma-separated, objects are JSON.
    pub fn coerce_cli(&self, name: &str, text: &str) -> Result<Value, ParamError> {
        let spec = self.specs.get(name).ok_or_else(|| ParamError::Unknown {
            name: name.to_owned(),
            known: self.known_names(),
        })?;
        let invalid = |expected: &str| ParamError::Invalid {
            name: name.to_owned(),
            message: format!("'{text}' is not {expected}"),
        };
        let value = match spec.ty {
            None | Some(ParamType::String) => Value::String(text.to_owned()),
            Some(ParamType::Integer) => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| invalid("an integer"))?,
            Some(ParamType::Number) => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
                .ok_or_else(|| invalid("a number"))?,
            Some(ParamType::Boolean) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::Bool(true),
                "false" | "0" | "no" | "off" => Value::Bool(false),
                _ => return Err(invalid("a boolean (true/false)")),
            },
            Some(ParamType::Array) if text.trim_start().starts_with('[') => {
                serde_json::from_str(text).map_err(|_| invalid("a JSON array"))?
            }
            Some(ParamType::Array) => Value::Array(
                text.split(',')
                    .map(|item| Value::String(item.trim().to_owned()))
                    .collect(),
            ),
            Some(ParamType::Object) => {
                serde_json::from_str(text).map_err(|_| invalid("a JSON object"))?
            }
            Some(ParamType::Null) => Value::Null,
        };
        Ok(value)
    }

    /// A copy of `params` with every `secret: true` value replaced by
    /// `********`, for records and logs.
    pub fn mask_secrets(&self, params: &Map<String, Value>) -> Map<String, Value> {
        params
            .iter()
            .map(|(name, value)| {
                let secret = self.specs.get(name).is_some_and(|s| s.secret);
                let value = if secret {
                    Value::String("********".into())
                } else {
                    value.clone()
                };
                (name.clone(), value)
            })
            .collect()
    }

    fn known_names(&self) -> String {
        if self.specs.is_empty() {
            "none".to_owned()
        } else {
            self.specs.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

fn parse_spec(name: &str, raw: &Map<String, Value>) -> Result<ParamSpec, String> {
    let ty = match raw.get("type") {
        None => None,
        Some(Value::String(t)) => Some(ParamType::parse(t).ok_or_else(|| {
            format!(
                "field 'type': unknown type '{t}' (expected string, integer, number, boolean, array, object or null)"
            )
        })?),
        Some(other) => return Err(format!("field 'type': expected a string, found {}", kind(other))),
    };
    let flag = |key: &str| -> Result<bool, String> {
        match raw.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!(
                "field '{key}': expected true or false, found {}",
                kind(other)
            )),
        }
    };
    let position = match raw.get("position") {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return Err(format!(
                "field 'position': expected a number >= 0, found {other}"
            ));
        }
    };
    let description = match raw.get("description") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "field 'description': expected a string, found {}",
                kind(other)
            ));
        }
    };
    Ok(ParamSpec {
        name: name.to_owned(),
        ty,
        required: flag("required")?,
        default: raw.get("default").cloned(),
        position,
        secret: flag("secret")?,
        immutable: flag("immutable")?,
        description,
    })
}

/// A word for the JSON kind of `v`, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(v: Value) -> ParamSchema {
        let Value::Object(m) = v else {
            panic!("test schema must be an object")
        };
        ParamSchema::parse(&m).expect("valid schema")
    }

    fn obj(v: Value) -> Map<String, Value> {
        let Value::Object(m) = v else {
            panic!("test value must be an object")
        };
        m
    }

    fn echo() -> ParamSchema {
        schema(json!({
            "message": {"type": "string", "required": true, "position": 0},
            "count": {"type": "integer", "default": 1, "minimum": 1},
            "mode": {"type": "string", "enum": ["loud", "quiet"], "default": "quiet"},
            "token": {"type": "string", "secret": true},
            "version": {"type": "string", "default": "v1", "immutable": true},
        }))
    }

    #[test]
    fn defaults_are_applied() {
        let out = echo()
            .resolve(obj(json!({"message": "hi"})))
            .expect("valid");
        assert_eq!(
            Value::Object(out),
            json!({"message": "hi", "count": 1, "mode": "quiet", "version": "v1"})
        );
    }

    #[test]
    fn missing_required_is_named() {
        let err = echo().resolve(Map::new()).expect_err("must fail");
        assert_eq!(err.to_string(), "missing required parameter 'message'");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = echo()
            .resolve(obj(json!({"message": "hi", "count": "three"})))
            .expect_err("must fail");
        let ParamError::Invalid { name, message } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(name, "count");
        assert!(message.contains("integer"), "{message}");
    }

    #[test]
    fn enum_and_minimum_are_enforced() {
        let s = echo();
        let err = s
            .resolve(obj(json!({"message": "hi", "mode": "shout"})))
            .expect_err("enum");
        assert!(err.to_string().starts_with("parameter 'mode':"), "{err}");
        let err = s
            .resolve(obj(json!({"message": "hi", "count": 0})))
            .expect_err("minimum");
        assert!(err.to_string().starts_with("parameter 'count':"), "{err}");
    }

    #[test]
    fn unknown_parameter_lists_known_ones() {
        let err = echo()
            .resolve(obj(json!({"message": "hi", "colour": "red"})))
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "unknown parameter 'colour' (known: count, message, mode, token, version)"
        );
    }

    #[test]
    fn immutable_cannot_be_set() {
        let err = echo()
            .resolve(obj(json!({"message": "hi", "version": "v2"})))
            .expect_err("must fail");
        assert_eq!(
            err,
            ParamError::Immutable {
                name: "version".into()
            }
        );
    }

    #[test]
    fn secrets_are_masked() {
        let s = echo();
        let out = s
            .resolve(obj(json!({"message": "hi", "token": "hunter2"})))
            .expect("valid");
        let masked = s.mask_secrets(&out);
        assert_eq!(masked["token"], json!("********"));
        assert_eq!(masked["message"], json!("hi"));
    }

    #[test]
    fn cli_values_are_coerced_by_type() {
        let s = schema(json!({
            "n": {"type": "integer"}, "x": {"type": "number"}, "b": {"type": "boolean"},
            "a": {"type": "array"}, "o": {"type": "object"}, "s": {"type": "string"},
        }));
        assert_eq!(s.coerce_cli("n", "42"), Ok(json!(42)));
        assert_eq!(s.coerce_cli("x", "1.5"), Ok(json!(1.5)));
        assert_eq!(s.coerce_cli("b", "true"), Ok(json!(true)));
        assert_eq!(s.coerce_cli("a", "a, b"), Ok(json!(["a", "b"])));
        assert_eq!(s.coerce_cli("a", "[1,2]"), Ok(json!([1, 2])));
        assert_eq!(s.coerce_cli("o", r#"{"k":1}"#), Ok(json!({"k": 1})));
        assert_eq!(s.coerce_cli("s", "42"), Ok(json!("42")));
        let err = s.coerce_cli("n", "forty").expect_err("not an integer");
        assert_eq!(err.to_string(), "parameter 'n': 'forty' is not an integer");
        assert!(matches!(
            s.coerce_cli("zz", "1"),
            Err(ParamError::Unknown { .. })
        ));
    }

    #[test]
    fn bad_schemas_are_refused_at_load() {
        let block = obj(json!({"n": {"type": "int"}}));
        let err = ParamSchema::parse(&block).expect_err("bad type");
        assert!(
            err.to_string()
                .starts_with("parameter 'n': field 'type': unknown type 'int'"),
            "{err}"
        );

        let block = obj(json!({"n": {"type": "integer", "default": "x"}}));
        let err = ParamSchema::parse(&block).expect_err("bad default");
        assert!(
            err.to_string()
                .starts_with("parameter 'n': default \"x\" is invalid"),
            "{err}"
        );

        let block = obj(json!({"n": {"type": "integer", "required": "yes"}}));
        let err = ParamSchema::parse(&block).expect_err("bad flag");
        assert!(err.to_string().contains("field 'required'"), "{err}");
    }
}
