//! Jinja templating for rules, through minijinja.
//!
//! Criteria patterns and action parameters may use `{{ trigger.x }}`,
//! `{{ rule.ref }}`, `{{ st2kv.system.key }}` (and `st2kv.user.key`), as in
//! StackStorm. A string that is exactly one `{{ expression }}` renders to
//! the expression's value with its type (a number stays a number, a list a
//! list); any other string containing template syntax renders to a string.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Object, Serde, Value as JinjaValue};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Reads the datastore for `st2kv.*` lookups.
pub trait KvLookup: Send + Sync + fmt::Debug {
    /// The live value of `key` in `scope` (`system` or `user`); `None` for
    /// a secret.
    fn get(&self, scope: &str, key: &str) -> Option<String>;

    /// The value of secret `key` in `scope`, in clear: only through
    /// `decrypt_kv`. `None` when it is not a secret (or absent).
    fn secret(&self, _scope: &str, _key: &str) -> Option<String> {
        None
    }
}

/// A template that does not parse, or failed to render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template '{template}': {message}")]
pub struct TemplateError {
    pub template: String,
    pub message: String,
}

/// What templates can see.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    pub trigger: &'a Value,
    /// `{ref, name, pack}` of the rule being enforced.
    pub rule: &'a Value,
    pub kv: Option<Arc<dyn KvLookup>>,
}

/// The configured environment: StackStorm's most used filters on top of
/// minijinja's built-ins.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether any string inside `value` is a template.
fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        _ => false,
    }
}

/// True when `s` contains template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The inner expression when `s` is exactly one `{{ ... }}`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        // StackStorm's functions, as filters (`x | to_json_string`) and as
        // functions (`to_json_string(x)`).
        for name in crate::functions::NAMES {
            env.add_filter(name, st2_function(name));
            env.add_function(name, st2_function(name));
        }
        // StackStorm's `{{ st2kv.system.key | decrypt_kv }}`: a secret
        // reads as sealed until this filter opens it.
        env.add_filter(
            "decrypt_kv",
            |v: JinjaValue| -> Result<JinjaValue, minijinja::Error> {
                match v.downcast_object_ref::<Sealed>() {
                    Some(sealed) => sealed
                        .kv
                        .secret(sealed.scope, &sealed.key)
                        .map(JinjaValue::from)
                        .ok_or_else(|| {
                            minijinja::Error::new(
                                minijinja::ErrorKind::InvalidOperation,
                                format!("decrypt_kv: secret '{}' is gone", sealed.key),
                            )
                        }),
                    // Not a secret: StackStorm would fail to decrypt it.
                    None => Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        "decrypt_kv: the value is not a datastore secret (st2kv.system.<secret key>)",
                    )),
                }
            },
        );
        env.add_filter(
            "to_complex",
            |v: JinjaValue| -> Result<String, minijinja::Error> {
                serde_json::to_string(&v).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                })
            },
        );
        Self { env }
    }

    /// Check a template's syntax (at load time, before any event).
    pub fn check(&self, source: &str) -> Result<(), TemplateError> {
        let err = |e: minijinja::Error| TemplateError {
            template: source.to_owned(),
            message: describe(&e),
        };
        match single_expression(source) {
            Some(expr) => self.env.compile_expression(expr).map(drop).map_err(err),
            None => self.env.template_from_str(source).map(drop).map_err(err),
        }
    }

    /// Check every template string inside `value`.
    pub fn check_value(&self, value: &Value) -> Result<(), TemplateError> {
        match value {
            Value::String(s) if is_template(s) => self.check(s),
            Value::Array(items) => items.iter().try_for_each(|v| self.check_value(v)),
            Value::Object(map) => map.values().try_for_each(|v| self.check_value(v)),
            _ => Ok(()),
        }
    }

    /// Render every template string inside `value`, leaving the rest as is.
    pub fn render_value(
        &self,
        value: &Value,
        ctx: &RenderContext<'_>,
    ) -> Result<Value, TemplateError> {
        // Building the context converts the whole trigger payload; most
        // values (plain parameters, criteria patterns) need none of it.
        if !has_template(value) {
            return Ok(value.clone());
        }
        let jinja_ctx = minijinja::context! {
            trigger => JinjaValue::from(Serde(ctx.trigger)),
            rule => JinjaValue::from(Serde(ctx.rule)),
            st2kv => JinjaValue::from_object(Datastore { kv: ctx.kv.clone(), scope: None }),
        };
        self.render_in(value, &jinja_ctx)
    }

    /// [`Templates::render_value`] with the top-level names of `vars` (an
    /// object) instead of `trigger` and `rule`; `st2kv` as always. Used for
    /// StackStorm's `notify` messages (`action_results`, `action_parameters`).
    pub fn render_value_with(
        &self,
        value: &Value,
        vars: &Value,
        kv: Option<Arc<dyn KvLookup>>,
    ) -> Result<Value, TemplateError> {
        let jinja_ctx = minijinja::context! {
            st2kv => JinjaValue::from_object(Datastore { kv, scope: None }),
            ..JinjaValue::from(Serde(vars))
        };
        self.render_in(value, &jinja_ctx)
    }

    fn render_in(&self, value: &Value, ctx: &JinjaValue) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) if is_template(s) => self.render_str(s, ctx)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_in(v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_in(v, ctx)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn render_str(&self, source: &str, jinja_ctx: &JinjaValue) -> Result<Value, TemplateError> {
        let err = |e: minijinja::Error| TemplateError {
            template: source.to_owned(),
            message: describe(&e),
        };
        let jinja_ctx = jinja_ctx.clone();
        if let Some(expr) = single_expression(source) {
            let value = self
                .env
                .compile_expression(expr)
                .map_err(err)?
                .eval(jinja_ctx)
                .map_err(err)?;
            if value.is_undefined() {
                return Ok(Value::Null);
            }
            return serde_json::to_value(&value).map_err(|e| TemplateError {
                template: source.to_owned(),
                message: e.to_string(),
            });
        }
        self.env
            .render_str(source, jinja_ctx)
            .map(Value::String)
            .map_err(err)
    }
}

/// StackStorm's function `name` for minijinja: positional and keyword
/// arguments as JSON values.
fn st2_function(
    name: &'static str,
) -> impl Fn(
    minijinja::value::Rest<JinjaValue>,
    minijinja::value::Kwargs,
) -> Result<JinjaValue, minijinja::Error>
+ Send
+ Sync
+ 'static {
    move |args, kwargs| {
        let args: Vec<Value> = args
            .iter()
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
            .collect();
        let mut named = Vec::new();
        for k in kwargs.args() {
            let v: JinjaValue = kwargs.get(k)?;
            named.push((
                k.to_owned(),
                serde_json::to_value(&v).unwrap_or(Value::Null),
            ));
        }
        match crate::functions::call(name, &args, &named) {
            Some(Ok(v)) => Ok(JinjaValue::from(Serde(&v))),
            Some(Err(m)) => Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                m,
            )),
            None => Err(minijinja::Error::new(
                minijinja::ErrorKind::UnknownFunction,
                format!("unknown function '{name}'"),
            )),
        }
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    if let Some(detail) = e.detail()
        && !msg.contains(detail)
    {
        msg = format!("{msg}: {detail}");
    }
    msg
}

/// `st2kv`, then `st2kv.system` / `st2kv.user`: values are read on access.
#[derive(Debug)]
struct Datastore {
    kv: Option<Arc<dyn KvLookup>>,
    scope: Option<&'static str>,
}

impl Object for Datastore {
    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        let key = key.as_str()?;
        match self.scope {
            None => {
                let scope = match key {
                    "system" => "system",
                    "user" => "user",
                    _ => return None,
                };
                Some(JinjaValue::from_object(Datastore {
                    kv: self.kv.clone(),
                    scope: Some(scope),
                }))
            }
            Some(scope) => {
                let kv = self.kv.as_ref()?;
                match kv.get(scope, key) {
                    Some(value) => Some(JinjaValue::from(value)),
                    None => kv.secret(scope, key).map(|_| {
                        JinjaValue::from_object(Sealed {
                            kv: kv.clone(),
                            scope,
                            key: key.to_owned(),
                        })
                    }),
                }
            }
        }
    }
}

/// A datastore secret as a template sees it: masked, until `decrypt_kv`
/// opens it.
#[derive(Debug)]
struct Sealed {
    kv: Arc<dyn KvLookup>,
    scope: &'static str,
    key: String,
}

impl Object for Sealed {
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    #[derive(Debug)]
    struct Kv(HashMap<(String, String), String>);

    impl KvLookup for Kv {
        fn get(&self, scope: &str, key: &str) -> Option<String> {
            self.0.get(&(scope.to_owned(), key.to_owned())).cloned()
        }

        fn secret(&self, scope: &str, key: &str) -> Option<String> {
            (scope == "system" && key == "ssh_key").then(|| "-----BEGIN KEY-----".to_owned())
        }
    }

    static TRIGGER: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
        || json!({"body": {"name": "web-1", "count": 3, "tags": ["a", "b"]}, "path": "/var/log/x.log"}),
    );
    static RULE: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
        || json!({"ref": "examples.on_hook", "name": "on_hook", "pack": "examples"}),
    );

    fn ctx() -> RenderContext<'static> {
        let mut kv = HashMap::new();
        kv.insert(("system".into(), "greeting".into()), "hi".into());
        RenderContext {
            trigger: &TRIGGER,
            rule: &RULE,
            kv: Some(Arc::new(Kv(kv))),
        }
    }

    #[test]
    fn renders_strings_and_keeps_types_of_single_expressions() {
        let t = Templates::new();
        let params = json!({
            "message": "{{ st2kv.system.greeting }}, {{ trigger.body.name }} ({{ rule.ref }})",
            "count": "{{ trigger.body.count }}",
            "tags": "{{ trigger.body.tags }}",
            "file": "{{ trigger.path | basename }}",
            "plain": "no templates here",
            "nested": {"list": ["{{ trigger.body.count + 1 }}"]},
            "missing": "{{ trigger.nope }}",
        });
        let out = t.render_value(&params, &ctx()).expect("renders");
        assert_eq!(
            out,
            json!({
                "message": "hi, web-1 (examples.on_hook)",
                "count": 3,
                "tags": ["a", "b"],
                "file": "x.log",
                "plain": "no templates here",
                "nested": {"list": [4]},
                "missing": null,
            })
        );
    }

    #[test]
    fn syntax_errors_name_the_template() {
        let t = Templates::new();
        let err = t.check("{{ trigger.x ").expect_err("unclosed");
        assert!(
            err.to_string().starts_with("template '{{ trigger.x ':"),
            "{err}"
        );
        let err = t
            .check_value(&json!({"a": ["ok", "{% if %}"]}))
            .expect_err("bad block");
        assert!(err.template.contains("{% if %}"), "{err}");
        assert!(t.check("{{ trigger.x | to_json_string }}").is_ok());
    }

    #[test]
    fn filters() {
        let t = Templates::new();
        let r = |s: &str| t.render_value(&json!(s), &ctx()).expect("renders");
        assert_eq!(
            r("{{ trigger.body | to_json_string }}"),
            json!(r#"{"count": 3, "name": "web-1", "tags": ["a", "b"]}"#)
        );
        assert_eq!(r("{{ '{\"a\": 1}' | from_json_string }}"), json!({"a": 1}));
        assert_eq!(r("{{ trigger.path | dirname }}"), json!("/var/log"));
        assert_eq!(
            r("{{ trigger.body.name | regex_replace('-\\\\d', '') }}"),
            json!("web")
        );
        assert_eq!(
            r("{{ trigger.body.name | regex_search('b-') }}"),
            json!(true)
        );
        assert_eq!(
            r("{{ trigger.body.name | regex_substring('\\\\d+') }}"),
            json!("1")
        );
        assert_eq!(r("{{ st2kv.system.absent }}"), json!(null));
        // A secret is masked unless `decrypt_kv` opens it.
        assert_eq!(r("key: {{ st2kv.system.ssh_key }}"), json!("key: ********"));
        assert_eq!(
            r("{{ st2kv.system.ssh_key | decrypt_kv }}"),
            json!("-----BEGIN KEY-----")
        );
    }
}
