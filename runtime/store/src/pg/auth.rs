//! Tenants, users, API keys and tokens on PostgreSQL, as the SQLite store
//! keeps them (`crate::auth`, whose hashing both share): keys and tokens
//! stored as SHA-256, passwords as Argon2id, one user name server-wide.

use squall_core::TenantId;
use squall_core::auth::{Principal, Role};
use squall_core::time::{now_rfc3339, unix_now};
use squall_core::trigger::new_id;

use super::PgStore;
use crate::auth::{
    AccountError, ApiKeyInfo, TenantInfo, UserInfo, digest, random_secret, verified,
};
use crate::{Error, Result};

fn now() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

fn tenant_of(raw: String) -> Result<TenantId> {
    TenantId::new(raw).map_err(|e| Error::Corrupt(format!("tenant id: {e}")))
}

fn role_of(raw: &str) -> Result<Role> {
    raw.parse()
        .map_err(|e: squall_core::auth::UnknownRole| Error::Corrupt(e.to_string()))
}

fn principal_of(row: &tokio_postgres::Row) -> Result<Principal> {
    Ok(Principal {
        tenant: tenant_of(row.get(0))?,
        user: row.get(1),
        role: role_of(row.get(2))?,
    })
}

async fn tenant_exists(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &TenantId,
) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM tenants WHERE id = $1", &[&tenant.as_str()])
        .await?
        .is_some())
}

impl PgStore {
    /// Create a tenant; refused if it exists.
    pub async fn create_tenant(&self, tenant: &TenantId) -> Result<(), AccountError> {
        let client = self.client().await.map_err(Error::from)?;
        let made = client
            .execute(
                "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&tenant.as_str(), &now_rfc3339()],
            )
            .await
            .map_err(Error::from)?;
        if made == 0 {
            return Err(AccountError::Exists {
                kind: "tenant",
                name: tenant.to_string(),
            });
        }
        Ok(())
    }

    /// Every tenant, by name.
    pub async fn tenants(&self) -> Result<Vec<TenantInfo>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, created_at FROM tenants ORDER BY id COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(TenantInfo {
                    id: tenant_of(r.get(0))?,
                    created_at: r.get(1),
                })
            })
            .collect()
    }

    /// The users of `tenant`, by name.
    pub async fn users(&self, tenant: &TenantId) -> Result<Vec<UserInfo>> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT name, role, password_hash IS NOT NULL, created_at FROM users
                 WHERE tenant_id = $1 ORDER BY name COLLATE \"C\"",
                &[&tenant.as_str()],
            )
            .await?
            .iter()
            .map(|r| UserInfo {
                name: r.get(0),
                role: r.get(1),
                has_password: r.get(2),
                created_at: r.get(3),
            })
            .collect())
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
        let hash = password.map(crate::auth::hash_password).transpose()?;
        let mut client = self.client().await.map_err(Error::from)?;
        let tx = client.transaction().await.map_err(Error::from)?;
        if !tenant_exists(&tx, tenant).await? {
            return Err(AccountError::UnknownTenant(tenant.clone()));
        }
        // The name is taken in this transaction, so two nodes making the
        // same user at once cannot both think it new.
        let owner: Option<String> = tx
            .query_opt(
                "SELECT tenant_id FROM users WHERE name = $1 FOR UPDATE",
                &[&user],
            )
            .await
            .map_err(Error::from)?
            .map(|r| r.get(0));
        if let Some(owner) = owner.filter(|o| o != tenant.as_str()) {
            return Err(AccountError::OtherTenant {
                user: user.to_owned(),
                tenant: tenant_of(owner)?,
            });
        }
        let inserted = tx
            .execute(
                "INSERT INTO users (name, tenant_id, role, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role,
                     password_hash = coalesce(excluded.password_hash, users.password_hash)
                 WHERE users.tenant_id = excluded.tenant_id",
                &[
                    &user,
                    &tenant.as_str(),
                    &role.as_str(),
                    &hash,
                    &now_rfc3339(),
                ],
            )
            .await
            .map_err(Error::from)?;
        if inserted == 0 {
            // Made in another tenant by a racing node since the check: said
            // as SQLite says it.
            let owner: String = tx
                .query_one("SELECT tenant_id FROM users WHERE name = $1", &[&user])
                .await
                .map_err(Error::from)?
                .get(0);
            return Err(AccountError::OtherTenant {
                user: user.to_owned(),
                tenant: tenant_of(owner)?,
            });
        }
        // Tokens carry the role they were made with: a changed user logs
        // in again.
        tx.execute(
            "DELETE FROM tokens WHERE tenant_id = $1 AND user_name = $2",
            &[&tenant.as_str(), &user],
        )
        .await
        .map_err(Error::from)?;
        tx.commit().await.map_err(Error::from)?;
        Ok(())
    }

    /// The user `name` if `password` is theirs (Argon2: slow on purpose).
    pub async fn check_password(&self, name: &str, password: &str) -> Result<Option<Principal>> {
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT tenant_id, role, password_hash FROM users WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| {
                Ok::<_, Error>((
                    tenant_of(r.get(0))?,
                    role_of(r.get(1))?,
                    r.get::<_, Option<String>>(2),
                    name.to_owned(),
                ))
            })
            .transpose()?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || verified(found, &password))
            .await
            .map_err(|e| Error::Corrupt(format!("password check task failed: {e}")))?
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
        let id = new_id();
        let client = self.client().await.map_err(Error::from)?;
        // The tenant is read in the same statement, so a key is never made
        // for a tenant that does not exist.
        let made = client
            .execute(
                "INSERT INTO api_keys (id, tenant_id, user_name, role, key_hash, created_at, enabled)
                 SELECT $1, id, $3, $4, $5, $6, true FROM tenants WHERE id = $2",
                &[
                    &id,
                    &tenant.as_str(),
                    &user,
                    &role.as_str(),
                    &digest(&key),
                    &now_rfc3339(),
                ],
            )
            .await
            .map_err(Error::from)?;
        if made == 0 {
            return Err(AccountError::UnknownTenant(tenant.clone()));
        }
        Ok((id, key))
    }

    /// Who an API key speaks for, if it is known and enabled.
    pub async fn api_key_principal(&self, key: &str) -> Result<Option<Principal>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT tenant_id, user_name, role FROM api_keys WHERE key_hash = $1 AND enabled",
            )
            .await?;
        client
            .query_opt(&stmt, &[&digest(key)])
            .await?
            .map(|r| principal_of(&r))
            .transpose()
    }

    /// Whether any API key exists (a fresh server has none).
    pub async fn any_api_key(&self) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt("SELECT 1 FROM api_keys LIMIT 1", &[])
            .await?
            .is_some())
    }

    /// The API keys of `tenant`, oldest first.
    pub async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, tenant_id, user_name, role, created_at, enabled FROM api_keys
                 WHERE tenant_id = $1 ORDER BY id",
                &[&tenant.as_str()],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: r.get(0),
                    tenant: tenant_of(r.get(1))?,
                    user: r.get(2),
                    role: role_of(r.get(3))?,
                    created_at: r.get(4),
                    enabled: r.get(5),
                })
            })
            .collect()
    }

    /// Enable or disable an API key of `tenant`; false if there is none.
    pub async fn set_api_key_enabled(
        &self,
        tenant: &TenantId,
        id: &str,
        enabled: bool,
    ) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE api_keys SET enabled = $3 WHERE tenant_id = $1 AND id = $2",
                &[&tenant.as_str(), &id, &enabled],
            )
            .await?
            > 0)
    }

    /// Delete an API key of `tenant`; false if there is none.
    pub async fn delete_api_key(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2",
                &[&tenant.as_str(), &id],
            )
            .await?
            > 0)
    }

    /// A token for `principal` valid for `ttl_secs`; expired tokens are
    /// swept on the way. Returns the token and its expiry (unix seconds).
    pub async fn create_token(
        &self,
        principal: &Principal,
        ttl_secs: u64,
    ) -> Result<(String, u64)> {
        let token = random_secret("sqt_");
        let expires = unix_now().saturating_add(ttl_secs);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM tokens WHERE expires_at <= $1", &[&now()])
            .await?;
        tx.execute(
            "INSERT INTO tokens (token_hash, tenant_id, user_name, role, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &digest(&token),
                &principal.tenant.as_str(),
                &principal.user,
                &principal.role.as_str(),
                &i64::try_from(expires).unwrap_or(i64::MAX),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok((token, expires))
    }

    /// Revoke a token (signing out); whether it was known.
    pub async fn revoke_token(&self, token: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM tokens WHERE token_hash = $1",
                &[&digest(token)],
            )
            .await?
            > 0)
    }

    /// Who a token speaks for, if it is known and not expired.
    pub async fn token_principal(&self, token: &str) -> Result<Option<Principal>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT tenant_id, user_name, role FROM tokens WHERE token_hash = $1 AND expires_at > $2",
            )
            .await?;
        client
            .query_opt(&stmt, &[&digest(token), &now()])
            .await?
            .map(|r| principal_of(&r))
            .transpose()
    }
}
