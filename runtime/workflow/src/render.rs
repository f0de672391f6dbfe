//! Rendering a definition's values: every expression in them evaluated.
//!
//! A string that is exactly one expression becomes the expression's value,
//! with its type; a string that embeds expressions gets each value's
//! Python `str()` (`True`, `None`, `{'a': 1}`), as StackStorm renders them.
//! Lists and maps are rendered item by item. Orquesta's functions (`ctx`,
//! `result`, `item`, `succeeded`, `failed`, `completed`, `zip`, `json`) are
//! the same in YAQL and Jinja; others come from the scope's host (a
//! [`yaql::Host`], for `task()`, `st2kv()`, ...).
//!
//! Values are rendered once: a result or a parameter that holds `<% %>` is
//! data, not an expression (StackStorm evaluates it again; st2#5956).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::expr::{self, Piece};
use crate::pyfmt::python_str;
use crate::yaql;

/// What expressions see.
#[derive(Clone)]
pub struct Scope {
    /// The context: a map of variables (`ctx()`).
    pub ctx: Value,
    /// The task's result (`result()`), in a transition or a retry.
    pub result: Option<Value>,
    /// The current item (`item()`), in a with-items task.
    pub item: Option<Value>,
    /// The task's status (`succeeded()`, `failed()`, `completed()`).
    pub status: Option<String>,
    /// Functions beyond Orquesta's own (`task()`, `st2kv()`, ...).
    pub host: Arc<dyn yaql::Host + Send + Sync>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("ctx", &self.ctx)
            .field("result", &self.result)
            .field("item", &self.item)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Scope {
    /// A scope of `ctx` alone.
    pub fn of(ctx: Value) -> Self {
        Self {
            ctx,
            result: None,
            item: None,
            status: None,
            host: Arc::new(yaql::NoHost),
        }
    }
}

/// The statuses `completed()` holds for.
const COMPLETED: [&str; 5] = ["succeeded", "failed", "timeout", "abandoned", "canceled"];

/// Orquesta's functions; `None` for a name that is not one.
fn orquesta(
    scope: &Scope,
    name: &str,
    args: &[Value],
    named: &[(String, Value)],
) -> Option<Result<Value, String>> {
    let status = scope.status.as_deref().unwrap_or_default();
    Some(match name {
        "ctx" => match args {
            [] => Ok(match &scope.ctx {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .filter(|(k, _)| !k.starts_with("__"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                other => other.clone(),
            }),
            [Value::String(k)] => scope
                .ctx
                .get(k)
                .cloned()
                .ok_or_else(|| format!("variable '{k}' is referenced before assignment")),
            _ => Err("ctx() takes a variable name, or nothing".to_owned()),
        },
        "result" => Ok(scope.result.clone().unwrap_or(Value::Null)),
        "item" => match (args, &scope.item) {
            (_, None) => Err("item() is only defined in a with-items task".to_owned()),
            ([], Some(item)) => Ok(item.clone()),
            ([Value::String(k)], Some(item)) => item
                .get(k)
                .cloned()
                .ok_or_else(|| format!("item has no '{k}'")),
            _ => Err("item() takes an item's name, or nothing".to_owned()),
        },
        "succeeded" => Ok(Value::Bool(status == "succeeded")),
        "failed" => Ok(Value::Bool(status == "failed")),
        "completed" => Ok(Value::Bool(COMPLETED.contains(&status))),
        "zip" => {
            let pad = named
                .iter()
                .find(|(k, _)| k == "pad")
                .map_or(Value::Null, |(_, v)| v.clone());
            let mut lists = Vec::new();
            for a in args {
                match a {
                    Value::Array(items) => lists.push(items),
                    _ => return Some(Err("zip() takes lists".to_owned())),
                }
            }
            let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0);
            Ok(Value::Array(
                (0..longest)
                    .map(|i| {
                        Value::Array(
                            lists
                                .iter()
                                .map(|l| l.get(i).cloned().unwrap_or_else(|| pad.clone()))
                                .collect(),
                        )
                    })
                    .collect(),
            ))
        }
        "json" => match args {
            [Value::String(text)] => {
                serde_json::from_str(text).map_err(|e| format!("json(): not JSON: {e}"))
            }
            [other] => Ok(other.clone()),
            _ => Err("json() takes a string".to_owned()),
        },
        _ => {
            return squall_core::functions::call(name, args, named)
                .or_else(|| scope.host.call(name, args, named));
        }
    })
}

struct YaqlHost<'a>(&'a Scope);

impl yaql::Host for YaqlHost<'_> {
    fn call(
        &self,
        name: &str,
        args: &[Value],
        named: &[(String, Value)],
    ) -> Option<Result<Value, String>> {
        orquesta(self.0, name, args, named)
    }
}

/// Render `template` in `scope`.
pub fn render(template: &Value, scope: &Scope) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => render_str(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k.clone(), render(v, scope)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn render_str(s: &str, scope: &Scope) -> Result<Value, String> {
    if !expr::has_expression(s) {
        return Ok(Value::String(s.to_owned()));
    }
    if expr::has_jinja_blocks(s) {
        return jinja_template(s, scope).map(Value::String);
    }
    let pieces = expr::pieces(s)?;
    if let [single] = pieces.as_slice()
        && !matches!(single, Piece::Text(_))
        && s.trim() == s
    {
        return piece(single, scope);
    }
    if let [single] = expr::pieces(s.trim())?.as_slice()
        && !matches!(single, Piece::Text(_))
    {
        return piece(single, scope);
    }
    let mut out = String::new();
    for p in &pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            p => out.push_str(&python_str(&piece(p, scope)?)),
        }
    }
    Ok(Value::String(out))
}

fn piece(p: &Piece, scope: &Scope) -> Result<Value, String> {
    match p {
        Piece::Text(t) => Ok(Value::String((*t).to_owned())),
        Piece::Yaql(e) => {
            yaql::evaluate(e, &scope.ctx, &YaqlHost(scope)).map_err(|err| format!("<%{e}%>: {err}"))
        }
        Piece::Jinja(e) => jinja_expression(e, scope).map_err(|err| format!("{{{{{e}}}}}: {err}")),
    }
}

/// A Jinja environment with Orquesta's functions, reading the scope from
/// the render context, and Python's `str()` for what it prints.
fn jinja_env(scope: &Scope) -> minijinja::Environment<'static> {
    use minijinja::value::{Kwargs, Rest};
    use minijinja::{Error, ErrorKind, State, Value as J};
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_formatter(|out, _, value| {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        out.write_str(&python_str(&v))
            .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
    });
    for name in [
        "ctx",
        "result",
        "item",
        "succeeded",
        "failed",
        "completed",
        "zip",
        "json",
        "task",
        "task_status",
        "st2kv",
    ]
    .into_iter()
    .chain(squall_core::functions::NAMES)
    {
        let shared = scope.clone();
        let call = move |_: &State, args: Rest<J>, kwargs: Kwargs| -> Result<J, Error> {
            let args: Vec<Value> = args
                .iter()
                .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                .collect();
            let mut named = Vec::new();
            for k in kwargs.args() {
                let v: J = kwargs.get(k)?;
                named.push((
                    k.to_owned(),
                    serde_json::to_value(&v).unwrap_or(Value::Null),
                ));
            }
            match orquesta(&shared, name, &args, &named) {
                Some(Ok(v)) => Ok(J::from(minijinja::value::Serde(&v))),
                Some(Err(m)) => Err(Error::new(ErrorKind::InvalidOperation, m)),
                None => Err(Error::new(
                    ErrorKind::UnknownFunction,
                    format!("unknown function '{name}'"),
                )),
            }
        };
        // Every function is a filter too: `x | to_json_string`.
        env.add_filter(name, call.clone());
        env.add_function(name, call);
    }
    env
}

/// The render context of Jinja: the context's variables by name, and `_`.
fn jinja_context(scope: &Scope) -> minijinja::Value {
    let mut top = match &scope.ctx {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    top.insert("_".to_owned(), scope.ctx.clone());
    minijinja::Value::from(minijinja::value::Serde(&Value::Object(top)))
}

fn jinja_expression(e: &str, scope: &Scope) -> Result<Value, String> {
    let env = jinja_env(scope);
    let compiled = env.compile_expression(e).map_err(|e| e.to_string())?;
    let v = compiled
        .eval(jinja_context(scope))
        .map_err(|e| e.to_string())?;
    serde_json::to_value(&v).map_err(|e| e.to_string())
}

fn jinja_template(s: &str, scope: &Scope) -> Result<String, String> {
    let env = jinja_env(scope);
    env.render_str(s, jinja_context(scope))
        .map_err(|e| format!("{s}: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope() -> Scope {
        Scope {
            ctx: json!({"name": "Thanos", "loop": false, "n": 3, "list": ["a", "b"], "__hidden": 1}),
            result: Some(json!({"stdout": "hi", "succeeded": true})),
            item: Some(json!({"x": 1})),
            status: Some("succeeded".to_owned()),
            host: Arc::new(yaql::NoHost),
        }
    }

    #[test]
    fn rendering_table() {
        let s = scope();
        for (template, want) in [
            (json!("plain"), json!("plain")),
            (json!("<% ctx().name %>"), json!("Thanos")),
            (json!("  <% ctx(n) %>  "), json!(3)),
            (json!("<% ctx(loop) %>"), json!(false)),
            (json!("{{ ctx('n') }}"), json!(3)),
            (json!("{{ ctx().list }}"), json!(["a", "b"])),
            (json!("<% ctx(name) %>, hello"), json!("Thanos, hello")),
            (json!("echo \"<% ctx(loop) %>\""), json!("echo \"False\"")),
            (json!("v={{ ctx('loop') }}"), json!("v=False")),
            (json!("l=<% ctx(list) %>"), json!("l=['a', 'b']")),
            (json!("<% result().stdout %>"), json!("hi")),
            (json!("{{ result().stdout | upper }}"), json!("HI")),
            (json!("<% succeeded() and not failed() %>"), json!(true)),
            (json!("<% item(x) %>"), json!(1)),
            (json!("<% zip([1, 2], [3]) %>"), json!([[1, 3], [2, null]])),
            (json!("<% ctx().keys().len() %>"), json!(4)),
            (json!("<% $.name %>"), json!("Thanos")),
            (
                json!("{% for x in ctx().list %}{{ x }};{% endfor %}"),
                json!("a;b;"),
            ),
            (json!({"a": ["<% ctx(n) %>", 1]}), json!({"a": [3, 1]})),
            (json!(7), json!(7)),
        ] {
            assert_eq!(
                render(&template, &s).unwrap_or_else(|e| panic!("{template}: {e}")),
                want,
                "{template}"
            );
        }
    }

    #[test]
    fn data_is_not_evaluated_again() {
        let mut s = scope();
        s.ctx = json!({"payload": "<% ctx(secret) %>", "secret": "x"});
        assert_eq!(
            render(&json!("<% ctx(payload) %>"), &s).expect("renders"),
            json!("<% ctx(secret) %>")
        );
    }

    #[test]
    fn errors_name_the_expression() {
        let s = scope();
        for (template, needle) in [
            (
                "<% ctx(missing) %>",
                "<% ctx(missing) %>: variable 'missing' is referenced before assignment",
            ),
            ("<% nope() %>", "unknown function 'nope'"),
            (
                "{{ ctx('missing') }}",
                "variable 'missing' is referenced before assignment",
            ),
        ] {
            let e = render(&json!(template), &s).expect_err(template);
            assert!(e.contains(needle), "{template}: {e}");
        }
    }
}
