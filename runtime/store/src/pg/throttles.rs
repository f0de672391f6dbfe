//! Rules' throttle windows shared by the nodes: at most one enforcement
//! per window of a rule and throttle key, whichever node the events come
//! through. The window is a row, taken in one statement by the enforcement
//! that opens it when it is closed; windows are timed by the database's
//! clock, which every node shares.

use std::time::Duration;

use squall_core::TenantId;

use super::PgStore;
use crate::Result;

/// What [`PgStore::take_throttle_window`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// The window was closed: it is open now, for this enforcement.
    Taken,
    /// Another enforcement holds the window: opened `ago`, open for `left`
    /// more.
    Open { ago: Duration, left: Duration },
}

impl PgStore {
    /// Open `rule`'s throttle window for `key`, `window` long, for the
    /// enforcement of trigger instance `instance`, unless it is open.
    pub async fn take_throttle_window(
        &self,
        tenant: &TenantId,
        rule: &str,
        key: &str,
        window: Duration,
        instance: &str,
    ) -> Result<Window> {
        let client = self.client().await?;
        // The second branch reads the table as it was before the first
        // wrote it: the window that was open, if one was.
        let row = client
            .query_opt(
                "WITH taken AS (
                     INSERT INTO throttle_windows (tenant_id, rule, key, started, until, opened_by)
                     VALUES ($1, $2, $3, now(), now() + make_interval(secs => $4), $5)
                     ON CONFLICT (tenant_id, rule, key) DO UPDATE
                         SET started = EXCLUDED.started, until = EXCLUDED.until,
                             opened_by = EXCLUDED.opened_by
                         WHERE throttle_windows.until <= now()
                     RETURNING 1
                 )
                 SELECT true, 0::float8, 0::float8 FROM taken
                 UNION ALL
                 SELECT false, extract(epoch FROM now() - started)::float8,
                        extract(epoch FROM until - now())::float8
                 FROM throttle_windows
                 WHERE tenant_id = $1 AND rule = $2 AND key = $3
                   AND NOT EXISTS (SELECT 1 FROM taken)",
                &[
                    &tenant.as_str(),
                    &rule,
                    &super::storable(key),
                    &window.as_secs_f64(),
                    &instance,
                ],
            )
            .await?;
        let seconds = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        Ok(match row {
            Some(r) if r.get::<_, bool>(0) => Window::Taken,
            // Open: as it was read.
            Some(r) if r.get::<_, f64>(2) > 0.0 => Window::Open {
                ago: seconds(r.get(1)),
                left: seconds(r.get(2)),
            },
            // Closed as read, yet not taken, or not there as read: another
            // enforcement opened it meanwhile.
            Some(_) | None => Window::Open {
                ago: Duration::ZERO,
                left: window,
            },
        })
    }

    /// Close the windows `instance` opened for `rule` and `key` (its
    /// enforcement did not go through after all).
    pub async fn give_back_throttle_window(
        &self,
        tenant: &TenantId,
        rule: &str,
        key: &str,
        instance: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM throttle_windows
                 WHERE tenant_id = $1 AND rule = $2 AND key = $3 AND opened_by = $4",
                &[&tenant.as_str(), &rule, &super::storable(key), &instance],
            )
            .await?;
        Ok(())
    }

    /// Forget the windows that have closed; how many.
    pub async fn purge_throttle_windows(&self) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM throttle_windows WHERE until <= now()", &[])
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use squall_tests::postgres::Postgres;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_enforcement_per_window_whichever_node_asks() {
        let pg = Postgres::start();
        let url = pg.create_database("throttles");
        let (one, two) = (
            PgStore::connect(&url, 8).await.expect("connect"),
            PgStore::connect(&url, 8).await.expect("connect"),
        );
        let tenant = TenantId::default_tenant();
        let hour = Duration::from_secs(3600);
        // Twenty ask at once through two stores: one takes the window.
        let asks = (0..20).map(|i| {
            let store = if i % 2 == 0 { &one } else { &two };
            let instance = format!("ti-{i}");
            let tenant = &tenant;
            async move {
                store
                    .take_throttle_window(tenant, "hooks.r", "web-1", hour, &instance)
                    .await
            }
        });
        let found = futures_util::future::try_join_all(asks)
            .await
            .expect("asked");
        let taken = found.iter().filter(|w| **w == Window::Taken).count();
        assert_eq!(taken, 1, "{found:?}");
        // Asked later, the window says how long it has left.
        match two
            .take_throttle_window(&tenant, "hooks.r", "web-1", hour, "ti-late")
            .await
            .expect("asked")
        {
            Window::Open { ago, left } => {
                assert!(
                    ago < hour && left > Duration::ZERO && left <= hour,
                    "{ago:?} {left:?}"
                );
            }
            Window::Taken => panic!("the window is open"),
        }
        // Another key, another rule, another tenant: windows of their own.
        for (tenant, rule, key) in [
            (tenant.clone(), "hooks.r", "web-2"),
            (tenant.clone(), "hooks.other", "web-1"),
            (TenantId::new("acme").expect("tenant"), "hooks.r", "web-1"),
        ] {
            assert_eq!(
                one.take_throttle_window(&tenant, rule, key, hour, "ti-x")
                    .await
                    .expect("asked"),
                Window::Taken
            );
        }
        // Given back by one that did not open it: still open. By the one
        // that did: closed, and the next takes it.
        let opener = format!(
            "ti-{}",
            found
                .iter()
                .position(|w| *w == Window::Taken)
                .expect("taken")
        );
        one.give_back_throttle_window(&tenant, "hooks.r", "web-1", "ti-late")
            .await
            .expect("give back");
        assert_ne!(
            one.take_throttle_window(&tenant, "hooks.r", "web-1", hour, "ti-next")
                .await
                .expect("asked"),
            Window::Taken
        );
        one.give_back_throttle_window(&tenant, "hooks.r", "web-1", &opener)
            .await
            .expect("give back");
        assert_eq!(
            one.take_throttle_window(&tenant, "hooks.r", "web-1", hour, "ti-next")
                .await
                .expect("asked"),
            Window::Taken
        );
        // A window that has closed (here: one that closes as it opens) is
        // taken again; closed ones are purged, open ones kept.
        for instance in ["ti-1", "ti-2"] {
            assert_eq!(
                two.take_throttle_window(&tenant, "hooks.short", "", Duration::ZERO, instance)
                    .await
                    .expect("asked"),
                Window::Taken
            );
        }
        assert_eq!(two.purge_throttle_windows().await.expect("purge"), 1);
        assert_ne!(
            one.take_throttle_window(&tenant, "hooks.r", "web-1", hour, "ti-after")
                .await
                .expect("asked"),
            Window::Taken,
            "the open window was kept"
        );
    }
}
