//! Changes reach every node: each transaction that changes what nodes hold
//! in memory for a tenant (its rules, policies, sensors, packs and their
//! configs) bumps the tenant's epoch in the same transaction and sends a
//! `NOTIFY` on [`CHANNEL`] with the tenant's name. The notification is a
//! hint, delivered at commit and at most once per transaction and tenant;
//! a node also polls the epochs, and reads them all again after its
//! listening connection reconnects, so a lost notification delays a
//! change but never loses it.

use futures_util::StreamExt as _;
use squall_core::TenantId;
use tokio::sync::mpsc;

use super::{PgError, PgStore};
use crate::{Error, Result};

/// The notification channel of tenant changes.
pub const CHANNEL: &str = "squall_changes";

/// What a node's listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// What nodes hold in memory for this tenant changed.
    Tenant(TenantId),
    /// Requests are addressed to this node (see [`PgStore::send_request`]).
    Requests { node: String },
    /// Slots of this tenant's concurrency gates were freed (see
    /// [`PgStore::take_gates`]).
    Gates(TenantId),
}

/// Bump `tenant`'s epoch inside the open transaction of a change, and
/// notify the other nodes when it commits.
pub(super) async fn bump_epoch(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &TenantId,
) -> Result<i64> {
    let epoch = client
        .query_one(
            "INSERT INTO tenant_epochs (tenant_id, epoch) VALUES ($1, 1)
             ON CONFLICT (tenant_id) DO UPDATE SET epoch = tenant_epochs.epoch + 1
             RETURNING epoch",
            &[&tenant.as_str()],
        )
        .await?
        .get(0);
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &tenant.as_str()])
        .await?;
    Ok(epoch)
}

impl PgStore {
    /// Every tenant's change epoch (the polling fallback, and what a node
    /// reads again after reconnecting).
    pub async fn epochs(&self) -> Result<Vec<(TenantId, i64)>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT tenant_id, epoch FROM tenant_epochs ORDER BY tenant_id COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let tenant = TenantId::new(r.get::<_, String>(0))
                    .map_err(|e| Error::Corrupt(format!("tenant: {e}")))?;
                Ok((tenant, r.get(1)))
            })
            .collect()
    }

    /// Listen for tenant changes, requests between nodes and freed gate
    /// slots on a connection of its own: each notification arrives on the
    /// receiver, which ends when the connection does (the caller then
    /// reads [`PgStore::epochs`] again and listens anew).
    pub async fn listen_changes(&self) -> Result<mpsc::UnboundedReceiver<Heard>> {
        let failed = |e: tokio_postgres::Error| Error::Postgres(PgError::Connect(e.to_string()));
        Ok(match &self.tls {
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(failed)?;
                relay(client, connection).await?
            }
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                relay(client, connection).await?
            }
        })
    }
}

/// What `connection`'s notifications say, on a receiver that ends
/// with the connection. The task reading the connection holds its client
/// too: the connection ends when it does, and the receiver ends with it
/// (the caller then reads the epochs again and listens anew). A dropped
/// receiver ends the task.
async fn relay<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
) -> Result<mpsc::UnboundedReceiver<Heard>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let client = std::sync::Arc::new(client);
    let held = client.clone();
    tokio::spawn(async move {
        let _client = held;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        loop {
            let message = tokio::select! {
                () = tx.closed() => return,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    let heard = match n.channel() {
                        super::REQUESTS => Some(Heard::Requests {
                            node: n.payload().to_owned(),
                        }),
                        super::GATES => TenantId::new(n.payload()).ok().map(Heard::Gates),
                        _ => TenantId::new(n.payload()).ok().map(Heard::Tenant),
                    };
                    if let Some(heard) = heard {
                        let _ = tx.send(heard);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the change listener's connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {CHANNEL}; LISTEN {}; LISTEN {}",
            super::REQUESTS,
            super::GATES
        ))
        .await
        .map_err(Error::from)?;
    Ok(rx)
}
