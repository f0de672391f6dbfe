//! Requests between nodes: what only the node holding an execution can do
//! (cancel it: the guest runs there), asked through another node's API. The
//! request is a row addressed to the holder, with a `NOTIFY` on
//! [`REQUESTS`] naming it as a hint; the holder takes its requests once
//! each (on the hint, or polling), carries them out, and writes its reply
//! on the row, which the asking node reads back and removes.

use squall_core::ExecutionId;

use super::PgStore;
use crate::Result;

/// The notification channel of requests between nodes; the payload names
/// the node addressed.
pub const REQUESTS: &str = "squall_requests";

/// Who holds an execution's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    /// Its claim has not run out: the node is alive.
    pub live: bool,
}

impl PgStore {
    /// The node holding `id`'s claim, if one does.
    pub async fn claim_holder(&self, id: &ExecutionId) -> Result<Option<Holder>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT node, lease_until >= now() FROM execution_queue
                 WHERE execution_id = $1 AND node IS NOT NULL",
                &[&id.as_str()],
            )
            .await?
            .map(|r| Holder {
                node: r.get(0),
                live: r.get(1),
            }))
    }

    /// Address `body` to `node`; the request's number, for its reply.
    pub async fn send_request(&self, node: &str, body: &str) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = tx
            .query_one(
                "INSERT INTO node_requests (node, body) VALUES ($1, $2) RETURNING id",
                &[&node, &body],
            )
            .await?
            .get(0);
        tx.execute("SELECT pg_notify($1, $2)", &[&REQUESTS, &node])
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The requests addressed to `node` not taken yet, now taken: each is
    /// taken once, whoever looks.
    pub async fn take_requests(&self, node: &str) -> Result<Vec<(i64, String)>> {
        let client = self.client().await?;
        Ok(client
            .query(
                "UPDATE node_requests SET taken = true WHERE node = $1 AND NOT taken
                 RETURNING id, body",
                &[&node],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Answer request `id`.
    pub async fn reply_to_request(&self, id: i64, reply: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE node_requests SET reply = $2 WHERE id = $1",
                &[&id, &reply],
            )
            .await?;
        Ok(())
    }

    /// The reply to request `id`, once there is one (the request is then
    /// removed); `None` while none came.
    pub async fn request_reply(&self, id: i64) -> Result<Option<String>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "DELETE FROM node_requests WHERE id = $1 AND reply IS NOT NULL RETURNING reply",
                &[&id],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// Give up request `id` (no reply came in time): removed, taken or not.
    pub async fn withdraw_request(&self, id: i64) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM node_requests WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use squall_tests::postgres::Postgres;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_reaches_its_node_once_and_its_reply_comes_back() {
        let pg = Postgres::start();
        let url = pg.create_database("requests");
        let asking = PgStore::connect(&url, 2).await.expect("connect");
        let holding = PgStore::connect(&url, 2).await.expect("connect");
        let mut heard = holding.listen_changes().await.expect("listen");
        let id = asking
            .send_request("a", r#"{"op":"x"}"#)
            .await
            .expect("send");
        let told = tokio::time::timeout(std::time::Duration::from_secs(60), heard.recv())
            .await
            .expect("a notification")
            .expect("the listener runs");
        assert_eq!(told, super::super::Heard::Requests { node: "a".into() });
        assert!(holding.take_requests("b").await.expect("take").is_empty());
        let taken = holding.take_requests("a").await.expect("take");
        assert_eq!(taken, vec![(id, r#"{"op":"x"}"#.to_owned())]);
        assert!(holding.take_requests("a").await.expect("again").is_empty());
        assert_eq!(asking.request_reply(id).await.expect("reply"), None);
        holding.reply_to_request(id, "done").await.expect("reply");
        assert_eq!(
            asking.request_reply(id).await.expect("reply"),
            Some("done".into())
        );
        assert_eq!(asking.request_reply(id).await.expect("gone"), None);
    }
}
