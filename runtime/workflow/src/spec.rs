//! A workflow definition, Orquesta's format, read and inspected.
//!
//! [`Workflow::parse`] reads the YAML into typed parts and checks it whole:
//! unknown keys, task names, `do` targets, `join`, `with`, inline
//! parameters, and the syntax of every expression. Every problem found is
//! reported, each with its path (`tasks.t2.next[0].do`), as StackStorm's
//! `POST /api/v1/workflows/inspect` does.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_yaml::Value as Yaml;

use crate::expr;

/// One problem in a definition, at a path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `tasks.t2.next[0].do`, or `""` for the document.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A definition that could not be accepted: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<Problem>);

/// `name: value` items of `input`, `vars`, `output` and `publish`, in order.
pub type Assignments = Vec<(String, Value)>;

/// A workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub description: Option<String>,
    /// Inputs in order: name and default (an expression template), if any.
    pub input: Vec<(String, Option<Value>)>,
    pub vars: Assignments,
    pub output: Assignments,
    pub tasks: BTreeMap<String, Task>,
    /// What the conductor needs to know of the task graph, worked out
    /// once when the definition is read.
    pub graph: Graph,
}

/// The task graph's facts the conductor asks about at every arrival.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// For each task some transition leads to: how many transitions do,
    /// from which tasks, and whether the task lies on a cycle (arriving
    /// again is then a loop, not a new branch).
    pub inbound: BTreeMap<String, Inbound>,
    /// Some expression calls `task()` or `task_status()`.
    pub reads_tasks: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inbound {
    pub transitions: usize,
    pub tasks: std::collections::BTreeSet<String>,
    pub in_cycle: bool,
}

impl Graph {
    fn of(wf: &Workflow) -> Self {
        let mut inbound: BTreeMap<String, Inbound> = BTreeMap::new();
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, task) in &wf.tasks {
            for t in &task.next {
                for target in &t.targets {
                    if let Target::Task(next) = target {
                        let entry = inbound.entry(next.clone()).or_default();
                        entry.transitions += 1;
                        entry.tasks.insert(name.clone());
                        edges.entry(name).or_default().push(next);
                    }
                }
            }
        }
        for name in cyclic(&wf.tasks, &edges) {
            if let Some(entry) = inbound.get_mut(name) {
                entry.in_cycle = true;
            }
        }
        Self {
            inbound,
            reads_tasks: mentions(wf, &["task(", "task_status("]),
        }
    }
}

/// The tasks on a cycle: in a strongly connected component of more than
/// one task, or with a transition to themselves (Kosaraju's two passes,
/// each iterative: a definition may hold many thousands of tasks).
fn cyclic<'a>(
    tasks: &'a BTreeMap<String, Task>,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
) -> Vec<&'a str> {
    let mut reverse: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, tos) in edges {
        for to in tos {
            reverse.entry(to).or_default().push(from);
        }
    }
    // Pass 1: finishing order.
    let mut order = Vec::with_capacity(tasks.len());
    let mut seen = std::collections::BTreeSet::new();
    for start in tasks.keys() {
        if !seen.insert(start.as_str()) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        while let Some((node, next)) = stack.pop() {
            let out = edges.get(node).map_or(&[][..], Vec::as_slice);
            if let Some(&to) = out.get(next) {
                stack.push((node, next + 1));
                if seen.insert(to) {
                    stack.push((to, 0));
                }
            } else {
                order.push(node);
            }
        }
    }
    // Pass 2: components on the reversed graph, latest finished first.
    let mut placed = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for &root in order.iter().rev() {
        if !placed.insert(root) {
            continue;
        }
        let mut component = vec![root];
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &from in reverse.get(node).map_or(&[][..], Vec::as_slice) {
                if placed.insert(from) {
                    component.push(from);
                    stack.push(from);
                }
            }
        }
        let looped = |n: &str| edges.get(n).is_some_and(|tos| tos.contains(&n));
        if component.len() > 1 || looped(root) {
            out.extend(component);
        }
    }
    out
}

/// Whether any expression of `wf` mentions one of `needles`.
fn mentions(wf: &Workflow, needles: &[&str]) -> bool {
    fn walk(v: &Value, needles: &[&str]) -> bool {
        match v {
            Value::String(s) => needles.iter().any(|n| s.contains(n)),
            Value::Array(items) => items.iter().any(|i| walk(i, needles)),
            Value::Object(m) => m.values().any(|i| walk(i, needles)),
            _ => false,
        }
    }
    let mut values: Vec<&Value> = Vec::new();
    values.extend(wf.input.iter().filter_map(|(_, d)| d.as_ref()));
    values.extend(wf.vars.iter().map(|(_, v)| v));
    values.extend(wf.output.iter().map(|(_, v)| v));
    for task in wf.tasks.values() {
        values.extend(task.action.iter());
        match &task.input {
            TaskInput::Map(pairs) => values.extend(pairs.iter().map(|(_, v)| v)),
            TaskInput::Expr(v) => values.push(v),
        }
        if let Some(w) = &task.with {
            values.push(&w.items);
            values.extend(w.concurrency.iter());
        }
        values.extend(task.delay.iter());
        if let Some(r) = &task.retry {
            values.extend(r.when.iter());
            values.push(&r.count);
            values.extend(r.delay.iter());
        }
        for t in &task.next {
            values.extend(t.when.iter());
            values.extend(t.publish.iter().map(|(_, v)| v));
        }
    }
    values.into_iter().any(|v| walk(v, needles))
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The action ref (may be an expression); `None` for an action-less task.
    pub action: Option<Value>,
    /// Parameters: the inline `k=v` ones, then `input`'s (which win).
    pub input: TaskInput,
    pub with: Option<WithItems>,
    pub delay: Option<Value>,
    pub retry: Option<Retry>,
    pub join: Option<Join>,
    pub next: Vec<Transition>,
}

/// A task's parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskInput {
    /// Name → template, inline parameters first.
    Map(Assignments),
    /// One expression that yields the whole dict.
    Expr(Value),
}

/// `with`: the items a task runs its action over.
#[derive(Debug, Clone, PartialEq)]
pub struct WithItems {
    /// `x, y in <% ... %>`: the names of each item's parts; empty when the
    /// items are not named.
    pub names: Vec<String>,
    pub items: Value,
    pub concurrency: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub when: Option<Value>,
    pub count: Value,
    pub delay: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    All,
    Count(u32),
}

/// One entry of `next`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub when: Option<Value>,
    pub publish: Assignments,
    pub targets: Vec<Target>,
}

/// What a transition does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Task(String),
    /// The default: no remediation.
    Continue,
    /// Marks a failure remediated.
    Noop,
    /// Fails the workflow (other targets of the same `do` still run).
    Fail,
    /// Retries the task (`retry: {count: 3}` with the transition's `when`).
    Retry,
}

const COMMANDS: [&str; 4] = ["continue", "noop", "fail", "retry"];

struct Checker {
    problems: Vec<Problem>,
    /// Variables expressions read through `ctx()`, with where.
    reads: Vec<(String, String)>,
}

impl Checker {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Check the expressions in `v` (at `path`) and convert it to JSON.
    fn template(&mut self, path: &str, v: &Yaml) -> Value {
        let value = match yaml_to_json(v) {
            Ok(value) => value,
            Err(e) => {
                self.problem(path, e);
                return Value::Null;
            }
        };
        self.check_expressions(path, &value);
        value
    }

    fn check_expressions(&mut self, path: &str, v: &Value) {
        match v {
            Value::String(s) => {
                for name in ctx_reads(s) {
                    self.reads.push((path.to_owned(), name));
                }
                if let Err(e) = expr::check(s) {
                    self.problem(path, e);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check_expressions(&format!("{path}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    self.check_expressions(&format!("{path}.{k}"), item);
                }
            }
            _ => {}
        }
    }

    /// `name`s or one-key `{name: value}` maps (input, vars, output,
    /// publish), or the inline `a=<% x %> b=1` form where `inline` allows.
    fn assignments(
        &mut self,
        path: &str,
        v: &Yaml,
        names_alone: bool,
        inline: bool,
    ) -> Vec<(String, Option<Value>)> {
        let mut out = Vec::new();
        match v {
            Yaml::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    match item {
                        Yaml::String(name) if names_alone => {
                            self.name(&at, name);
                            out.push((name.clone(), None));
                        }
                        Yaml::Mapping(m) if m.len() == 1 => {
                            let (k, value) = m.iter().next().expect("one entry");
                            let Some(name) = k.as_str() else {
                                self.problem(&at, "the name must be a string");
                                continue;
                            };
                            self.name(&at, name);
                            let value = self.template(&format!("{at}.{name}"), value);
                            out.push((name.to_owned(), Some(value)));
                        }
                        _ => self.problem(
                            &at,
                            if names_alone {
                                "expected a name or a one-key map {name: value}"
                            } else {
                                "expected a one-key map {name: value}"
                            },
                        ),
                    }
                }
            }
            Yaml::Mapping(m) if inline || names_alone => {
                // A plain map: accepted for publish/input-like blocks.
                for (k, value) in m {
                    let Some(name) = k.as_str() else {
                        self.problem(path, "names must be strings");
                        continue;
                    };
                    let value = self.template(&format!("{path}.{name}"), value);
                    out.push((name.to_owned(), Some(value)));
                }
            }
            Yaml::String(text) if inline => match parse_inline(text) {
                Ok(pairs) => {
                    for (name, value) in pairs {
                        self.check_expressions(&format!("{path}.{name}"), &value);
                        out.push((name, Some(value)));
                    }
                }
                Err(e) => self.problem(path, e),
            },
            Yaml::Null => {}
            _ => self.problem(path, "expected a list of {name: value} maps"),
        }
        out
    }

    fn name(&mut self, path: &str, name: &str) {
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            self.problem(
                path,
                format!("'{name}' is not a valid name (letters, digits and '_')"),
            );
        }
    }
}

/// `a=1 b="two words" c=<% ctx(x) %>` into pairs; each value is JSON when
/// it reads as JSON (a number, `true`, a list), else a string.
pub fn parse_inline(text: &str) -> Result<Vec<(String, Value)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    loop {
        skip(&mut i);
        if i >= chars.len() {
            return Ok(out);
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if name.is_empty() || chars.get(i) != Some(&'=') {
            return Err(format!(
                "expected name=value at '{}'",
                chars[start..].iter().collect::<String>()
            ));
        }
        i += 1;
        let value_start = i;
        let closing = |open: &str| -> Option<&'static str> {
            match open {
                "<%" => Some("%>"),
                "{{" => Some("}}"),
                _ => None,
            }
        };
        let rest: String = chars[i..].iter().collect();
        let value = if let Some(q) = chars.get(i).filter(|c| **c == '"' || **c == '\'') {
            let q = *q;
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated quote in the value of '{name}'")),
                    Some('\\') if chars.get(i + 1) == Some(&q) => {
                        s.push(q);
                        i += 2;
                    }
                    Some(c) if *c == q => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            Value::String(s)
        } else if let Some(close) = closing(rest.get(..2).unwrap_or("")) {
            // An expression, then anything up to the next space.
            let Some(end) = rest.find(close) else {
                return Err(format!("unterminated expression in the value of '{name}'"));
            };
            i += rest[..end + close.len()].chars().count();
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ',' {
                i += 1;
            }
            Value::String(chars[value_start..i].iter().collect())
        } else if matches!(chars.get(i), Some('[' | '{')) {
            let mut depth = 0;
            while let Some(c) = chars.get(i) {
                match c {
                    '[' | '{' => depth += 1,
                    ']' | '}' => depth -= 1,
                    _ => {}
                }
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            let raw: String = chars[value_start..i].iter().collect();
            serde_json::from_str(&raw).unwrap_or(Value::String(raw))
        } else {
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ',' {
                i += 1;
            }
            let raw: String = chars[value_start..i].iter().collect();
            serde_json::from_str(&raw).unwrap_or(Value::String(raw))
        };
        out.push((name, value));
    }
}

/// YAML to JSON, refusing what JSON cannot hold (non-string keys are made
/// strings, as Python's YAML loader would keep them).
fn yaml_to_json(v: &Yaml) -> Result<Value, String> {
    Ok(match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{f} is not a number JSON can hold"))?
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => {
            Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Null => "None".to_owned(),
                    _ => return Err("a map key must be a string".to_owned()),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => yaml_to_json(&t.value)?,
    })
}

fn keys_allowed(c: &mut Checker, path: &str, m: &serde_yaml::Mapping, allowed: &[&str]) {
    for k in m.keys() {
        match k.as_str() {
            Some(k) if allowed.contains(&k) => {}
            Some(k) => c.problem(
                path,
                format!("unknown key '{k}' (expected {})", allowed.join(", ")),
            ),
            None => c.problem(path, "keys must be strings"),
        }
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Workflow {
    /// Read and inspect a definition: every problem found, or the workflow.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let doc: Yaml = serde_yaml::from_str(text).map_err(|e| {
            Invalid(vec![Problem {
                path: String::new(),
                message: format!("invalid YAML: {e}"),
            }])
        })?;
        let mut c = Checker {
            problems: Vec::new(),
            reads: Vec::new(),
        };
        let workflow = Self::read(&mut c, &doc);
        // A variable no input, var, publish or output ever assigns (StackStorm's
        // `context` inspection): most often a misspelt name.
        let mut assigned: std::collections::BTreeSet<&str> =
            ["st2", "parent"].into_iter().collect();
        assigned.extend(workflow.input.iter().map(|(n, _)| n.as_str()));
        assigned.extend(workflow.vars.iter().map(|(n, _)| n.as_str()));
        // Each output item sees the ones before it.
        assigned.extend(workflow.output.iter().map(|(n, _)| n.as_str()));
        for task in workflow.tasks.values() {
            for t in &task.next {
                assigned.extend(t.publish.iter().map(|(n, _)| n.as_str()));
            }
        }
        let unassigned: Vec<Problem> = c
            .reads
            .iter()
            .filter(|(_, name)| !assigned.contains(name.as_str()))
            .map(|(path, name)| Problem {
                path: path.clone(),
                message: format!("variable '{name}' is referenced before assignment"),
            })
            .collect();
        c.problems.extend(unassigned);
        if c.problems.is_empty() {
            let mut workflow = workflow;
            workflow.graph = Graph::of(&workflow);
            Ok(workflow)
        } else {
            Err(Invalid(c.problems))
        }
    }

    fn read(c: &mut Checker, doc: &Yaml) -> Self {
        let mut wf = Workflow {
            description: None,
            input: Vec::new(),
            vars: Vec::new(),
            output: Vec::new(),
            tasks: BTreeMap::new(),
            graph: Graph::default(),
        };
        let Yaml::Mapping(top) = doc else {
            c.problem(
                "",
                "a workflow definition is a map (version, input, vars, tasks, output)",
            );
            return wf;
        };
        keys_allowed(
            c,
            "",
            top,
            &["version", "description", "input", "vars", "tasks", "output"],
        );
        match top.get("version") {
            Some(Yaml::Number(n)) if n.as_f64() == Some(1.0) => {}
            Some(Yaml::String(s)) if s == "1.0" => {}
            Some(other) => c.problem(
                "version",
                format!("unsupported version {} (expected 1.0)", yaml_text(other)),
            ),
            None => c.problem("version", "is required (version: 1.0)"),
        }
        wf.description = top
            .get("description")
            .and_then(Yaml::as_str)
            .map(str::to_owned);
        if let Some(v) = top.get("input") {
            wf.input = c.assignments("input", v, true, false);
        }
        if let Some(v) = top.get("vars") {
            wf.vars = c
                .assignments("vars", v, false, false)
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
                .collect();
        }
        if let Some(v) = top.get("output") {
            wf.output = c
                .assignments("output", v, false, false)
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
                .collect();
        }
        match top.get("tasks") {
            Some(Yaml::Mapping(tasks)) if !tasks.is_empty() => {
                for (name, task) in tasks {
                    let Some(name) = name.as_str() else {
                        c.problem("tasks", "task names must be strings");
                        continue;
                    };
                    let path = format!("tasks.{name}");
                    c.name(&path, name);
                    if COMMANDS.contains(&name) {
                        c.problem(
                            &path,
                            format!("'{name}' is an engine command, not a task name"),
                        );
                    }
                    wf.tasks.insert(name.to_owned(), Task::read(c, &path, task));
                }
            }
            Some(_) => c.problem("tasks", "expected a map of at least one task"),
            None => c.problem("tasks", "is required"),
        }
        // Every `do` names a task or an engine command.
        for (name, task) in &wf.tasks {
            for (i, t) in task.next.iter().enumerate() {
                for target in &t.targets {
                    if let Target::Task(next) = target
                        && !wf.tasks.contains_key(next)
                    {
                        c.problem(
                            &format!("tasks.{name}.next[{i}].do"),
                            format!("unknown task '{next}'"),
                        );
                    }
                }
            }
        }
        // A join needs inbound transitions to wait for.
        for (name, task) in &wf.tasks {
            if task.join.is_none() {
                continue;
            }
            let inbound = wf
                .tasks
                .values()
                .flat_map(|t| &t.next)
                .flat_map(|t| &t.targets)
                .filter(|t| matches!(t, Target::Task(n) if n == name))
                .count();
            if inbound == 0 {
                c.problem(
                    &format!("tasks.{name}.join"),
                    "the task has no inbound transition to join",
                );
            }
        }
        wf
    }

    /// Tasks no transition leads to: where the workflow starts.
    pub fn start_tasks(&self) -> Vec<&str> {
        self.tasks
            .keys()
            .filter(|name| !self.graph.inbound.contains_key(*name))
            .map(String::as_str)
            .collect()
    }
}

/// The variables `s` reads by name through `ctx`: `ctx(x)`, `ctx('x')`,
/// `ctx("x")`, `ctx().x` (not `ctx().keys()`, a method).
fn ctx_reads(s: &str) -> Vec<String> {
    static CTX: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"\bctx\(\s*(?:'([^']+)'|"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*))\s*\)|\bctx\(\s*\)\.([A-Za-z_][A-Za-z0-9_]*)(\s*\()?"#,
        )
        .expect("a valid pattern")
    });
    if !expr::has_expression(s) {
        return Vec::new();
    }
    CTX.captures_iter(s)
        .filter(|c| c.get(5).is_none())
        .filter_map(|c| (1..=4).find_map(|i| c.get(i)))
        .map(|m| m.as_str().to_owned())
        .collect()
}

fn yaml_text(v: &Yaml) -> String {
    serde_yaml::to_string(v).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
}

impl Task {
    fn read(c: &mut Checker, path: &str, v: &Yaml) -> Self {
        let mut task = Task {
            action: None,
            input: TaskInput::Map(Vec::new()),
            with: None,
            delay: None,
            retry: None,
            join: None,
            next: Vec::new(),
        };
        let m = match v {
            Yaml::Mapping(m) => m,
            Yaml::Null => return task,
            _ => {
                c.problem(path, "a task is a map (action, input, next, ...)");
                return task;
            }
        };
        keys_allowed(
            c,
            path,
            m,
            &["action", "input", "with", "delay", "retry", "join", "next"],
        );
        let mut inline = Vec::new();
        match m.get("action") {
            Some(Yaml::String(text)) => {
                let text = text.trim();
                let (action, params) = match text.split_once(char::is_whitespace) {
                    // `core.echo message=x`, unless the whole is one expression.
                    Some((a, rest)) if !a.starts_with("<%") && !a.starts_with("{{") => (a, rest),
                    _ => (text, ""),
                };
                let at = join_path(path, "action");
                task.action = Some(c.template(&at, &Yaml::String(action.to_owned())));
                match parse_inline(params) {
                    Ok(pairs) => {
                        for (name, value) in pairs {
                            c.check_expressions(&format!("{at}.{name}"), &value);
                            inline.push((name, value));
                        }
                    }
                    Err(e) => c.problem(&at, e),
                }
            }
            Some(Yaml::Null) | None => {}
            Some(_) => c.problem(
                &join_path(path, "action"),
                "expected an action ref (pack.name)",
            ),
        }
        task.input = match m.get("input") {
            None | Some(Yaml::Null) => TaskInput::Map(inline),
            Some(Yaml::Mapping(_)) => {
                let mut all = inline;
                for (k, v) in c.assignments(&join_path(path, "input"), &m["input"], false, true) {
                    all.retain(|(n, _)| *n != k);
                    all.push((k, v.unwrap_or(Value::Null)));
                }
                TaskInput::Map(all)
            }
            Some(Yaml::String(s)) if expr::is_single(s) => {
                if !inline.is_empty() {
                    c.problem(
                        &join_path(path, "input"),
                        "an input expression cannot be combined with inline parameters",
                    );
                }
                TaskInput::Expr(c.template(&join_path(path, "input"), &m["input"]))
            }
            Some(_) => {
                c.problem(
                    &join_path(path, "input"),
                    "expected a map of parameters, or one expression",
                );
                TaskInput::Map(inline)
            }
        };
        if let Some(w) = m.get("with") {
            let at = join_path(path, "with");
            if task.action.is_none() {
                c.problem(&at, "`with` needs an `action`");
            }
            let (items, concurrency) = match w {
                Yaml::Mapping(wm) => {
                    keys_allowed(c, &at, wm, &["items", "concurrency"]);
                    (wm.get("items"), wm.get("concurrency"))
                }
                other => (Some(other), None),
            };
            match items {
                Some(Yaml::String(text)) => {
                    let (names, source) = match text.split_once(" in ") {
                        Some((names, source)) if !names.contains("<%") && !names.contains("{{") => {
                            (
                                names.split(',').map(|n| n.trim().to_owned()).collect(),
                                source.trim(),
                            )
                        }
                        _ => (Vec::new(), text.as_str()),
                    };
                    for name in &names {
                        c.name(&format!("{at}.items"), name);
                    }
                    let items =
                        c.template(&format!("{at}.items"), &Yaml::String(source.to_owned()));
                    let concurrency =
                        concurrency.map(|v| c.template(&format!("{at}.concurrency"), v));
                    task.with = Some(WithItems {
                        names,
                        items,
                        concurrency,
                    });
                }
                Some(Yaml::Sequence(_)) => {
                    let items = c.template(&format!("{at}.items"), items.expect("matched"));
                    let concurrency =
                        concurrency.map(|v| c.template(&format!("{at}.concurrency"), v));
                    task.with = Some(WithItems {
                        names: Vec::new(),
                        items,
                        concurrency,
                    });
                }
                _ => c.problem(
                    &at,
                    "expected items: an expression, `x in <% ... %>`, or a list",
                ),
            }
        }
        if let Some(d) = m.get("delay") {
            task.delay = Some(c.template(&join_path(path, "delay"), d));
        }
        if let Some(r) = m.get("retry") {
            let at = join_path(path, "retry");
            match r {
                Yaml::Mapping(rm) => {
                    keys_allowed(c, &at, rm, &["when", "count", "delay"]);
                    match rm.get("count") {
                        Some(count) => {
                            task.retry = Some(Retry {
                                when: rm.get("when").map(|w| c.template(&format!("{at}.when"), w)),
                                count: c.template(&format!("{at}.count"), count),
                                delay: rm
                                    .get("delay")
                                    .map(|d| c.template(&format!("{at}.delay"), d)),
                            });
                        }
                        None => c.problem(&format!("{at}.count"), "is required"),
                    }
                }
                _ => c.problem(&at, "expected {count, when, delay}"),
            }
        }
        match m.get("join") {
            None => {}
            Some(Yaml::String(s)) if s == "all" => task.join = Some(Join::All),
            Some(Yaml::Number(n))
                if n.as_u64()
                    .is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX)) =>
            {
                task.join = Some(Join::Count(n.as_u64().expect("checked") as u32));
            }
            Some(other) => c.problem(
                &join_path(path, "join"),
                format!(
                    "expected `all` or a positive count, got {}",
                    yaml_text(other)
                ),
            ),
        }
        match m.get("next") {
            None | Some(Yaml::Null) => {}
            Some(Yaml::Sequence(items)) => {
                for (i, t) in items.iter().enumerate() {
                    let at = format!("{path}.next[{i}]");
                    task.next.push(Transition::read(c, &at, t));
                }
            }
            Some(_) => c.problem(
                &join_path(path, "next"),
                "expected a list of {when, publish, do}",
            ),
        }
        task
    }
}

impl Transition {
    fn read(c: &mut Checker, path: &str, v: &Yaml) -> Self {
        let mut t = Transition {
            when: None,
            publish: Vec::new(),
            targets: Vec::new(),
        };
        let Yaml::Mapping(m) = v else {
            c.problem(path, "expected {when, publish, do}");
            return t;
        };
        keys_allowed(c, path, m, &["when", "publish", "do"]);
        t.when = m
            .get("when")
            .map(|w| c.template(&format!("{path}.when"), w));
        if let Some(p) = m.get("publish") {
            t.publish = c
                .assignments(&format!("{path}.publish"), p, false, true)
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
                .collect();
        }
        let names: Vec<String> = match m.get("do") {
            None | Some(Yaml::Null) => Vec::new(),
            Some(Yaml::String(s)) => s
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            Some(Yaml::Sequence(items)) => items
                .iter()
                .filter_map(|i| match i.as_str() {
                    Some(s) => Some(s.trim().to_owned()),
                    None => {
                        c.problem(&format!("{path}.do"), "task names must be strings");
                        None
                    }
                })
                .collect(),
            Some(_) => {
                c.problem(
                    &format!("{path}.do"),
                    "expected a task name, a list, or `a, b`",
                );
                Vec::new()
            }
        };
        for name in names {
            if expr::has_expression(&name) {
                c.problem(
                    &format!("{path}.do"),
                    "`do` takes task names, not expressions",
                );
                continue;
            }
            t.targets.push(match name.as_str() {
                "continue" => Target::Continue,
                "noop" => Target::Noop,
                "fail" => Target::Fail,
                "retry" => Target::Retry,
                _ => Target::Task(name),
            });
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SEQUENTIAL: &str = r#"
version: 1.0
description: A basic sequential workflow.
input:
  - name
vars:
  - greeting: null
output:
  - greeting: <% ctx().greeting %>
tasks:
  task1:
    action: core.echo message=<% ctx().name %>
    next:
      - when: <% succeeded() %>
        publish: greeting=<% result().stdout %>
        do: task2
  task2:
    action: core.echo
    input:
      message: "All your base are belong to us!"
    next:
      - when: <% succeeded() %>
        publish:
          - greeting: <% ctx("greeting") %>, <% result().stdout %>
        do:
          - task3
  task3:
    action: core.echo message=<% ctx('greeting') %>
"#;

    #[test]
    fn reads_the_sequential_example() {
        let wf = Workflow::parse(SEQUENTIAL).expect("valid");
        assert_eq!(wf.input, vec![("name".to_owned(), None)]);
        assert_eq!(wf.vars, vec![("greeting".to_owned(), Value::Null)]);
        let t1 = &wf.tasks["task1"];
        assert_eq!(t1.action, Some(json!("core.echo")));
        assert_eq!(
            t1.input,
            TaskInput::Map(vec![("message".into(), json!("<% ctx().name %>"))])
        );
        assert_eq!(
            t1.next[0].publish,
            vec![("greeting".to_owned(), json!("<% result().stdout %>"))]
        );
        assert_eq!(t1.next[0].targets, vec![Target::Task("task2".into())]);
        assert_eq!(wf.start_tasks(), ["task1"]);
    }

    #[test]
    fn inline_parameters() {
        assert_eq!(
            parse_inline(r#"message="<% item() %>, resistance is futile!" n=3 on=true, list=[1, 2] x=<% ctx(a) %>"#)
                .expect("parses"),
            vec![
                ("message".to_owned(), json!("<% item() %>, resistance is futile!")),
                ("n".to_owned(), json!(3)),
                ("on".to_owned(), json!(true)),
                ("list".to_owned(), json!([1, 2])),
                ("x".to_owned(), json!("<% ctx(a) %>")),
            ]
        );
        assert!(parse_inline("novalue").is_err());
        assert!(parse_inline("a=\"open").is_err());
    }

    #[test]
    fn problems_carry_their_paths() {
        let text = r#"
version: 2.0
input:
  - 3
tasks:
  t1:
    action: core.noop
    nxt: []
    next:
      - when: <% succeeded( %>
        do: t9, fail
  noop:
    action: core.noop
  t3:
    join: sometimes
  t4:
    with: <% ctx(x) %>
    join: all
"#;
        let problems = Workflow::parse(text).expect_err("invalid").0;
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        for needle in [
            "version: unsupported version 2.0 (expected 1.0)",
            "input[0]: expected a name or a one-key map {name: value}",
            "tasks.t1: unknown key 'nxt'",
            "tasks.t1.next[0].when: ",
            "tasks.t1.next[0].do: unknown task 't9'",
            "tasks.noop: 'noop' is an engine command, not a task name",
            "tasks.t3.join: expected `all` or a positive count, got sometimes",
            "tasks.t4.with: `with` needs an `action`",
            "tasks.t4.join: the task has no inbound transition to join",
            "tasks.t4.with.items: variable 'x' is referenced before assignment",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(needle)),
                "no {needle:?} in {shown:#?}"
            );
        }
    }

    #[test]
    fn variables_no_input_var_or_publish_assigns_are_named() {
        let text = r#"
version: 1.0
input: [who]
vars:
  - greeting: hi
tasks:
  t1:
    action: core.echo
    input:
      message: <% ctx(greeting) %> <% ctx('who') %> <% ctx().later %>
      note: '{{ ctx("nobody") }}'
    next:
      - publish: later=1
        do: t2
  t2:
    action: core.echo
    input:
      message: <% ctx(typo) %> <% ctx(st2).api_url %>
"#;
        let problems = Workflow::parse(text).expect_err("invalid").0;
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "tasks.t1.input.note: variable 'nobody' is referenced before assignment",
                "tasks.t2.input.message: variable 'typo' is referenced before assignment",
            ]
        );
    }

    #[test]
    fn with_items_forms() {
        let wf = Workflow::parse(
            "version: 1.0\ninput: [a, b]\ntasks:\n  t:\n    action: core.echo\n    with:\n      items: x, y in <% zip(ctx(a), ctx(b)) %>\n      concurrency: 2\n",
        )
        .expect("valid");
        let with = wf.tasks["t"].with.as_ref().expect("with");
        assert_eq!(with.names, ["x", "y"]);
        assert_eq!(with.items, json!("<% zip(ctx(a), ctx(b)) %>"));
        assert_eq!(with.concurrency, Some(json!(2)));
    }
}
