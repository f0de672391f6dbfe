//! `squall rule test`: StackStorm's st2-rule-tester, offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;
use squall_core::PackRef;

use crate::pack_test::{Verdict, check_rule};

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
    /// Packs to check the rule's action against, as the server will: the
    /// action must exist and the rendered parameters must pass its schema
    /// (exit 1 when they do not). The rule's pack is the pack directory it
    /// is in, when that is one of these.
    #[arg(long = "packs", value_name = "DIR")]
    packs: Vec<PathBuf>,
}

pub(crate) fn rule(remote: &crate::client::Remote, cmd: RuleCommand) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        RuleCommand::Test(args) => args,
        RuleCommand::Remote(cmd) => return crate::remote::remote_rule(remote, cmd),
    };
    let packs = if args.packs.is_empty() {
        None
    } else {
        Some(squall_reactor::PackSet::load(&args.packs)?)
    };
    // The rule's pack: the pack of `packs` whose rules/ holds it, else
    // `default`.
    let rule_dir = std::fs::canonicalize(&args.rule)
        .ok()
        .and_then(|f| f.parent().and_then(Path::parent).map(Path::to_path_buf));
    let pack = packs
        .as_ref()
        .and_then(|set| {
            set.packs()
                .find(|p| std::fs::canonicalize(&p.dir).ok().as_deref() == rule_dir.as_deref())
        })
        .map_or_else(
            || PackRef::new("default").expect("valid ref"),
            |p| p.manifest.pack_ref.clone(),
        );
    let ti_text = std::fs::read_to_string(&args.trigger_instance)
        .with_context(|| format!("failed to read '{}'", args.trigger_instance.display()))?;
    let ti: Value = serde_yaml::from_str(&ti_text)
        .with_context(|| format!("'{}' is not YAML or JSON", args.trigger_instance.display()))?;
    let trigger = ti.get("trigger").and_then(Value::as_str).map(str::to_owned);
    let payload = ti.get("payload").cloned().unwrap_or(Value::Null);
    match check_rule(&args.rule, &pack, packs.as_ref(), trigger, &payload)? {
        Verdict::NoMatch(why) => {
            println!("no match: {why}");
            Ok(ExitCode::FAILURE)
        }
        Verdict::Matched {
            rule,
            action,
            parameters,
        } => {
            println!("match: rule '{rule}' would run '{action}' with:");
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(parameters))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Invalid {
            rule,
            action,
            parameters,
            problem,
        } => {
            println!("match, but the server would refuse it: {problem}");
            println!(
                "rule '{rule}' would run '{action}' with:\n{}",
                serde_json::to_string_pretty(&Value::Object(parameters))?
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
