//! Tenants, users, API keys and tokens.
//!
//! API keys and tokens are random strings shown once; only their SHA-256
//! is stored (they carry 256 bits of entropy, so a fast hash is enough).
//! Passwords are hashed with Argon2id.

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use squall_core::TenantId;
use squall_core::auth::{Principal, Role};
use squall_core::time::{now_rfc3339, unix_now};
use squall_core::trigger::new_id;

use crate::{Error, Result, SqliteStore};

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("tenant '{0}' not found")]
    UnknownTenant(TenantId),
    #[error("{kind} '{name}' already exists")]
    Exists { kind: &'static str, name: String },
    #[error("user '{user}' belongs to tenant '{tenant}'")]
    OtherTenant { user: String, tenant: TenantId },
    #[error(transparent)]
    Store(#[from] Error),
}

/// An API key as listed: never the key itself.
#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant: TenantId,
    pub user: String,
    pub role: Role,
    pub created_at: String,
    pub enabled: bool,
}

/// A tenant as listed.
#[derive(Debug, Clone)]
pub struct TenantInfo {
    pub id: TenantId,
    pub created_at: String,
}

/// A user as listed (never its password hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserInfo {
    pub name: String,
    pub role: String,
    /// Whether it can sign in with a password.
    pub has_password: bool,
    pub created_at: String,
}

/// A fresh secret: `prefix` then 32 random bytes, URL-safe.
pub(crate) fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verified against when the user has no password, so every check costs
/// the same.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Argon2::default()
        .hash_password(b"no such user", &SaltString::generate(&mut OsRng))
        .expect("hashing a constant does not fail")
        .to_string()
});

/// An Argon2id hash of `password`, salted.
pub(crate) fn hash_password(password: &str) -> Result<String> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map_err(|e| Error::Corrupt(format!("hashing a password: {e}")))?
        .to_string())
}

/// The principal of `found` (a user's tenant, role, password hash and
/// name) if `password` is theirs. Slow on purpose, and as slow for a name
/// that does not exist or has no password.
pub(crate) fn verified(
    found: Option<(TenantId, Role, Option<String>, String)>,
    password: &str,
) -> Result<Option<Principal>> {
    let Some((tenant, role, Some(hash), user)) = found else {
        // The same work as for a real user: the answer's timing does not
        // tell which names exist.
        let _ = Argon2::default().verify_password(
            password.as_bytes(),
            &PasswordHash::new(&DUMMY_HASH).expect("the dummy hash parses"),
        );
        return Ok(None);
    };
    let parsed = PasswordHash::new(&hash)
        .map_err(|e| Error::Corrupt(format!("password hash of '{user}': {e}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        .then_some(Principal { tenant, user, role }))
}

fn now() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

fn role_of(raw: String) -> rusqlite::Result<Role> {
    raw.parse().map_err(|e: squall_core::auth::UnknownRole| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn tenant_of(raw: String) -> rusqlite::Result<TenantId> {
    TenantId::new(raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn tenant_exists(txn: &rusqlite::Connection, tenant: &TenantId) -> Result<bool> {
    Ok(txn
        .prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")?
        .exists([tenant.as_str()])?)
}

impl SqliteStore {
    /// Create a tenant; refused if it exists.
    pub async fn create_tenant(&self, tenant: &TenantId) -> Result<(), AccountError> {
        let tenant = tenant.clone();
        self.write(move |txn| {
            if tenant_exists(txn, &tenant)? {
                return Ok(Err(AccountError::Exists {
                    kind: "tenant",
                    name: tenant.to_string(),
                }));
            }
            txn.execute(
                "INSERT INTO tenants (id, created_at) VALUES (?1, ?2)",
                params![tenant.as_str(), now_rfc3339()],
            )?;
            Ok(Ok(()))
        })
        .await?
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> Result<Vec<TenantInfo>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id, created_at FROM tenants ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok(TenantInfo {
                    id: tenant_of(r.get(0)?)?,
                    created_at: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The users of `tenant`, by name.
    pub fn users(&self, tenant: &TenantId) -> Result<Vec<UserInfo>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT name, role, password_hash IS NOT NULL, created_at FROM users
                 WHERE tenant_id = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map([tenant.as_str()], |r| {
                Ok(UserInfo {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    has_password: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Create `user` in `tenant` with `role`, or change the role and
    /// password of an existing user of the same tenant (its tokens are
    /// revoked).
    pub async fn put_user(
        &self,
        tenant: &TenantId,
        user: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<(), AccountError> {
        let hash = password.map(hash_password).transpose()?;
        let (tenant, user) = (tenant.clone(), user.to_owned());
        self.write(move |txn| {
            if !tenant_exists(txn, &tenant)? {
                return Ok(Err(AccountError::UnknownTenant(tenant.clone())));
            }
            let owner: Option<String> = txn
                .query_row(
                    "SELECT tenant_id FROM users WHERE name = ?1",
                    [&user],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(owner) = owner.filter(|o| o != tenant.as_str()) {
                return Ok(Err(AccountError::OtherTenant {
                    user: user.clone(),
                    tenant: tenant_of(owner)?,
                }));
            }
            txn.execute(
                "INSERT INTO users (name, tenant_id, role, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role,
                     password_hash = coalesce(excluded.password_hash, users.password_hash)",
                params![user, tenant.as_str(), role.as_str(), hash, now_rfc3339()],
            )?;
            // Tokens carry the role they were made with: a changed user
            // logs in again.
            txn.execute(
                "DELETE FROM tokens WHERE tenant_id = ?1 AND user = ?2",
                params![tenant.as_str(), user],
            )?;
            Ok(Ok(()))
        })
        .await?
    }

    /// The user `name` if `password` is theirs. Blocking (Argon2 is slow on
    /// purpose): call it from a blocking context.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<Principal>> {
        let name = name.to_owned();
        let row = self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT tenant_id, role, password_hash FROM users WHERE name = ?1",
                    [&name],
                    |r| {
                        Ok((
                            tenant_of(r.get(0)?)?,
                            role_of(r.get(1)?)?,
                            r.get::<_, Option<String>>(2)?,
                            name.clone(),
                        ))
                    },
                )
                .optional()?)
        })?;
        verified(row, password)
    }

    /// A new API key for `user` of `tenant`: its id and the key, which is
    /// shown this once and stored only as a hash.
    pub async fn create_api_key(
        &self,
        tenant: &TenantId,
        user: &str,
        role: Role,
    ) -> Result<(String, String), AccountError> {
        let key = random_secret("sq_");
        let hash = digest(&key);
        let id = new_id();
        let (tenant, user, out_id) = (tenant.clone(), user.to_owned(), id.clone());
        self.write(move |txn| {
            if !tenant_exists(txn, &tenant)? {
                return Ok(Err(AccountError::UnknownTenant(tenant.clone())));
            }
            txn.execute(
                "INSERT INTO api_keys (id, tenant_id, user, role, key_hash, created_at, enabled)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
                params![
                    id,
                    tenant.as_str(),
                    user,
                    role.as_str(),
                    hash,
                    now_rfc3339()
                ],
            )?;
            Ok(Ok(()))
        })
        .await??;
        Ok((out_id, key))
    }

    /// Who an API key speaks for, if it is known and enabled.
    pub fn api_key_principal(&self, key: &str) -> Result<Option<Principal>> {
        let hash = digest(key);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT tenant_id, user, role FROM api_keys WHERE key_hash = ?1 AND enabled = 1",
                )?
                .query_row([hash], |r| {
                    Ok(Principal {
                        tenant: tenant_of(r.get(0)?)?,
                        user: r.get(1)?,
                        role: role_of(r.get(2)?)?,
                    })
                })
                .optional()?)
        })
    }

    /// Whether any API key exists (a fresh server has none).
    pub fn any_api_key(&self) -> Result<bool> {
        self.read(|conn| Ok(conn.prepare("SELECT 1 FROM api_keys LIMIT 1")?.exists([])?))
    }

    /// The API keys of `tenant`, oldest first.
    pub fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, tenant_id, user, role, created_at, enabled FROM api_keys
                 WHERE tenant_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([tenant.as_str()], |r| {
                Ok(ApiKeyInfo {
                    id: r.get(0)?,
                    tenant: tenant_of(r.get(1)?)?,
                    user: r.get(2)?,
                    role: role_of(r.get(3)?)?,
                    created_at: r.get(4)?,
                    enabled: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Enable or disable an API key of `tenant`; false if there is none.
    pub async fn set_api_key_enabled(
        &self,
        tenant: &TenantId,
        id: &str,
        enabled: bool,
    ) -> Result<bool> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.write(move |txn| {
            Ok(txn.execute(
                "UPDATE api_keys SET enabled = ?3 WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), id, enabled],
            )? > 0)
        })
        .await
    }

    /// Delete an API key of `tenant`; false if there is none.
    pub async fn delete_api_key(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.write(move |txn| {
            Ok(txn.execute(
                "DELETE FROM api_keys WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), id],
            )? > 0)
        })
        .await
    }

    /// A token for `principal` valid for `ttl_secs`; expired tokens are
    /// swept on the way. Returns the token and its expiry (unix seconds).
    pub async fn create_token(
        &self,
        principal: &Principal,
        ttl_secs: u64,
    ) -> Result<(String, u64)> {
        let token = random_secret("sqt_");
        let hash = digest(&token);
        let expires = unix_now().saturating_add(ttl_secs);
        let p = principal.clone();
        self.write(move |txn| {
            txn.execute("DELETE FROM tokens WHERE expires_at <= ?1", [now()])?;
            txn.execute(
                "INSERT INTO tokens (token_hash, tenant_id, user, role, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    hash,
                    p.tenant.as_str(),
                    p.user,
                    p.role.as_str(),
                    i64::try_from(expires).unwrap_or(i64::MAX)
                ],
            )?;
            Ok(())
        })
        .await?;
        Ok((token, expires))
    }

    /// Revoke a token (signing out); whether it was known.
    pub async fn revoke_token(&self, token: &str) -> Result<bool> {
        let hash = digest(token);
        self.write(move |txn| {
            Ok(txn.execute("DELETE FROM tokens WHERE token_hash = ?1", params![hash])? > 0)
        })
        .await
    }

    /// Who a token speaks for, if it is known and not expired.
    pub fn token_principal(&self, token: &str) -> Result<Option<Principal>> {
        let hash = digest(token);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT tenant_id, user, role FROM tokens WHERE token_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![hash, now()], |r| {
                    Ok(Principal {
                        tenant: tenant_of(r.get(0)?)?,
                        user: r.get(1)?,
                        role: role_of(r.get(2)?)?,
                    })
                })
                .optional()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{SqliteStore, StoreConfig};

    #[tokio::test]
    async fn accounts_keep_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            SqliteStore::open(&dir.path().join("db"), &StoreConfig::default()).expect("open");
        crate::contract::accounts(&crate::Store::from(store.clone())).await;
    }
}
