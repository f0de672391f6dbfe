//! StackStorm's rule criteria operators (`st2common/operators.py`), by their
//! exact names and aliases, looked up case-insensitively.
//!
//! `value` is what the criteria key found in the payload (`None` when the
//! key is absent); `pattern` is the criterion's rendered pattern. A type
//! mismatch (a number against a string pattern, say) is "no match", as in
//! StackStorm where the comparison raises and the criterion fails. An
//! unusable *pattern* (an invalid regex, a malformed `search`) is an error,
//! which the rules engine records as a failed enforcement.

use std::cmp::Ordering;

use serde_json::Value;

/// Every operator StackStorm registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    NEquals,
    IEquals,
    Contains,
    IContains,
    NContains,
    INContains,
    StartsWith,
    IStartsWith,
    EndsWith,
    IEndsWith,
    LessThan,
    GreaterThan,
    MatchWildcard,
    MatchRegex,
    Regex,
    IRegex,
    TimeDiffLt,
    TimeDiffGt,
    Exists,
    NExists,
    Inside,
    NInside,
    Search,
}

/// All 33 names StackStorm accepts, with the operator each one means.
pub const NAMES: [(&str, Operator); 33] = [
    ("equals", Operator::Equals),
    ("eq", Operator::Equals),
    ("nequals", Operator::NEquals),
    ("neq", Operator::NEquals),
    ("iequals", Operator::IEquals),
    ("ieq", Operator::IEquals),
    ("contains", Operator::Contains),
    ("icontains", Operator::IContains),
    ("ncontains", Operator::NContains),
    ("incontains", Operator::INContains),
    ("startswith", Operator::StartsWith),
    ("istartswith", Operator::IStartsWith),
    ("endswith", Operator::EndsWith),
    ("iendswith", Operator::IEndsWith),
    ("lessthan", Operator::LessThan),
    ("lt", Operator::LessThan),
    ("greaterthan", Operator::GreaterThan),
    ("gt", Operator::GreaterThan),
    ("matchwildcard", Operator::MatchWildcard),
    ("matchregex", Operator::MatchRegex),
    ("regex", Operator::Regex),
    ("iregex", Operator::IRegex),
    ("timediff_lt", Operator::TimeDiffLt),
    ("td_lt", Operator::TimeDiffLt),
    ("timediff_gt", Operator::TimeDiffGt),
    ("td_gt", Operator::TimeDiffGt),
    ("exists", Operator::Exists),
    ("nexists", Operator::NExists),
    ("inside", Operator::Inside),
    ("in", Operator::Inside),
    ("ninside", Operator::NInside),
    ("nin", Operator::NInside),
    ("search", Operator::Search),
];

/// How `search` combines its child criteria over list items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchCondition {
    /// Some item matches all child criteria.
    Any,
    /// Every item matches all child criteria.
    All,
    /// Some item matches some child criterion.
    Any2Any,
    /// Every item matches some child criterion.
    All2Any,
}

impl SearchCondition {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "any" => Self::Any,
            "all" => Self::All,
            "any2any" => Self::Any2Any,
            "all2any" => Self::All2Any,
            _ => return None,
        })
    }
}

/// A pattern the operator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operator '{operator}': {message}")]
pub struct OperatorError {
    pub operator: &'static str,
    pub message: String,
}

impl Operator {
    /// Look up a name or alias, ignoring case.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        NAMES.iter().find(|(n, _)| *n == lower).map(|(_, op)| *op)
    }

    /// The canonical (long) name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(n, _)| *n)
            .expect("every operator has a name")
    }

    /// Apply to a payload value. `search` needs [`Operator::apply_search`].
    pub fn apply(self, value: Option<&Value>, pattern: &Value) -> Result<bool, OperatorError> {
        let err = |message: String| OperatorError {
            operator: self.name(),
            message,
        };
        let value = value.filter(|v| !v.is_null());
        Ok(match self {
            Self::Exists => value.is_some(),
            Self::NExists => value.is_none(),
            Self::Equals => value.is_some_and(|v| json_eq(v, pattern)),
            Self::NEquals => !value.is_some_and(|v| json_eq(v, pattern)),
            Self::IEquals => {
                strs(value, pattern).is_some_and(|(v, p)| v.to_lowercase() == p.to_lowercase())
            }
            // `pattern in value`; where Python would raise (a missing value,
            // a number), StackStorm's filter counts no match, negated or not.
            Self::Contains => value.and_then(|v| contains(v, pattern)) == Some(true),
            Self::IContains => strs(value, pattern)
                .is_some_and(|(v, p)| v.to_lowercase().contains(&p.to_lowercase())),
            Self::NContains => value.and_then(|v| contains(v, pattern)) == Some(false),
            Self::INContains => strs(value, pattern)
                .is_some_and(|(v, p)| !v.to_lowercase().contains(&p.to_lowercase())),
            Self::StartsWith => strs(value, pattern).is_some_and(|(v, p)| v.starts_with(p)),
            Self::IStartsWith => strs(value, pattern)
                .is_some_and(|(v, p)| v.to_lowercase().starts_with(&p.to_lowercase())),
            Self::EndsWith => strs(value, pattern).is_some_and(|(v, p)| v.ends_with(p)),
            Self::IEndsWith => strs(value, pattern)
                .is_some_and(|(v, p)| v.to_lowercase().ends_with(&p.to_lowercase())),
            Self::LessThan => compare(value, pattern) == Some(Ordering::Less),
            Self::GreaterThan => compare(value, pattern) == Some(Ordering::Greater),
            Self::MatchWildcard => match strs(value, pattern) {
                Some((v, p)) => glob::Pattern::new(p)
                    .map_err(|e| err(format!("invalid wildcard pattern '{p}': {e}")))?
                    .matches(v),
                None => false,
            },
            Self::MatchRegex | Self::Regex | Self::IRegex => {
                let Some(p) = pattern.as_str() else {
                    return Err(err(format!("pattern must be a string, found {pattern}")));
                };
                let source = match self {
                    // re.match: anchored at the start, `.` matches newlines.
                    Self::MatchRegex => format!("(?s)\\A(?:{p})"),
                    Self::IRegex => format!("(?i){p}"),
                    _ => p.to_owned(),
                };
                let re = regex::Regex::new(&source)
                    .map_err(|e| err(format!("invalid regex '{p}': {e}")))?;
                value
                    .and_then(Value::as_str)
                    .is_some_and(|v| re.is_match(v))
            }
            Self::TimeDiffLt | Self::TimeDiffGt => {
                let Some(limit) = pattern
                    .as_f64()
                    .or_else(|| pattern.as_str().and_then(|s| s.trim().parse().ok()))
                else {
                    return Err(err(format!(
                        "pattern must be a number of seconds, found {pattern}"
                    )));
                };
                match value.and_then(Value::as_str).and_then(parse_time) {
                    Some(t) => {
                        // Total seconds. StackStorm compares `timedelta.seconds`,
                        // the remainder within a day, so an event two days old
                        // passes its `timediff_lt: 60` at the right minute; we
                        // take that for a bug and do not copy it.
                        let age = (time::OffsetDateTime::now_utc() - t).as_seconds_f64();
                        if self == Self::TimeDiffLt {
                            age < limit
                        } else {
                            age > limit
                        }
                    }
                    None => false,
                }
            }
            Self::Inside => value.and_then(|v| contains(pattern, v)) == Some(true),
            Self::NInside => value.and_then(|v| contains(pattern, v)) == Some(false),
            Self::Search => return Err(err("search needs a condition and nested criteria".into())),
        })
    }

    /// `search`: `pattern` maps `item.<path>` keys to `{type, pattern}`
    /// criteria applied to each element of the list `value` (an object is
    /// treated as a one-element list).
    pub fn apply_search(
        value: Option<&Value>,
        condition: SearchCondition,
        pattern: &Value,
    ) -> Result<bool, OperatorError> {
        let err = |message: String| OperatorError {
            operator: "search",
            message,
        };
        let Value::Object(children) = pattern else {
            return Err(err(format!(
                "pattern must be a mapping of item criteria, found {pattern}"
            )));
        };
        let mut criteria = Vec::new();
        for (key, spec) in children {
            let path = key.split('#').next().unwrap_or(key);
            let path = path
                .strip_prefix("item.")
                .or_else(|| (path == "item").then_some(""))
                .ok_or_else(|| err(format!("criterion key '{key}' must start with 'item.'")))?;
            let op_name = spec
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("criterion '{key}' needs a 'type'")))?;
            let op = Operator::from_name(op_name)
                .ok_or_else(|| err(format!("criterion '{key}': unknown operator '{op_name}'")))?;
            if op == Operator::Search {
                return Err(err("nested search is not supported".into()));
            }
            criteria.push((
                path.to_owned(),
                op,
                spec.get("pattern").cloned().unwrap_or(Value::Null),
            ));
        }
        let items: Vec<&Value> = match value {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(obj @ Value::Object(_)) => vec![obj],
            _ => return Ok(false),
        };
        let item_matches = |item: &Value, all: bool| -> Result<bool, OperatorError> {
            let mut results = criteria
                .iter()
                .map(|(path, op, pattern)| op.apply(lookup(item, path), pattern));
            if all {
                results.try_fold(true, |acc, r| r.map(|m| acc && m))
            } else {
                results.try_fold(false, |acc, r| r.map(|m| acc || m))
            }
        };
        let (every_item, all_criteria) = match condition {
            SearchCondition::Any => (false, true),
            SearchCondition::All => (true, true),
            SearchCondition::Any2Any => (false, false),
            SearchCondition::All2Any => (true, false),
        };
        let mut outcomes = Vec::with_capacity(items.len());
        for item in &items {
            outcomes.push(item_matches(item, all_criteria)?);
        }
        // Python's all([]) is True, any([]) is False.
        Ok(if every_item {
            outcomes.iter().all(|m| *m)
        } else {
            outcomes.iter().any(|m| *m)
        })
    }
}

/// Follow a dotted path (`a.b.0.c`, or `a.b[0].c`) into a JSON value. The
/// empty path is the value itself.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(value);
    }
    let normalized = path.replace('[', ".").replace(']', "");
    let mut current = value;
    for part in normalized.split('.').filter(|p| !p.is_empty()) {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn strs<'a>(value: Option<&'a Value>, pattern: &'a Value) -> Option<(&'a str, &'a str)> {
    Some((value?.as_str()?, pattern.as_str()?))
}

/// Python-style equality: numbers compare by value (1 == 1.0), other types
/// only equal themselves.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Python's `needle in haystack`: substring for strings, membership for
/// lists, key for mappings; `None` where Python raises a TypeError.
fn contains(haystack: &Value, needle: &Value) -> Option<bool> {
    match haystack {
        Value::String(h) => needle.as_str().map(|n| h.contains(n)),
        Value::Array(items) => Some(items.iter().any(|item| json_eq(item, needle))),
        Value::Object(map) => needle.as_str().map(|n| map.contains_key(n)),
        _ => None,
    }
}

/// Order numbers with numbers and strings with strings; anything else is
/// incomparable, as in Python 3.
fn compare(value: Option<&Value>, pattern: &Value) -> Option<Ordering> {
    match (value?, pattern) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    use time::macros::format_description;
    if let Some(t) = crate::time::parse_rfc3339(s) {
        return Some(t);
    }
    let formats = [
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
    ];
    formats
        .iter()
        .find_map(|f| time::PrimitiveDateTime::parse(s, f).ok())
        .map(|t| t.assume_utc())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(name: &str, value: Value, pattern: Value) -> bool {
        let op = Operator::from_name(name).unwrap_or_else(|| panic!("unknown operator {name}"));
        op.apply(Some(&value), &pattern)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn all_33_names_resolve_case_insensitively() {
        assert_eq!(NAMES.len(), 33);
        for (name, op) in NAMES {
            assert_eq!(Operator::from_name(name), Some(op));
            assert_eq!(Operator::from_name(&name.to_uppercase()), Some(op));
        }
        assert_eq!(Operator::from_name("equal"), None);
    }

    /// (operator names, value, pattern, expected)
    fn table() -> Vec<(&'static [&'static str], Value, Value, bool)> {
        vec![
            (&["equals", "eq"], json!("a"), json!("a"), true),
            (&["equals", "eq"], json!("a"), json!("b"), false),
            (&["equals", "eq"], json!(5), json!(5.0), true),
            (&["equals", "eq"], json!(5), json!("5"), false),
            (&["nequals", "neq"], json!("a"), json!("b"), true),
            (&["nequals", "neq"], json!("a"), json!("a"), false),
            (&["iequals", "ieq"], json!("ABC"), json!("abc"), true),
            (&["iequals", "ieq"], json!("ABC"), json!("abd"), false),
            (&["iequals", "ieq"], json!(1), json!("1"), false),
            (&["contains"], json!("hello world"), json!("lo w"), true),
            (&["contains"], json!("hello"), json!("xyz"), false),
            (&["contains"], json!(["a", "b"]), json!("b"), true),
            (&["contains"], json!(12345), json!("3"), false),
            (&["icontains"], json!("Hello"), json!("HELL"), true),
            (&["icontains"], json!("Hello"), json!("bye"), false),
            (&["ncontains"], json!("hello"), json!("xyz"), true),
            (&["ncontains"], json!("hello"), json!("ell"), false),
            (&["ncontains"], json!(12345), json!("3"), false),
            (&["ncontains"], json!(["a"]), json!("b"), true),
            (&["incontains"], json!("Hello"), json!("XYZ"), true),
            (&["incontains"], json!("Hello"), json!("ELL"), false),
            (&["incontains"], json!(["a"]), json!("B"), false),
            (&["startswith"], json!("foobar"), json!("foo"), true),
            (&["startswith"], json!("foobar"), json!("Foo"), false),
            (&["istartswith"], json!("foobar"), json!("FOO"), true),
            (&["istartswith"], json!("foobar"), json!("bar"), false),
            (&["endswith"], json!("foobar"), json!("bar"), true),
            (&["endswith"], json!("foobar"), json!("BAR"), false),
            (&["iendswith"], json!("foobar"), json!("BAR"), true),
            (&["iendswith"], json!("foobar"), json!("foo"), false),
            (&["lessthan", "lt"], json!(1), json!(2), true),
            (&["lessthan", "lt"], json!(3), json!(2), false),
            (&["lessthan", "lt"], json!(1), json!("2"), false),
            (&["greaterthan", "gt"], json!(3), json!(2.5), true),
            (&["greaterthan", "gt"], json!(2), json!(2), false),
            (&["greaterthan", "gt"], json!("b"), json!("a"), true),
            (
                &["matchwildcard"],
                json!("server-01.prod"),
                json!("server-*.prod"),
                true,
            ),
            (
                &["matchwildcard"],
                json!("server-01.dev"),
                json!("server-*.prod"),
                false,
            ),
            (&["matchwildcard"], json!(7), json!("*"), false),
            (&["matchregex"], json!("abc123"), json!("abc\\d+"), true),
            (&["matchregex"], json!("xabc123"), json!("abc\\d+"), false),
            (&["regex"], json!("xabc123"), json!("abc\\d+"), true),
            (&["regex"], json!("ABC"), json!("abc"), false),
            (&["regex"], json!(123), json!("1"), false),
            (&["iregex"], json!("xABC"), json!("abc"), true),
            (&["iregex"], json!("xyz"), json!("abc"), false),
            (
                &["timediff_lt", "td_lt"],
                json!(crate::time::now_rfc3339()),
                json!(60),
                true,
            ),
            (
                &["timediff_lt", "td_lt"],
                json!("2000-01-01 00:00:00"),
                json!(60),
                false,
            ),
            (
                &["timediff_gt", "td_gt"],
                json!("2000-01-01T00:00:00Z"),
                json!(60),
                true,
            ),
            (
                &["timediff_gt", "td_gt"],
                json!(crate::time::now_rfc3339()),
                json!("60"),
                false,
            ),
            (
                &["timediff_gt", "td_gt"],
                json!("not a date"),
                json!(60),
                false,
            ),
            (&["exists"], json!("x"), json!(null), true),
            (&["exists"], json!(null), json!(null), false),
            (&["nexists"], json!(null), json!(null), true),
            (&["nexists"], json!(0), json!(null), false),
            (&["inside", "in"], json!("b"), json!(["a", "b"]), true),
            (&["inside", "in"], json!("lo"), json!("hello"), true),
            (&["inside", "in"], json!("z"), json!(["a", "b"]), false),
            (&["inside", "in"], json!(2), json!("123"), false),
            (&["ninside", "nin"], json!("z"), json!(["a", "b"]), true),
            (&["ninside", "nin"], json!("a"), json!(["a", "b"]), false),
            (&["ninside", "nin"], json!(2), json!("123"), false),
        ]
    }

    #[test]
    fn every_operator_and_alias_has_true_and_false_cases() {
        let mut covered = std::collections::HashSet::new();
        for (names, value, pattern, expected) in table() {
            for name in names {
                assert_eq!(
                    check(name, value.clone(), pattern.clone()),
                    expected,
                    "{name}({value}, {pattern})"
                );
                covered.insert(*name);
            }
        }
        let missing: Vec<_> = NAMES
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !covered.contains(n) && *n != "search")
            .collect();
        assert!(missing.is_empty(), "operators without cases: {missing:?}");
    }

    #[test]
    fn missing_keys_match_only_nexists_and_nequals() {
        for (name, op) in NAMES {
            if op == Operator::Search {
                continue;
            }
            let pattern = if matches!(op, Operator::TimeDiffLt | Operator::TimeDiffGt) {
                json!(5)
            } else {
                json!("x")
            };
            let got = op.apply(None, &pattern).expect("valid pattern");
            // Only these hold for a missing value: the others raise in
            // StackStorm (`"x" not in None`) and so do not match.
            let expected = matches!(op, Operator::NExists | Operator::NEquals);
            assert_eq!(got, expected, "{name} on a missing key");
        }
    }

    #[test]
    fn bad_patterns_are_errors_not_mismatches() {
        let err = Operator::Regex
            .apply(Some(&json!("a")), &json!("("))
            .expect_err("invalid regex");
        assert!(
            err.to_string()
                .starts_with("operator 'regex': invalid regex '('"),
            "{err}"
        );
        assert!(
            Operator::TimeDiffLt
                .apply(Some(&json!("a")), &json!("soon"))
                .is_err()
        );
        assert!(
            Operator::MatchWildcard
                .apply(Some(&json!("a")), &json!("["))
                .is_err()
        );
    }

    #[test]
    fn search_conditions() {
        let items = json!([
            {"name": "disk", "status": "ok", "used": 40},
            {"name": "cpu", "status": "critical", "used": 99},
        ]);
        let pattern = json!({
            "item.status": {"type": "equals", "pattern": "critical"},
            "item.used": {"type": "greaterthan", "pattern": 90},
        });
        let search = |cond, value: &Value, pattern: &Value| {
            Operator::apply_search(Some(value), cond, pattern).expect("valid search")
        };
        assert!(search(SearchCondition::Any, &items, &pattern));
        assert!(!search(SearchCondition::All, &items, &pattern));
        assert!(search(SearchCondition::Any2Any, &items, &pattern));
        assert!(!search(SearchCondition::All2Any, &items, &pattern));
        let loose = json!({
            "item.status": {"type": "equals", "pattern": "critical"},
            "item.name": {"type": "equals", "pattern": "disk"},
        });
        assert!(search(SearchCondition::All2Any, &items, &loose));
        assert!(!search(SearchCondition::Any, &items, &loose));
        // An object counts as one item; a missing or scalar value never matches.
        assert!(search(
            SearchCondition::All,
            &json!({"status": "critical", "used": 95}),
            &pattern
        ));
        assert!(!Operator::apply_search(None, SearchCondition::Any, &pattern).expect("valid"));
        assert!(!search(SearchCondition::Any, &json!(5), &pattern));
        // Python's all([]) and any([]) on an empty list.
        assert!(search(SearchCondition::All, &json!([]), &pattern));
        assert!(search(SearchCondition::All2Any, &json!([]), &pattern));
        assert!(!search(SearchCondition::Any, &json!([]), &pattern));
        assert!(!search(SearchCondition::Any2Any, &json!([]), &pattern));
        // Nested paths inside items.
        let nested = json!([{"meta": {"tags": ["a", "b"]}}]);
        let p = json!({"item.meta.tags": {"type": "contains", "pattern": "b"}});
        assert!(search(SearchCondition::Any, &nested, &p));
        let bad = json!({"status": {"type": "equals", "pattern": "x"}});
        assert!(Operator::apply_search(Some(&items), SearchCondition::Any, &bad).is_err());
        let bad_op = json!({"item.status": {"type": "like", "pattern": "x"}});
        assert!(Operator::apply_search(Some(&items), SearchCondition::Any, &bad_op).is_err());
    }

    #[test]
    fn lookup_follows_dots_and_indices() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": 2}]}});
        assert_eq!(lookup(&v, "a.b.1.c"), Some(&json!(2)));
        assert_eq!(lookup(&v, "a.b[0].c"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.x"), None);
        assert_eq!(lookup(&v, "a.b.9"), None);
    }
}
