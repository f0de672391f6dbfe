//! Evaluating a YAQL [`Expr`] over JSON values.
//!
//! Values are `serde_json::Value`s. Truthiness is Python's (`null`,
//! `false`, `0`, `""`, `[]`, `{}` are false), as YAQL runs on Python.
//! Functions are looked up among YAQL's standard ones this module knows
//! first, then asked of the [`Host`] (Orquesta's `ctx()`, `result()`, ...).
//! Arguments of the functions that take a lambda (`select`, `where`, ...)
//! are evaluated once per item with `$` bound to it.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::Error;
use super::parse::{Arg, BinOp, Expr, UnOp};

/// Functions the embedding provides.
pub trait Host {
    /// Call `name` with evaluated arguments; `None` when the host has no
    /// such function.
    fn call(
        &self,
        name: &str,
        args: &[Value],
        named: &[(String, Value)],
    ) -> Option<Result<Value, String>>;
}

/// A host with no functions.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHost;

impl Host for NoHost {
    fn call(&self, _: &str, _: &[Value], _: &[(String, Value)]) -> Option<Result<Value, String>> {
        None
    }
}

/// What an expression sees: `$`, the variables and the host.
#[derive(Clone)]
struct Scope<'a> {
    dollar: Value,
    vars: BTreeMap<String, Value>,
    host: &'a dyn Host,
}

/// Evaluate `expr` with `$` bound to `data`.
pub(super) fn evaluate(expr: &Expr, data: &Value, host: &dyn Host) -> Result<Value, Error> {
    let scope = Scope {
        dollar: data.clone(),
        vars: BTreeMap::new(),
        host,
    };
    eval(expr, &scope)
}

fn fail(message: impl Into<String>) -> Error {
    Error::Eval(message.into())
}

/// Python's truthiness.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn float(f: f64) -> Result<Value, Error> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| fail(format!("{f} is not a number JSON can hold")))
}

fn int(i: i64) -> Value {
    Value::Number(i.into())
}

fn eval(expr: &Expr, s: &Scope) -> Result<Value, Error> {
    Ok(match expr {
        Expr::Null => Value::Null,
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Int(i) => int(*i),
        Expr::Float(f) => float(*f)?,
        Expr::Str(t) => Value::String(t.clone()),
        Expr::Dollar => s.dollar.clone(),
        Expr::Var(name) => match s.vars.get(name) {
            Some(v) => v.clone(),
            // `$1`-style and unknown names: YAQL gives null for an unset
            // variable.
            None => Value::Null,
        },
        Expr::List(items) => {
            Value::Array(items.iter().map(|e| eval(e, s)).collect::<Result<_, _>>()?)
        }
        Expr::Dict(pairs) => {
            let mut map = Map::new();
            for (k, v) in pairs {
                map.insert(key_string(&eval(k, s)?)?, eval(v, s)?);
            }
            Value::Object(map)
        }
        Expr::Attr {
            target,
            name,
            null_safe,
        } => {
            let t = eval(target, s)?;
            match t {
                Value::Object(map) => match map.get(name) {
                    Some(v) => v.clone(),
                    None if *null_safe => Value::Null,
                    // As Orquesta's YAQL: `.get()` and `?.` are the
                    // lenient reads.
                    None => return Err(fail(format!("unable to resolve key '{name}'"))),
                },
                Value::Null if *null_safe => Value::Null,
                other => {
                    return Err(fail(format!(
                        "cannot read '.{name}' of a {}",
                        type_name(&other)
                    )));
                }
            }
        }
        Expr::Index(target, index) => {
            let (t, i) = (eval(target, s)?, eval(index, s)?);
            index_value(&t, &i)?
        }
        Expr::Unary(op, e) => {
            let v = eval(e, s)?;
            match op {
                UnOp::Not => Value::Bool(!truthy(&v)),
                UnOp::Plus => number(&v, "+")?,
                UnOp::Neg => match &v {
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => int(i.checked_neg().ok_or_else(|| fail("integer overflow"))?),
                        None => float(-n.as_f64().unwrap_or(0.0))?,
                    },
                    other => return Err(fail(format!("cannot negate a {}", type_name(other)))),
                },
            }
        }
        Expr::Binary(BinOp::And, a, b) => {
            let a = eval(a, s)?;
            if truthy(&a) { eval(b, s)? } else { a }
        }
        Expr::Binary(BinOp::Or, a, b) => {
            let a = eval(a, s)?;
            if truthy(&a) { a } else { eval(b, s)? }
        }
        Expr::Binary(op, a, b) => binary(*op, &eval(a, s)?, &eval(b, s)?)?,
        Expr::Chain(left, right) => {
            let mut inner = s.clone();
            match &**left {
                Expr::Call {
                    name,
                    receiver,
                    args,
                } if name == "let" => {
                    if let Some(r) = receiver {
                        inner.dollar = eval(r, s)?;
                    }
                    for (i, arg) in args.iter().enumerate() {
                        match arg {
                            Arg::Named(n, e) => {
                                inner.vars.insert(n.clone(), eval(e, s)?);
                            }
                            Arg::Pos(e) => {
                                inner.vars.insert((i + 1).to_string(), eval(e, s)?);
                            }
                            Arg::Pair(k, e) => {
                                inner.vars.insert(key_string(&eval(k, s)?)?, eval(e, s)?);
                            }
                        }
                    }
                }
                other => inner.dollar = eval(other, s)?,
            }
            eval(right, &inner)?
        }
        Expr::Call {
            name,
            receiver,
            args,
        } => call(name, receiver.as_deref(), args, s)?,
    })
}

fn key_string(k: &Value) -> Result<String, Error> {
    match k {
        Value::String(t) => Ok(t.clone()),
        Value::Number(_) | Value::Bool(_) | Value::Null => Ok(k.to_string()),
        other => Err(fail(format!("a {} cannot be a dict key", type_name(other)))),
    }
}

fn number(v: &Value, op: &str) -> Result<Value, Error> {
    match v {
        Value::Number(_) => Ok(v.clone()),
        other => Err(fail(format!(
            "'{op}' needs a number, not a {}",
            type_name(other)
        ))),
    }
}

fn index_value(t: &Value, i: &Value) -> Result<Value, Error> {
    match (t, i) {
        (Value::Array(a), Value::Number(n)) => {
            let n = n
                .as_i64()
                .ok_or_else(|| fail("a list index must be an integer"))?;
            let at = if n < 0 { a.len() as i64 + n } else { n };
            usize::try_from(at)
                .ok()
                .and_then(|at| a.get(at))
                .cloned()
                .ok_or_else(|| fail(format!("index {n} is out of a list of {}", a.len())))
        }
        (Value::String(t), Value::Number(n)) => {
            let chars: Vec<char> = t.chars().collect();
            let n = n
                .as_i64()
                .ok_or_else(|| fail("a string index must be an integer"))?;
            let at = if n < 0 { chars.len() as i64 + n } else { n };
            usize::try_from(at)
                .ok()
                .and_then(|at| chars.get(at))
                .map(|c| Value::String(c.to_string()))
                .ok_or_else(|| fail(format!("index {n} is out of a string of {}", chars.len())))
        }
        (Value::Object(m), k) => Ok(m.get(&key_string(k)?).cloned().unwrap_or(Value::Null)),
        (t, i) => Err(fail(format!(
            "cannot index a {} with a {}",
            type_name(t),
            type_name(i)
        ))),
    }
}

/// YAQL's `=`: deep, with 1 = 1.0.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, Error> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Ok(x.cmp(&y)),
            _ => x
                .as_f64()
                .unwrap_or(f64::NAN)
                .partial_cmp(&y.as_f64().unwrap_or(f64::NAN))
                .ok_or_else(|| fail("cannot compare NaN")),
        },
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        (Value::Array(x), Value::Array(y)) => {
            for (a, b) in x.iter().zip(y) {
                let o = compare(a, b)?;
                if o.is_ne() {
                    return Ok(o);
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => Err(fail(format!(
            "cannot compare a {} with a {}",
            type_name(a),
            type_name(b)
        ))),
    }
}

fn arith(op: BinOp, a: &Value, b: &Value) -> Result<Value, Error> {
    let (Value::Number(x), Value::Number(y)) = (a, b) else {
        return Err(fail(format!(
            "cannot apply '{}' to a {} and a {}",
            op_text(op),
            type_name(a),
            type_name(b)
        )));
    };
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        let overflow = || fail("integer overflow");
        return Ok(match op {
            BinOp::Add => int(x.checked_add(y).ok_or_else(overflow)?),
            BinOp::Sub => int(x.checked_sub(y).ok_or_else(overflow)?),
            BinOp::Mul => int(x.checked_mul(y).ok_or_else(overflow)?),
            // Python 3's `/` on integers (YAQL runs on it): a float
            // unless exact.
            BinOp::Div if y == 0 => return Err(fail("division by zero")),
            BinOp::Div if x % y == 0 => int(x / y),
            BinOp::Div => float(x as f64 / y as f64)?,
            BinOp::Mod if y == 0 => return Err(fail("division by zero")),
            BinOp::Mod => int(x.rem_euclid(y) + if y < 0 && x.rem_euclid(y) != 0 { y } else { 0 }),
            _ => unreachable!("arith() is called for arithmetic"),
        });
    }
    let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
    float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div | BinOp::Mod if y == 0.0 => return Err(fail("division by zero")),
        BinOp::Div => x / y,
        BinOp::Mod => x - y * (x / y).floor(),
        _ => unreachable!("arith() is called for arithmetic"),
    })
}

fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "mod",
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Eq => "=",
        BinOp::Ne => "!=",
        BinOp::Lt => "<",
        BinOp::Gt => ">",
        BinOp::Le => "<=",
        BinOp::Ge => ">=",
        BinOp::In => "in",
        BinOp::And => "and",
        BinOp::Or => "or",
    }
}

fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, Error> {
    use std::cmp::Ordering::*;
    Ok(match op {
        BinOp::Eq => Value::Bool(equal(a, b)),
        BinOp::Ne => Value::Bool(!equal(a, b)),
        BinOp::Lt => Value::Bool(compare(a, b)? == Less),
        BinOp::Gt => Value::Bool(compare(a, b)? == Greater),
        BinOp::Le => Value::Bool(compare(a, b)? != Greater),
        BinOp::Ge => Value::Bool(compare(a, b)? != Less),
        BinOp::In => Value::Bool(contains(b, a)?),
        BinOp::Add => match (a, b) {
            (Value::String(x), Value::String(y)) => Value::String(format!("{x}{y}")),
            (Value::Array(x), Value::Array(y)) => {
                Value::Array(x.iter().chain(y).cloned().collect())
            }
            (Value::Object(x), Value::Object(y)) => {
                let mut m = x.clone();
                m.extend(y.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(m)
            }
            _ => arith(op, a, b)?,
        },
        BinOp::Mul => match (a, b) {
            (Value::String(t), Value::Number(n)) | (Value::Number(n), Value::String(t)) => {
                Value::String(t.repeat(n.as_u64().unwrap_or(0) as usize))
            }
            _ => arith(op, a, b)?,
        },
        BinOp::Sub | BinOp::Div | BinOp::Mod => arith(op, a, b)?,
        BinOp::And | BinOp::Or => unreachable!("short-circuited in eval()"),
    })
}

/// `item in collection`.
fn contains(collection: &Value, item: &Value) -> Result<bool, Error> {
    Ok(match collection {
        Value::Array(a) => a.iter().any(|x| equal(x, item)),
        Value::Object(m) => m.contains_key(&key_string(item)?),
        Value::String(t) => match item {
            Value::String(i) => t.contains(i.as_str()),
            other => {
                return Err(fail(format!(
                    "cannot look for a {} in a string",
                    type_name(other)
                )));
            }
        },
        Value::Null => false,
        other => return Err(fail(format!("cannot look into a {}", type_name(other)))),
    })
}

/// The items a collection function walks: a list's items, a dict's keys (as
/// Python iterates a dict), a string's characters.
fn items_of(v: &Value, f: &str) -> Result<Vec<Value>, Error> {
    Ok(match v {
        Value::Array(a) => a.clone(),
        Value::Object(m) => m.keys().map(|k| Value::String(k.clone())).collect(),
        Value::String(t) => t.chars().map(|c| Value::String(c.to_string())).collect(),
        Value::Null => Vec::new(),
        other => {
            return Err(fail(format!(
                "{f}() needs a collection, not a {}",
                type_name(other)
            )));
        }
    })
}

/// `expr` evaluated with `$` bound to `item`.
fn with_item(expr: &Expr, item: &Value, s: &Scope) -> Result<Value, Error> {
    let mut inner = s.clone();
    inner.dollar = item.clone();
    eval(expr, &inner)
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        other => crate::pyfmt::python_str(other),
    }
}

fn call(name: &str, receiver: Option<&Expr>, args: &[Arg], s: &Scope) -> Result<Value, Error> {
    // Positional expressions, the receiver first.
    let mut pos: Vec<&Expr> = Vec::new();
    let mut named: Vec<(&Expr, &Expr)> = Vec::new();
    let mut names: Vec<Expr> = Vec::new();
    if let Some(r) = receiver {
        pos.push(r);
    }
    for a in args {
        if let Arg::Named(n, _) = a {
            names.push(Expr::Str(n.clone()));
        }
    }
    let mut next_name = names.iter();
    for a in args {
        match a {
            Arg::Pos(e) => pos.push(e),
            Arg::Named(_, e) => {
                named.push((next_name.next().expect("one name per named argument"), e))
            }
            Arg::Pair(k, e) => named.push((k, e)),
        }
    }
    let arity = |n: std::ops::RangeInclusive<usize>| -> Result<(), Error> {
        if n.contains(&pos.len()) {
            Ok(())
        } else {
            Err(fail(format!(
                "{name}() takes {} argument{}, {} given",
                if n.start() == n.end() {
                    n.start().to_string()
                } else {
                    format!("{} to {}", n.start(), n.end())
                },
                if *n.end() == 1 { "" } else { "s" },
                pos.len()
            )))
        }
    };
    // Functions whose arguments are lambdas: evaluated per item.
    match name {
        "select" | "where" | "filter" | "any" | "all" | "orderBy" | "orderByDescending"
        | "selectMany" | "groupBy" | "sum" | "max" | "min" | "distinct" | "count"
            if !pos.is_empty() =>
        {
            let items = items_of(&eval(pos[0], s)?, name)?;
            let lambda = pos.get(1).copied();
            return collection_call(name, items, lambda, s);
        }
        "switch" => {
            for arg in args {
                let (cond, value) = match arg {
                    Arg::Pair(c, v) => (eval(c, s)?, v),
                    Arg::Named(c, v) => (Value::String(c.clone()), v),
                    Arg::Pos(_) => return Err(fail("switch() takes condition => value pairs")),
                };
                if truthy(&cond) {
                    return eval(value, s);
                }
            }
            return Ok(Value::Null);
        }
        "let" if receiver.is_none() => return Ok(s.dollar.clone()),
        _ => {}
    }
    let values: Vec<Value> = pos.iter().map(|e| eval(e, s)).collect::<Result<_, _>>()?;
    let named_values: Vec<(String, Value)> = named
        .iter()
        .map(|(k, e)| Ok((key_string(&eval(k, s)?)?, eval(e, s)?)))
        .collect::<Result<_, Error>>()?;
    if let Some(v) = builtin(name, &values, &named_values, &arity)? {
        return Ok(v);
    }
    match s.host.call(name, &values, &named_values) {
        Some(result) => result.map_err(Error::Eval),
        None => Err(fail(format!("unknown function '{name}'"))),
    }
}

fn collection_call(
    name: &str,
    items: Vec<Value>,
    lambda: Option<&Expr>,
    s: &Scope,
) -> Result<Value, Error> {
    let map = |item: &Value| -> Result<Value, Error> {
        match lambda {
            Some(l) => with_item(l, item, s),
            None => Ok(item.clone()),
        }
    };
    Ok(match name {
        "select" => Value::Array(items.iter().map(map).collect::<Result<_, _>>()?),
        "selectMany" => {
            let mut out = Vec::new();
            for item in &items {
                out.extend(items_of(&map(item)?, name)?);
            }
            Value::Array(out)
        }
        "where" | "filter" => {
            let mut out = Vec::new();
            for item in items {
                if truthy(&map(&item)?) {
                    out.push(item);
                }
            }
            Value::Array(out)
        }
        "any" => {
            for item in &items {
                if truthy(&map(item)?) {
                    return Ok(Value::Bool(true));
                }
            }
            Value::Bool(false)
        }
        "all" => {
            for item in &items {
                if !truthy(&map(item)?) {
                    return Ok(Value::Bool(false));
                }
            }
            Value::Bool(true)
        }
        "count" => match lambda {
            None => int(items.len() as i64),
            Some(_) => {
                let mut n = 0;
                for item in &items {
                    n += i64::from(truthy(&map(item)?));
                }
                int(n)
            }
        },
        "orderBy" | "orderByDescending" => {
            let mut keyed = Vec::new();
            for item in items {
                keyed.push((map(&item)?, item));
            }
            let mut error = None;
            keyed.sort_by(|(a, _), (b, _)| {
                compare(a, b).unwrap_or_else(|e| {
                    error.get_or_insert(e);
                    std::cmp::Ordering::Equal
                })
            });
            if let Some(e) = error {
                return Err(e);
            }
            if name == "orderByDescending" {
                keyed.reverse();
            }
            Value::Array(keyed.into_iter().map(|(_, v)| v).collect())
        }
        "distinct" => {
            let mut out: Vec<Value> = Vec::new();
            let mut keys: Vec<Value> = Vec::new();
            for item in items {
                let k = map(&item)?;
                if !keys.iter().any(|x| equal(x, &k)) {
                    keys.push(k);
                    out.push(item);
                }
            }
            Value::Array(out)
        }
        "groupBy" => {
            let mut groups: Vec<(Value, Vec<Value>)> = Vec::new();
            for item in items {
                let k = map(&item)?;
                match groups.iter_mut().find(|(g, _)| equal(g, &k)) {
                    Some((_, members)) => members.push(item),
                    None => groups.push((k, vec![item])),
                }
            }
            Value::Array(
                groups
                    .into_iter()
                    .map(|(k, v)| Value::Array(vec![k, Value::Array(v)]))
                    .collect(),
            )
        }
        "sum" => {
            let mut total = int(0);
            for item in &items {
                total = binary(BinOp::Add, &total, &map(item)?)?;
            }
            total
        }
        "max" | "min" => {
            let mut best: Option<Value> = None;
            for item in &items {
                let v = map(item)?;
                let better = match &best {
                    None => true,
                    Some(b) => {
                        let o = compare(&v, b)?;
                        if name == "max" { o.is_gt() } else { o.is_lt() }
                    }
                };
                if better {
                    best = Some(v);
                }
            }
            best.ok_or_else(|| fail(format!("{name}() of an empty collection")))?
        }
        _ => unreachable!("collection_call() is called for collection functions"),
    })
}

type Arity<'a> = dyn Fn(std::ops::RangeInclusive<usize>) -> Result<(), Error> + 'a;

/// YAQL's standard functions that take plain values. `None`: not one.
fn builtin(
    name: &str,
    v: &[Value],
    named: &[(String, Value)],
    arity: &Arity,
) -> Result<Option<Value>, Error> {
    let text = |i: usize| -> Result<&str, Error> {
        v[i].as_str().ok_or_else(|| {
            fail(format!(
                "{name}() needs a string, not a {}",
                type_name(&v[i])
            ))
        })
    };
    Ok(Some(match name {
        "len" | "length" => {
            arity(1..=1)?;
            int(match &v[0] {
                Value::String(t) => t.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                other => return Err(fail(format!("len() of a {}", type_name(other)))),
            } as i64)
        }
        "str" => {
            arity(1..=1)?;
            Value::String(str_of(&v[0]))
        }
        "int" => {
            arity(1..=1)?;
            match &v[0] {
                Value::Number(n) => int(n
                    .as_i64()
                    .unwrap_or_else(|| n.as_f64().unwrap_or(0.0).trunc() as i64)),
                Value::String(t) => int(t
                    .trim()
                    .parse()
                    .map_err(|_| fail(format!("int(): '{t}' is not an integer")))?),
                Value::Bool(b) => int(i64::from(*b)),
                Value::Null => int(0),
                other => return Err(fail(format!("int() of a {}", type_name(other)))),
            }
        }
        "float" => {
            arity(1..=1)?;
            match &v[0] {
                Value::Number(n) => float(n.as_f64().unwrap_or(0.0))?,
                Value::String(t) => float(
                    t.trim()
                        .parse()
                        .map_err(|_| fail(format!("float(): '{t}' is not a number")))?,
                )?,
                other => return Err(fail(format!("float() of a {}", type_name(other)))),
            }
        }
        "bool" => {
            arity(1..=1)?;
            Value::Bool(truthy(&v[0]))
        }
        "list" => Value::Array(v.to_vec()),
        "toList" => {
            arity(1..=1)?;
            Value::Array(items_of(&v[0], name)?)
        }
        "dict" => {
            let mut m = Map::new();
            for pair in v {
                match pair {
                    Value::Array(kv) if kv.len() == 2 => {
                        m.insert(key_string(&kv[0])?, kv[1].clone());
                    }
                    Value::Array(all) => {
                        for kv in all {
                            let Value::Array(kv) = kv else {
                                return Err(fail("dict() takes [key, value] pairs"));
                            };
                            if kv.len() != 2 {
                                return Err(fail("dict() takes [key, value] pairs"));
                            }
                            m.insert(key_string(&kv[0])?, kv[1].clone());
                        }
                    }
                    Value::Object(o) => m.extend(o.clone()),
                    _ => return Err(fail("dict() takes name => value pairs")),
                }
            }
            for (k, val) in named {
                m.insert(k.clone(), val.clone());
            }
            Value::Object(m)
        }
        "range" => {
            arity(1..=3)?;
            let n = |i: usize| v[i].as_i64().ok_or_else(|| fail("range() takes integers"));
            let (start, stop, step) = match v.len() {
                1 => (0, n(0)?, 1),
                2 => (n(0)?, n(1)?, 1),
                _ => (n(0)?, n(1)?, n(2)?),
            };
            if step == 0 {
                return Err(fail("range() step must not be 0"));
            }
            let count = if step > 0 {
                (stop - start).max(0) / step
            } else {
                (start - stop).max(0) / -step
            };
            if count > 1_000_000 {
                return Err(fail("range() of more than 1,000,000 items"));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i < stop) || (step < 0 && i > stop) {
                out.push(int(i));
                i += step;
            }
            Value::Array(out)
        }
        "coalesce" => v
            .iter()
            .find(|x| !x.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        "get" => {
            arity(2..=3)?;
            let default = v.get(2).cloned().unwrap_or(Value::Null);
            match &v[0] {
                Value::Object(m) => m.get(&key_string(&v[1])?).cloned().unwrap_or(default),
                Value::Array(_) => index_value(&v[0], &v[1]).unwrap_or(default),
                Value::Null => default,
                other => return Err(fail(format!("get() on a {}", type_name(other)))),
            }
        }
        "keys" => {
            arity(1..=1)?;
            match &v[0] {
                Value::Object(m) => {
                    Value::Array(m.keys().map(|k| Value::String(k.clone())).collect())
                }
                other => return Err(fail(format!("keys() of a {}", type_name(other)))),
            }
        }
        "values" => {
            arity(1..=1)?;
            match &v[0] {
                Value::Object(m) => Value::Array(m.values().cloned().collect()),
                other => return Err(fail(format!("values() of a {}", type_name(other)))),
            }
        }
        "items" => {
            arity(1..=1)?;
            match &v[0] {
                Value::Object(m) => Value::Array(
                    m.iter()
                        .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), v.clone()]))
                        .collect(),
                ),
                other => return Err(fail(format!("items() of a {}", type_name(other)))),
            }
        }
        "contains" => {
            arity(2..=2)?;
            Value::Bool(contains(&v[0], &v[1])?)
        }
        "containsKey" => {
            arity(2..=2)?;
            match &v[0] {
                Value::Object(m) => Value::Bool(m.contains_key(&key_string(&v[1])?)),
                other => return Err(fail(format!("containsKey() on a {}", type_name(other)))),
            }
        }
        "containsValue" => {
            arity(2..=2)?;
            match &v[0] {
                Value::Object(m) => Value::Bool(m.values().any(|x| equal(x, &v[1]))),
                other => return Err(fail(format!("containsValue() on a {}", type_name(other)))),
            }
        }
        "first" | "last" => {
            arity(1..=2)?;
            let items = items_of(&v[0], name)?;
            let found = if name == "first" {
                items.first()
            } else {
                items.last()
            };
            match (found, v.get(1)) {
                (Some(x), _) => x.clone(),
                (None, Some(default)) => default.clone(),
                (None, None) => return Err(fail(format!("{name}() of an empty collection"))),
            }
        }
        "isEmpty" => {
            arity(1..=1)?;
            Value::Bool(items_of(&v[0], name)?.is_empty())
        }
        "skip" | "take" => {
            arity(2..=2)?;
            let n = v[1]
                .as_u64()
                .ok_or_else(|| fail(format!("{name}() takes a count")))?
                as usize;
            let items = items_of(&v[0], name)?;
            Value::Array(if name == "skip" {
                items.into_iter().skip(n).collect()
            } else {
                items.into_iter().take(n).collect()
            })
        }
        "flatten" => {
            arity(1..=1)?;
            let mut out = Vec::new();
            for item in items_of(&v[0], name)? {
                match item {
                    Value::Array(a) => out.extend(a),
                    other => out.push(other),
                }
            }
            Value::Array(out)
        }
        "join" => {
            arity(2..=2)?;
            // `collection.join(separator)`, or `separator.join(collection)`
            // as Python writes it.
            let (items, sep) = match (&v[0], &v[1]) {
                (Value::String(sep), Value::Array(a)) => (a.clone(), sep.clone()),
                (c, Value::String(sep)) => (items_of(c, name)?, sep.clone()),
                _ => return Err(fail("join() takes a collection and a separator")),
            };
            Value::String(items.iter().map(str_of).collect::<Vec<_>>().join(&sep))
        }
        "split" => {
            arity(1..=3)?;
            let t = text(0)?;
            let parts: Vec<Value> = match v.get(1) {
                None | Some(Value::Null) => t
                    .split_whitespace()
                    .map(|p| Value::String(p.into()))
                    .collect(),
                Some(Value::String(sep)) => {
                    let max = v.get(2).and_then(Value::as_i64).unwrap_or(-1);
                    if max < 0 {
                        t.split(sep.as_str())
                            .map(|p| Value::String(p.into()))
                            .collect()
                    } else {
                        t.splitn(max as usize + 1, sep.as_str())
                            .map(|p| Value::String(p.into()))
                            .collect()
                    }
                }
                Some(other) => {
                    return Err(fail(format!("split() separator is a {}", type_name(other))));
                }
            };
            Value::Array(parts)
        }
        "toLower" | "toUpper" | "trim" | "trimLeft" | "trimRight" => {
            arity(1..=1)?;
            let t = text(0)?;
            Value::String(match name {
                "toLower" => t.to_lowercase(),
                "toUpper" => t.to_uppercase(),
                "trim" => t.trim().to_owned(),
                "trimLeft" => t.trim_start().to_owned(),
                _ => t.trim_end().to_owned(),
            })
        }
        "replace" => {
            arity(3..=3)?;
            Value::String(text(0)?.replace(text(1)?, text(2)?))
        }
        "startsWith" | "endsWith" => {
            arity(2..=2)?;
            let (t, p) = (text(0)?, text(1)?);
            Value::Bool(if name == "startsWith" {
                t.starts_with(p)
            } else {
                t.ends_with(p)
            })
        }
        "indexOf" => {
            arity(2..=2)?;
            match &v[0] {
                Value::String(t) => int(t
                    .find(text(1)?)
                    .map_or(-1, |b| t[..b].chars().count() as i64)),
                Value::Array(a) => int(a
                    .iter()
                    .position(|x| equal(x, &v[1]))
                    .map_or(-1, |i| i as i64)),
                other => return Err(fail(format!("indexOf() on a {}", type_name(other)))),
            }
        }
        "substring" => {
            arity(2..=3)?;
            let chars: Vec<char> = text(0)?.chars().collect();
            let start = v[1]
                .as_i64()
                .ok_or_else(|| fail("substring() takes a start"))?;
            let start = if start < 0 {
                (chars.len() as i64 + start).max(0)
            } else {
                start
            } as usize;
            let start = start.min(chars.len());
            let end = match v.get(2).and_then(Value::as_i64) {
                Some(n) if n >= 0 => (start + n as usize).min(chars.len()),
                _ => chars.len(),
            };
            Value::String(chars[start..end].iter().collect())
        }
        "concat" => Value::String(v.iter().map(str_of).collect()),
        "format" => {
            arity(1..=usize::MAX)?;
            Value::String(python_format(text(0)?, &v[1..], named)?)
        }
        "abs" => {
            arity(1..=1)?;
            match &v[0] {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => int(i.abs()),
                    None => float(n.as_f64().unwrap_or(0.0).abs())?,
                },
                other => return Err(fail(format!("abs() of a {}", type_name(other)))),
            }
        }
        "random" => {
            // YAQL's random() is a float in [0, 1); random(a, b) an integer
            // in [a, b].
            let r = {
                use std::hash::{BuildHasher, Hasher};
                let bits = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                (bits >> 11) as f64 / (1u64 << 53) as f64
            };
            match v {
                [] => float(r)?,
                [a, b] => {
                    let (a, b) = (
                        a.as_i64().ok_or_else(|| fail("random() takes integers"))?,
                        b.as_i64().ok_or_else(|| fail("random() takes integers"))?,
                    );
                    if b < a {
                        return Err(fail("random(a, b) needs a <= b"));
                    }
                    int(a + (r * (b - a + 1) as f64) as i64)
                }
                _ => return Err(fail("random() takes no arguments, or two")),
            }
        }
        "isString" => Value::Bool(v.first().is_some_and(Value::is_string)),
        "isList" => Value::Bool(v.first().is_some_and(Value::is_array)),
        "isDict" => Value::Bool(v.first().is_some_and(Value::is_object)),
        "isInteger" => Value::Bool(v.first().is_some_and(|x| x.is_i64() || x.is_u64())),
        "isNumber" => Value::Bool(v.first().is_some_and(Value::is_number)),
        "isBoolean" => Value::Bool(v.first().is_some_and(Value::is_boolean)),
        _ => return Ok(None),
    }))
}

/// Python's `str.format` for `{}`, `{0}` and `{name}` fields.
fn python_format(
    template: &str,
    args: &[Value],
    named: &[(String, Value)],
) -> Result<String, Error> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    let mut next = 0;
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                    field.push(d);
                }
                let value = if field.is_empty() {
                    next += 1;
                    args.get(next - 1)
                } else if let Ok(i) = field.parse::<usize>() {
                    args.get(i)
                } else {
                    named.iter().find(|(n, _)| *n == field).map(|(_, v)| v)
                };
                let value =
                    value.ok_or_else(|| fail(format!("format(): no value for '{{{field}}}'")))?;
                out.push_str(&str_of(value));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::yaql;

    struct Orquesta;

    impl Host for Orquesta {
        fn call(
            &self,
            name: &str,
            args: &[Value],
            _: &[(String, Value)],
        ) -> Option<Result<Value, String>> {
            match name {
                "ctx" => Some(Ok(match args.first() {
                    None => json!({"a": 1, "list": [3, 1, 2], "name": "web"}),
                    Some(Value::String(k)) if k == "a" => json!(1),
                    Some(k) => {
                        return Some(Err(format!("variable '{}' is not defined", str_of(k))));
                    }
                })),
                _ => None,
            }
        }
    }

    fn ev(src: &str) -> Result<Value, String> {
        let data = json!({"x": 5, "items": [{"name": "a", "n": 2}, {"name": "b", "n": 1}], "s": "Hello World"});
        yaql::evaluate(src, &data, &Orquesta).map_err(|e| e.to_string())
    }

    #[test]
    fn evaluation_table() {
        let table: &[(&str, Value)] = &[
            ("1 + 2 * 3", json!(7)),
            ("7 / 2", json!(3.5)),
            ("8 / 2", json!(4)),
            ("7 mod 3", json!(1)),
            ("-7 mod 3", json!(2)),
            ("'a' + 'b'", json!("ab")),
            ("[1] + [2]", json!([1, 2])),
            ("1 = 1.0", json!(true)),
            ("$.x = 5 and $.x > 4", json!(true)),
            ("$?.missing = null", json!(true)),
            ("$.get(missing) = null", json!(true)),
            ("not $.x = 5", json!(false)),
            ("$.x != 5 or 'fallback'", json!("fallback")),
            ("null and 1", json!(null)),
            ("2 in [1, 2]", json!(true)),
            ("'World' in $.s", json!(true)),
            ("'x' in $", json!(true)),
            ("$.items[0].name", json!("a")),
            ("$.items[-1].n", json!(1)),
            ("$.items.select($.name)", json!(["a", "b"])),
            ("$.items.where($.n > 1).select($.name)", json!(["a"])),
            ("$.items.orderBy($.n).select($.name)", json!(["b", "a"])),
            ("$.items.select($.n).sum()", json!(3)),
            ("$.items.len()", json!(2)),
            ("len($.s)", json!(11)),
            ("$.s.toLower()", json!("hello world")),
            ("$.s.split(' ')", json!(["Hello", "World"])),
            ("$.s.split(' ').join('-')", json!("Hello-World")),
            ("str(5) + str(true) + str(null)", json!("5TrueNone")),
            ("int('42') + 1", json!(43)),
            ("dict(a => 1, b => [2])", json!({"a": 1, "b": [2]})),
            ("{'a' => 1}.get('a')", json!(1)),
            ("{'a' => 1}.get('b', 'none')", json!("none")),
            ("{'a' => 1, 'b' => 2}.keys()", json!(["a", "b"])),
            ("{'a' => 1}.items()", json!([["a", 1]])),
            ("{'a' => 1}.containsKey('a')", json!(true)),
            ("coalesce(null, $.get(missing), 3)", json!(3)),
            ("range(3)", json!([0, 1, 2])),
            ("range(1, 7, 2)", json!([1, 3, 5])),
            ("let(y => 2) -> $y * $.x", json!(10)),
            ("$.items -> $.len()", json!(2)),
            ("[3, 1, 2].first()", json!(3)),
            ("[].first(0)", json!(0)),
            ("[[1, 2], [3]].flatten()", json!([1, 2, 3])),
            ("'{0} is {1}'.format('x', 5)", json!("x is 5")),
            ("ctx().name", json!("web")),
            ("ctx(a) + 1", json!(2)),
            ("ctx().list.orderBy($)", json!([1, 2, 3])),
            ("$?.missing?.deeper", json!(null)),
            ("list(1, 'a')", json!([1, "a"])),
            ("[1, 2, 2].distinct()", json!([1, 2])),
            ("[1, 2, 3].any($ > 2)", json!(true)),
            (
                "switch($.x > 9 => 'big', $.x > 4 => 'mid', true => 'small')",
                json!("mid"),
            ),
            ("dict('a b' => 1)", json!({"a b": 1})),
            ("[1, 2, 3].all($ > 2)", json!(false)),
            ("'abc'.substring(1)", json!("bc")),
            ("'abc'.replace('b', 'x')", json!("axc")),
        ];
        for (src, want) in table {
            assert_eq!(
                &ev(src).unwrap_or_else(|e| panic!("{src}: {e}")),
                want,
                "{src}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        for (src, needle) in [
            ("nope()", "unknown function 'nope'"),
            ("ctx(b)", "variable 'b' is not defined"),
            ("1 + 'a'", "cannot apply '+' to a integer and a string"),
            ("$.x.y", "cannot read '.y' of a integer"),
            ("$.missing", "unable to resolve key 'missing'"),
            ("[1][5]", "index 5 is out of a list of 1"),
            ("1 / 0", "division by zero"),
            ("len()", "len() takes 1 argument, 0 given"),
            ("1 < 'a'", "cannot compare a integer with a string"),
        ] {
            let e = ev(src).expect_err(src);
            assert!(e.contains(needle), "{src}: {e}");
        }
    }
}
