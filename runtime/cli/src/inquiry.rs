//! `squall inquiry`: list, show and answer the questions executions wait
//! on (`core.ask`), through a server, as `st2 inquiry` does.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::client::{Remote, print_rows};
use crate::commands::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum InquiryCommand {
    /// List the inquiries waiting for a response, newest first.
    List {
        /// How many to show (st2's -n).
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one inquiry: its schema, who may answer, its ttl and route.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Answer an inquiry. Without -r, asks for each property of its schema
    /// in turn, showing the property's description.
    ///
    /// Example: squall inquiry respond 01J... -r '{"approved": true}'
    Respond {
        id: String,
        /// The response as a JSON object.
        #[arg(short = 'r', long)]
        response: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// An inquiry id as one path segment.
fn id_segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("invalid inquiry id '{id}'");
    }
    Ok(id)
}

pub(crate) fn inquiry(remote: &Remote, cmd: InquiryCommand) -> anyhow::Result<ExitCode> {
    let client = remote.require("squall inquiry")?;
    let rt = runtime()?;
    match cmd {
        InquiryCommand::List { limit, json } => {
            let list = rt.block_on(client.get_json(&format!("/api/v1/inquiries?limit={limit}")))?;
            let rows: Vec<Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    json!({
                        "id": i["id"],
                        "route": i["route"],
                        "ttl": i["ttl"],
                        "users": join(&i["users"]),
                        "roles": join(&i["roles"]),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_rows(&rows, &["id", "route", "ttl", "users", "roles"], false)?;
            }
        }
        InquiryCommand::Get { id, json } => {
            let i =
                rt.block_on(client.get_json(&format!("/api/v1/inquiries/{}", id_segment(&id)?)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!("id      {}", i["id"].as_str().unwrap_or_default());
                println!("route   {}", i["route"].as_str().unwrap_or_default());
                println!("ttl     {} minutes", i["ttl"]);
                println!("users   {}", join(&i["users"]));
                println!("roles   {}", join(&i["roles"]));
                println!("schema  {}", serde_json::to_string_pretty(&i["schema"])?);
            }
        }
        InquiryCommand::Respond { id, response, json } => {
            let path = format!("/api/v1/inquiries/{}", id_segment(&id)?);
            let response: Value = match response {
                Some(text) => serde_json::from_str(&text)
                    .with_context(|| format!("-r is not JSON: {text}"))?,
                None => {
                    let inquiry = rt.block_on(client.get_json(&path))?;
                    let stdin = std::io::stdin();
                    let mut input = stdin.lock();
                    let mut out = std::io::stderr();
                    prompt_for(&inquiry["schema"], &mut input, &mut out)?
                }
            };
            if !response.is_object() {
                bail!("the response must be a JSON object, got {response}");
            }
            let reply =
                rt.block_on(client.put_path(&path, &json!({"id": id, "response": response})))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                println!("Response accepted for inquiry {id}.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn join(list: &Value) -> String {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Ask for each property of `schema` on `out`, reading answers from
/// `input`, and build the response. A property's `description` is its
/// question; an empty answer leaves an optional property out; an answer
/// that does not fit the property's type is asked again.
pub(crate) fn prompt_for(
    schema: &Value,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<Value> {
    let draft4 = squall_core::inquiry::draft4(schema);
    let required: Vec<&str> = draft4["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut response = Map::new();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        bail!("the inquiry's schema has no properties to ask for: answer it with -r '<json>'");
    };
    for (name, property) in properties {
        let kind = property
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string");
        let question = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or(name);
        let needed = required.contains(&name.as_str());
        loop {
            write!(
                out,
                "{question} ({name}: {kind}{}): ",
                if needed { ", required" } else { "" }
            )?;
            out.flush()?;
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                bail!("no answer for '{name}' (input ended)");
            }
            let text = line.trim();
            if text.is_empty() {
                if needed {
                    writeln!(out, "  '{name}' is required")?;
                    continue;
                }
                break;
            }
            match typed(kind, text) {
                Ok(value) => {
                    response.insert(name.clone(), value);
                    break;
                }
                Err(why) => writeln!(out, "  {why}")?,
            }
        }
    }
    Ok(Value::Object(response))
}

/// `text` as a value of JSON Schema type `kind`.
fn typed(kind: &str, text: &str) -> Result<Value, String> {
    match kind {
        "boolean" => match text.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "1" => Ok(json!(true)),
            "n" | "no" | "false" | "0" => Ok(json!(false)),
            _ => Err(format!("'{text}' is not yes or no")),
        },
        "integer" => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("'{text}' is not an integer")),
        "number" => text
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .map(|v| match v.as_f64() {
                // 7, not 7.0, for a whole number.
                Some(n) if n.fract() == 0.0 && n.abs() < 1e15 => json!(n as i64),
                _ => v,
            })
            .ok_or_else(|| format!("'{text}' is not a number")),
        "array" | "object" => serde_json::from_str::<Value>(text)
            .ok()
            .filter(|v| (kind == "array") == v.is_array() && (kind == "object") == v.is_object())
            .ok_or_else(|| format!("'{text}' is not a JSON {kind}")),
        _ => Ok(json!(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_ask_each_property_and_type_the_answers() {
        let schema = json!({
            "type": "object",
            "properties": {
                "approved": {"type": "boolean", "description": "Continue?", "required": true},
                "department_id": {"type": "number", "description": "Your department ID:", "required": true},
                "extra_output": {"type": "string", "description": "Your message:"},
                "tags": {"type": "array"},
            },
        });
        // A wrong answer is asked again; an empty optional one is left out.
        let mut input = std::io::Cursor::new("maybe\nyes\n\n7\n\n[\"a\"]\n");
        let mut out = Vec::new();
        let response = prompt_for(&schema, &mut input, &mut out).expect("answers");
        assert_eq!(
            response,
            json!({"approved": true, "department_id": 7, "tags": ["a"]})
        );
        let shown = String::from_utf8(out).expect("utf-8");
        assert!(
            shown.contains("Continue? (approved: boolean, required): "),
            "{shown}"
        );
        assert!(shown.contains("'maybe' is not yes or no"), "{shown}");
        assert!(shown.contains("'department_id' is required"), "{shown}");
        assert!(
            shown.contains("Your message: (extra_output: string): "),
            "{shown}"
        );
    }

    #[test]
    fn prompts_stop_when_input_ends() {
        let schema = json!({"properties": {"approved": {"type": "boolean", "required": true}}});
        let err = prompt_for(&schema, &mut std::io::Cursor::new(""), &mut Vec::new())
            .expect_err("no input");
        assert!(err.to_string().contains("approved"), "{err}");
    }
}
