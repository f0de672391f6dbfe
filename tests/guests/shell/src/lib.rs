//! A test stand-in for StackStorm's `core.local` until Squall has host
//! runners: a tiny shell (`echo`, `printf`, `sleep`, `touch`, `rm`, `exit`,
//! `true`, `false`, `[ -e f ]`, `if ...; then ...; fi`, `$((a % b))`)
//! whose files live in the datastore, so tasks of one workflow share them.
//! Its result is the shell runner's: `{stdout, stderr, return_code,
//! succeeded, failed}`, stdout JSON-parsed when it parses; a command that
//! exits non-zero fails the action with that result.

use std::time::Duration;

use serde_json::{Value, json};
use squall_sdk::{Context, Error, Result, kv};

#[derive(serde::Deserialize)]
struct Params {
    cmd: String,
}

#[squall_sdk::action]
fn run(_: &Context, p: Params) -> Result<Value> {
    let mut shell = Shell::default();
    let code = shell.script(&p.cmd)?;
    let stdout = shell.stdout.trim_end_matches('\n').to_owned();
    let stdout = serde_json::from_str::<Value>(&stdout).unwrap_or(Value::String(stdout));
    let result = json!({
        "stdout": stdout,
        "stderr": "",
        "return_code": code,
        "succeeded": code == 0,
        "failed": code != 0,
    });
    if code == 0 {
        Ok(result)
    } else {
        Err(Error::failed_with(result))
    }
}

#[derive(Default)]
struct Shell {
    stdout: String,
}

fn file_key(path: &str) -> String {
    format!("shell.file:{path}")
}

/// Split a script into statements at `;` and newlines outside quotes.
fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in script.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                current.push(c);
            }
            (None, ';' | '\n') => out.push(std::mem::take(&mut current)),
            (None, c) => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Words of a statement, quotes removed, `$((...))` evaluated.
fn words(statement: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    let chars: Vec<char> = statement.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (_, '$') if chars[i..].starts_with(&['$', '(', '(']) => {
                let rest: String = chars[i + 3..].iter().collect();
                let end = rest
                    .find("))")
                    .ok_or_else(|| Error::invalid_input("unterminated $(("))?;
                current.push_str(&arithmetic(&rest[..end])?.to_string());
                i += 3 + end + 2;
                started = true;
                continue;
            }
            (_, c) => {
                current.push(c);
                started = true;
            }
        }
        i += 1;
    }
    if started {
        out.push(current);
    }
    Ok(out)
}

/// `a`, or `a OP b` with OP one of `+ - * / %`, on integers.
fn arithmetic(expr: &str) -> Result<i64> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| Error::invalid_input(format!("not a number in $((...)): {s}")))
    };
    match parts.as_slice() {
        [a] => num(a),
        [a, op, b] => {
            let (a, b) = (num(a)?, num(b)?);
            match *op {
                "+" => Ok(a + b),
                "-" => Ok(a - b),
                "*" => Ok(a * b),
                "/" | "%" if b == 0 => Err(Error::invalid_input("division by zero")),
                "/" => Ok(a / b),
                "%" => Ok(a % b),
                other => Err(Error::invalid_input(format!("unknown operator {other}"))),
            }
        }
        _ => Err(Error::invalid_input(format!("cannot evaluate $(({expr}))"))),
    }
}

enum Flow {
    Next(i64),
    Exit(i64),
}

impl Shell {
    fn script(&mut self, script: &str) -> Result<i64> {
        let statements = statements(script);
        let mut last = 0;
        let mut i = 0;
        while i < statements.len() {
            let s = &statements[i];
            if let Some(cond) = s.strip_prefix("if ") {
                let holds = self.statement(cond)? == Flow::Next(0);
                // `then X; Y; fi`
                i += 1;
                let mut body = Vec::new();
                while i < statements.len() && statements[i] != "fi" {
                    let st = statements[i].strip_prefix("then").unwrap_or(&statements[i]);
                    if !st.trim().is_empty() {
                        body.push(st.trim().to_owned());
                    }
                    i += 1;
                }
                if holds {
                    for st in &body {
                        match self.statement(st)? {
                            Flow::Exit(code) => return Ok(code),
                            Flow::Next(code) => last = code,
                        }
                    }
                }
                i += 1;
                continue;
            }
            match self.statement(s)? {
                Flow::Exit(code) => return Ok(code),
                Flow::Next(code) => last = code,
            }
            i += 1;
        }
        Ok(last)
    }

    fn statement(&mut self, s: &str) -> Result<Flow> {
        let w = words(s)?;
        let args: Vec<&str> = w.iter().map(String::as_str).collect();
        Ok(match args.as_slice() {
            [] => Flow::Next(0),
            ["echo", rest @ ..] => {
                self.stdout.push_str(&rest.join(" "));
                self.stdout.push('\n');
                Flow::Next(0)
            }
            ["printf", text, ..] => {
                self.stdout.push_str(text);
                Flow::Next(0)
            }
            ["sleep", n] => {
                let secs: f64 = n
                    .parse()
                    .map_err(|_| Error::invalid_input(format!("sleep: not a number: {n}")))?;
                std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
                Flow::Next(0)
            }
            ["touch", paths @ ..] => {
                for p in paths {
                    kv::set(&file_key(p), "")?;
                }
                Flow::Next(0)
            }
            ["rm", rest @ ..] => {
                for p in rest.iter().filter(|a| !a.starts_with('-')) {
                    kv::delete(&file_key(p))?;
                }
                Flow::Next(0)
            }
            ["exit"] => Flow::Exit(0),
            ["exit", code] => Flow::Exit(code.parse().unwrap_or(2)),
            ["true"] => Flow::Next(0),
            ["false"] => Flow::Next(1),
            ["[", "-e", path, "]"] => Flow::Next(i64::from(kv::get(&file_key(path))?.is_none())),
            ["[", "!", "-e", path, "]"] => {
                Flow::Next(i64::from(kv::get(&file_key(path))?.is_some()))
            }
            [other, ..] => {
                return Err(Error::invalid_input(format!(
                    "this test shell does not know '{other}'"
                )));
            }
        })
    }
}

impl PartialEq for Flow {
    fn eq(&self, other: &Self) -> bool {
        matches!((self, other), (Flow::Next(a), Flow::Next(b)) if a == b)
            || matches!((self, other), (Flow::Exit(a), Flow::Exit(b)) if a == b)
    }
}
