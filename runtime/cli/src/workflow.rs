//! `squall workflow`: Orquesta workflow definitions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Check definitions without running them, as StackStorm's
    /// `POST /api/v1/workflows/inspect` does: structure, task references
    /// and expression syntax. Prints every problem with its path in the
    /// definition; exits 1 when there is one.
    ///
    /// Example: squall workflow inspect packs/mypack/actions/workflows/deploy.yaml
    Inspect {
        /// Workflow definitions (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub(crate) fn workflow(cmd: WorkflowCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkflowCommand::Inspect { files } => {
            let mut clean = true;
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("failed to read '{}'", file.display()))?;
                match squall_workflow::spec::Workflow::parse(&text) {
                    Ok(wf) => println!("{}: ok ({} tasks)", file.display(), wf.tasks.len()),
                    Err(invalid) => {
                        clean = false;
                        for problem in &invalid.0 {
                            println!("{}: {problem}", file.display());
                        }
                    }
                }
            }
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
