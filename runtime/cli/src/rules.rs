//! `squall rule test`: StackStorm's st2-rule-tester, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;
use squall_core::PackRef;
use squall_core::rule::{Evaluation, Rule};
use squall_core::template::{RenderContext, Templates};

#[derive(Debug, Subcommand)]
pub(crate) enum RuleCommand {
    /// Check a rule against a trigger instance without a server: prints
    /// whether it matches, which criterion failed, and the rendered action
    /// parameters. Exit 0 on match, 1 on no match.
    Test(TestArgs),
    #[command(flatten)]
    Remote(crate::remote::RemoteRuleCommand),
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The rule, in StackStorm's YAML.
    #[arg(long)]
    rule: PathBuf,
    /// A trigger instance, YAML or JSON: `{trigger: <type ref>, payload: {...}}`.
    #[arg(long = "trigger-instance")]
    trigger_instance: PathBuf,
}

pub(crate) fn rule(remote: &crate::client::Remote, cmd: RuleCommand) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        RuleCommand::Test(args) => args,
        RuleCommand::Remote(cmd) => return crate::remote::remote_rule(remote, cmd),
    };
    let templates = Templates::new();
    let text = std::fs::read_to_string(&args.rule)
        .with_context(|| format!("failed to read '{}'", args.rule.display()))?;
    let rule = Rule::parse(
        &text,
        &args.rule,
        &PackRef::new("default").expect("valid ref"),
        &templates,
    )?;
    let ti_text = std::fs::read_to_string(&args.trigger_instance)
        .with_context(|| format!("failed to read '{}'", args.trigger_instance.display()))?;
    let ti: Value = serde_yaml::from_str(&ti_text)
        .with_context(|| format!("'{}' is not YAML or JSON", args.trigger_instance.display()))?;
    let trigger = ti
        .get("trigger")
        .and_then(Value::as_str)
        .unwrap_or(&rule.trigger_type)
        .to_owned();
    let payload = ti.get("payload").cloned().unwrap_or(Value::Null);
    if trigger != rule.trigger_type {
        println!(
            "no match: the rule listens to '{}', the instance is of '{trigger}'",
            rule.trigger_type
        );
        return Ok(ExitCode::FAILURE);
    }
    let ctx = RenderContext {
        trigger: &payload,
        rule: rule.template_view(),
        kv: None,
    };
    match rule.evaluate(&payload, &templates, &ctx)? {
        Evaluation::NotMatched { key } => {
            println!("no match: criterion '{key}' does not hold");
            Ok(ExitCode::FAILURE)
        }
        Evaluation::Matched => {
            let params = rule.render_parameters(&templates, &ctx)?;
            println!(
                "match: rule '{}' would run '{}' with:",
                rule.rule_ref(),
                rule.action
            );
            println!("{}", serde_json::to_string_pretty(&Value::Object(params))?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
