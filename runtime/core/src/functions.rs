//! StackStorm's expression functions over JSON values, the same in rule
//! templates, YAQL and Jinja: `to_json_string`, `from_json_string`,
//! `json_parse`, `json_dump`, `to_yaml_string`, `from_yaml_string`,
//! `yaml_parse`, `yaml_dump`, `jsonpath_query`, `use_none`, the `regex_*`
//! and `version_*` families, `basename`, `dirname` and
//! `to_human_time_from_seconds`.

use serde_json::Value;

/// What `use_none` turns a null into (StackStorm's marker, which its
/// parameter rendering reads back as None).
pub const NONE_MARKER: &str = "%*****__%NONE%__*****%";

/// The names [`call`] knows.
pub const NAMES: [&str; 26] = [
    "to_json_string",
    "from_json_string",
    "json_parse",
    "json_dump",
    "to_yaml_string",
    "from_yaml_string",
    "yaml_parse",
    "yaml_dump",
    "jsonpath_query",
    "use_none",
    "basename",
    "dirname",
    "regex_match",
    "regex_search",
    "regex_replace",
    "regex_substring",
    "to_human_time_from_seconds",
    "version_compare",
    "version_more_than",
    "version_less_than",
    "version_equal",
    "version_match",
    "version_bump_major",
    "version_bump_minor",
    "version_bump_patch",
    "version_strip_patch",
];

/// Call StackStorm's function `name` with positional `args` and `named`
/// ones. `None` when `name` is not one of them.
pub fn call(
    name: &str,
    args: &[Value],
    named: &[(String, Value)],
) -> Option<Result<Value, String>> {
    let arg = |i: usize, n: &str| -> Option<&Value> {
        named
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v)
            .or_else(|| args.get(i))
    };
    let text = |i: usize, n: &str| -> Result<String, String> {
        match arg(i, n) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name}(): '{n}' must be a string, not {other}")),
            None => Err(format!("{name}(): '{n}' is required")),
        }
    };
    let value = || arg(0, "value").cloned().unwrap_or(Value::Null);
    Some(match name {
        "to_json_string" | "json_dump" => {
            let indent = arg(1, "indent").and_then(Value::as_u64);
            let sort = arg(2, "sort_keys").is_some_and(|v| v == &Value::Bool(true));
            Ok(Value::String(python_json(&value(), indent, sort)))
        }
        "from_json_string" | "json_parse" => text(0, "value")
            .and_then(|s| serde_json::from_str(&s).map_err(|e| format!("{name}(): not JSON: {e}"))),
        "to_yaml_string" | "yaml_dump" => serde_yaml::to_string(&value())
            .map(Value::String)
            .map_err(|e| format!("{name}(): {e}")),
        "from_yaml_string" | "yaml_parse" => text(0, "value")
            .and_then(|s| serde_yaml::from_str(&s).map_err(|e| format!("{name}(): not YAML: {e}"))),
        "jsonpath_query" => text(1, "query").and_then(|q| {
            let path = serde_json_path::JsonPath::parse(&q)
                .map_err(|e| format!("jsonpath_query(): invalid query '{q}': {e}"))?;
            let data = value();
            let found: Vec<Value> = path.query(&data).all().into_iter().cloned().collect();
            // StackStorm answers None when nothing matches.
            Ok(if found.is_empty() {
                Value::Null
            } else {
                Value::Array(found)
            })
        }),
        "use_none" => Ok(match value() {
            Value::Null => Value::String(NONE_MARKER.to_owned()),
            v => v,
        }),
        "basename" => text(0, "path").map(|s| Value::String(basename(&s).to_owned())),
        "dirname" => text(0, "path").map(|s| Value::String(dirname(&s))),
        "regex_match" => regex_of(name, &text(1, "pattern")).and_then(|re| {
            let s = text(0, "value")?;
            Ok(Value::Bool(re.find(&s).is_some_and(|m| m.start() == 0)))
        }),
        "regex_search" => regex_of(name, &text(1, "pattern"))
            .and_then(|re| Ok(Value::Bool(re.is_match(&text(0, "value")?)))),
        "regex_replace" => regex_of(name, &text(1, "pattern")).and_then(|re| {
            let s = text(0, "value")?;
            let with = python_replacement(&text(2, "replacement")?);
            Ok(Value::String(
                re.replace_all(&s, with.as_str()).into_owned(),
            ))
        }),
        "regex_substring" => regex_of(name, &text(1, "pattern")).and_then(|re| {
            let s = text(0, "value")?;
            let index = arg(2, "result_index").and_then(Value::as_u64).unwrap_or(0) as usize;
            re.find_iter(&s)
                .nth(index)
                .map(|m| Value::String(m.as_str().to_owned()))
                .ok_or_else(|| format!("regex_substring(): no match number {index} in '{s}'"))
        }),
        "to_human_time_from_seconds" => match value().as_f64() {
            Some(s) if s >= 0.0 => Ok(Value::String(human_time(s))),
            _ => Err("to_human_time_from_seconds(): expected a number of seconds >= 0".into()),
        },
        n if n.starts_with("version_") => version(n, &text(0, "value"), || text(1, "pattern")),
        _ => return None,
    })
}

fn regex_of(name: &str, pattern: &Result<String, String>) -> Result<regex::Regex, String> {
    let p = pattern.as_ref().map_err(Clone::clone)?;
    regex::Regex::new(p).map_err(|e| format!("{name}(): invalid pattern '{p}': {e}"))
}

/// Python's `\1` backreferences in a replacement, as the regex crate
/// writes them (`${1}`); a literal `$` stays literal.
fn python_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

pub fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or_default()
}

pub fn dirname(s: &str) -> String {
    match s.rfind('/') {
        Some(0) => "/".to_owned(),
        Some(i) => s[..i].to_owned(),
        None => String::new(),
    }
}

/// JSON as Python's `json.dumps` writes it with StackStorm's separators
/// (`, ` between items unless indented, `: ` after keys).
pub fn python_json(v: &Value, indent: Option<u64>, sort_keys: bool) -> String {
    fn write(v: &Value, indent: Option<u64>, sort: bool, depth: u64, out: &mut String) {
        let newline = |out: &mut String, depth: u64| {
            if let Some(n) = indent {
                out.push('\n');
                out.push_str(&" ".repeat((n * depth) as usize));
            }
        };
        let sep = if indent.is_some() { "," } else { ", " };
        match v {
            Value::Array(items) if !items.is_empty() => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    newline(out, depth + 1);
                    write(item, indent, sort, depth + 1, out);
                }
                newline(out, depth);
                out.push(']');
            }
            Value::Object(map) if !map.is_empty() => {
                out.push('{');
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if sort {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    newline(out, depth + 1);
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    write(item, indent, sort, depth + 1, out);
                }
                newline(out, depth);
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, indent, sort_keys, 0, &mut out);
    out
}

/// `3725` → `1h2m5s`; under a second, milliseconds or microseconds.
fn human_time(seconds: f64) -> String {
    if seconds < 1.0 {
        let us = (seconds * 1_000_000.0).round() as u64;
        return if us >= 1000 {
            format!("{}ms", us / 1000)
        } else {
            format!("{us}\u{3bc}s")
        };
    }
    let mut s = seconds as u64;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= size || !out.is_empty() {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    out.push_str(&format!("{s}s"));
    out
}

fn version(
    name: &str,
    value: &Result<String, String>,
    other: impl Fn() -> Result<String, String>,
) -> Result<Value, String> {
    let parse = |s: &str| {
        semver::Version::parse(s).map_err(|e| format!("{name}(): '{s}' is not a version: {e}"))
    };
    let v = parse(value.as_ref().map_err(Clone::clone)?)?;
    let cmp = || -> Result<std::cmp::Ordering, String> { Ok(v.cmp(&parse(&other()?)?)) };
    let bumped = |major: u64, minor: u64, patch: u64| {
        Ok(Value::String(
            semver::Version::new(major, minor, patch).to_string(),
        ))
    };
    match name {
        "version_compare" => Ok(Value::from(cmp()? as i8)),
        "version_more_than" => Ok(Value::Bool(cmp()?.is_gt())),
        "version_less_than" => Ok(Value::Bool(cmp()?.is_lt())),
        "version_equal" => Ok(Value::Bool(cmp()?.is_eq())),
        "version_match" => {
            let p = other()?;
            let req = semver::VersionReq::parse(&p)
                .map_err(|e| format!("version_match(): '{p}' is not a version pattern: {e}"))?;
            Ok(Value::Bool(req.matches(&v)))
        }
        "version_bump_major" => bumped(v.major + 1, 0, 0),
        "version_bump_minor" => bumped(v.major, v.minor + 1, 0),
        "version_bump_patch" => bumped(v.major, v.minor, v.patch + 1),
        "version_strip_patch" => Ok(Value::String(format!("{}.{}", v.major, v.minor))),
        _ => Err(format!("unknown function '{name}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(name: &str, args: &[Value]) -> Value {
        call(name, args, &[])
            .expect("known")
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn data_functions_match_stackstorm() {
        let obj = json!({"foo": {"bar": "foobar"}});
        assert_eq!(
            ok("to_json_string", std::slice::from_ref(&obj)),
            json!(r#"{"foo": {"bar": "foobar"}}"#)
        );
        assert_eq!(
            ok(
                "from_json_string",
                &[json!(r#"{"foo": {"bar": "foobar"}}"#)]
            ),
            obj
        );
        assert_eq!(
            ok("to_yaml_string", std::slice::from_ref(&obj)),
            json!("foo:\n  bar: foobar\n")
        );
        assert_eq!(
            ok("from_yaml_string", &[json!("foo:\n  bar: foobar\n")]),
            obj
        );
        assert_eq!(
            ok("jsonpath_query", &[obj.clone(), json!("$.foo.bar")]),
            json!(["foobar"])
        );
        assert_eq!(ok("jsonpath_query", &[obj, json!("$.nope")]), Value::Null);
        assert_eq!(ok("use_none", &[Value::Null]), json!(NONE_MARKER));
        assert_eq!(ok("use_none", &[json!("x")]), json!("x"));
        assert_eq!(
            ok(
                "to_json_string",
                &[json!({"b": 1, "a": [1, 2]}), json!(2), json!(true)]
            ),
            json!("{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 1\n}")
        );
    }

    #[test]
    fn regex_path_time_and_version_functions() {
        assert_eq!(
            ok("regex_match", &[json!("v1.2"), json!("v\\d")]),
            json!(true)
        );
        assert_eq!(
            ok("regex_match", &[json!("xv1"), json!("v\\d")]),
            json!(false)
        );
        assert_eq!(
            ok("regex_search", &[json!("xv1"), json!("v\\d")]),
            json!(true)
        );
        assert_eq!(
            ok(
                "regex_replace",
                &[json!("a-b"), json!("(\\w)-(\\w)"), json!("\\2$\\1")]
            ),
            json!("b$a")
        );
        assert_eq!(
            ok(
                "regex_substring",
                &[json!("a1 b2"), json!("\\w\\d"), json!(1)]
            ),
            json!("b2")
        );
        assert_eq!(ok("basename", &[json!("/a/b.txt")]), json!("b.txt"));
        assert_eq!(ok("dirname", &[json!("/a/b.txt")]), json!("/a"));
        assert_eq!(
            ok("to_human_time_from_seconds", &[json!(3725)]),
            json!("1h2m5s")
        );
        assert_eq!(
            ok("version_compare", &[json!("1.2.3"), json!("1.10.0")]),
            json!(-1)
        );
        assert_eq!(
            ok("version_match", &[json!("1.2.3"), json!(">=1.2.0")]),
            json!(true)
        );
        assert_eq!(ok("version_bump_minor", &[json!("1.2.3")]), json!("1.3.0"));
        assert_eq!(ok("version_strip_patch", &[json!("1.2.3")]), json!("1.2"));
        assert!(call("nope", &[], &[]).is_none());
        let e = call("from_json_string", &[json!("{")], &[]).expect("known");
        assert!(e.expect_err("not JSON").contains("not JSON"));
    }
}
