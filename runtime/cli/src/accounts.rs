//! `squall tenant`, `squall apikey`, `squall user`: accounts, in the local
//! data directory (how the first admin is made on a fresh server) or, with
//! --url, through a running server's API.

use std::io::BufRead as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use squall_core::TenantId;
use squall_core::auth::{Role, check_user_name};

use crate::client::{Remote, print_rows};
use crate::commands::{open_store, runtime};

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant. Without --url, in the local data directory.
    Create {
        /// Lowercase letters, digits and '_'.
        name: String,
    },
    /// List tenants.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApikeyCommand {
    /// Create an API key and print it: it is shown this once, only its hash
    /// is stored. Without --url, in the local data directory (how the first
    /// admin key is made: `squall apikey create --role admin`).
    Create {
        /// The tenant the key acts in.
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
        /// The user the key speaks for (shown in audit records).
        #[arg(long, default_value = "admin")]
        user: String,
        /// viewer (reads), operator (changes its tenant) or admin (also
        /// manages tenants).
        #[arg(long, default_value = "operator")]
        role: Role,
        /// Print JSON instead of the bare key.
        #[arg(long)]
        json: bool,
    },
    /// List API keys (never the keys themselves).
    List {
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete an API key by id.
    Delete {
        id: String,
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user, or change an existing user's role and password, in the
    /// local data directory. The password (for `POST /auth/v1/tokens`) is
    /// read from the first line of standard input with --password-stdin.
    Set {
        name: String,
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
        #[arg(long)]
        password_stdin: bool,
    },
}

fn tenant_of(raw: &str) -> anyhow::Result<TenantId> {
    Ok(TenantId::new(raw)?)
}

pub(crate) fn tenant(
    data_dir: &Path,
    remote: &Remote,
    cmd: TenantCommand,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        TenantCommand::Create { name } => {
            let tenant = tenant_of(&name)?;
            match remote.client()? {
                Some(c) => {
                    rt.block_on(c.post_path("/api/v1/tenants", &json!({"name": tenant})))?;
                }
                None => rt.block_on(open_store(data_dir)?.create_tenant(&tenant))?,
            }
            println!("created tenant {tenant}");
        }
        TenantCommand::List { json } => {
            let rows: Vec<Value> = match remote.client()? {
                Some(c) => rt
                    .block_on(c.get_json("/api/v1/tenants?limit=1000"))?
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                None => open_store(data_dir)?
                    .tenants()?
                    .into_iter()
                    .map(|t| json!({"name": t.id, "created_at": t.created_at}))
                    .collect(),
            };
            print_rows(&rows, &["name", "created_at"], json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn apikey(
    data_dir: &Path,
    remote: &Remote,
    cmd: ApikeyCommand,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        ApikeyCommand::Create {
            tenant,
            user,
            role,
            json,
        } => {
            let tenant = tenant_of(&tenant)?;
            check_user_name(&user).map_err(anyhow::Error::msg)?;
            let created = match remote.client()? {
                Some(c) => rt.block_on(c.post_path(
                    "/api/v1/apikeys",
                    &json!({"tenant": tenant, "user": user, "role": role}),
                ))?,
                None => {
                    let (id, key) =
                        rt.block_on(open_store(data_dir)?.create_api_key(&tenant, &user, role))?;
                    json!({"id": id, "key": key, "user": user,
                           "metadata": {"tenant": tenant, "role": role}})
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created["key"].as_str().unwrap_or_default());
            }
        }
        ApikeyCommand::List { tenant, json } => {
            let tenant = tenant_of(&tenant)?;
            let rows: Vec<Value> = match remote.client()? {
                Some(c) => rt
                    .block_on(c.get_json(&format!("/api/v1/apikeys?tenant={tenant}&limit=1000")))?
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                None => open_store(data_dir)?
                    .api_keys(&tenant)?
                    .into_iter()
                    .map(|k| {
                        json!({"id": k.id, "user": k.user, "enabled": k.enabled,
                               "created_at": k.created_at,
                               "metadata": {"tenant": k.tenant, "role": k.role}})
                    })
                    .collect(),
            };
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|mut r| {
                    r["role"] = r["metadata"]["role"].clone();
                    r
                })
                .collect();
            print_rows(
                &rows,
                &["id", "user", "role", "enabled", "created_at"],
                json,
            )?;
        }
        ApikeyCommand::Delete { id, tenant } => {
            let tenant = tenant_of(&tenant)?;
            let deleted = match remote.client()? {
                Some(c) => {
                    rt.block_on(c.delete_path(&format!("/api/v1/apikeys/{id}?tenant={tenant}")))?;
                    true
                }
                None => rt.block_on(open_store(data_dir)?.delete_api_key(&tenant, &id))?,
            };
            if !deleted {
                bail!("API key '{id}' not found in tenant '{tenant}'");
            }
            println!("deleted API key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn user(data_dir: &Path, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let UserCommand::Set {
        name,
        tenant,
        role,
        password_stdin,
    } = cmd;
    let tenant = tenant_of(&tenant)?;
    check_user_name(&name).map_err(anyhow::Error::msg)?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            bail!("--password-stdin read an empty password");
        }
        Some(line)
    } else {
        None
    };
    runtime()?.block_on(open_store(data_dir)?.put_user(
        &tenant,
        &name,
        role,
        password.as_deref(),
    ))?;
    println!("user {name} ({role}) in tenant {tenant}");
    Ok(ExitCode::SUCCESS)
}
