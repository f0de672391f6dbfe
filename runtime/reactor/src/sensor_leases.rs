//! Each sensor under a lease of its own, in a cluster on PostgreSQL: a
//! node runs a sensor only while it holds the lease `sensor/<tenant>/<ref>`
//! (the database's `leases`), so each runs on exactly one node, and the
//! sensors spread over the nodes. At every beat (a sixth of the lease's
//! life, and at once when a sensor here wants to start) a node renews its
//! own `node/<name>` lease and its sensors' in one statement, and counts
//! the live nodes; its share is the enabled sensors over the live nodes,
//! rounded up. Below its share it takes sensors no live node holds, in an
//! order of its own (so two nodes rarely want the same one first); above
//! it, it stops the extra ones and gives their leases up once they have
//! stopped, for the others to take. A node that dies stops renewing: its
//! sensors' leases run out, and the other nodes take them at their next
//! beat. A lease that ran out before this node renewed it (a stall) is
//! lost: the sensor stops here.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use squall_core::TenantId;
use squall_store::pg::PgStore;

use crate::dispatch::{ClusterNode, Reactor};
use crate::sensors::SensorEntry;

/// What names a sensor's lease.
const PREFIX: &str = "sensor/";

/// A sensor, as its lease knows it.
type SensorKey = (TenantId, String);

/// The sensors this node runs under their leases.
#[derive(Debug, Default)]
pub(crate) struct SensorLeases {
    /// Held, and run here.
    held: HashSet<SensorKey>,
    /// Held, stopping: given up once stopped.
    releasing: HashSet<SensorKey>,
}

fn lease_name((tenant, sensor): &SensorKey) -> String {
    format!("{PREFIX}{tenant}/{sensor}")
}

fn sensor_of(name: &str) -> Option<SensorKey> {
    let (tenant, sensor) = name.strip_prefix(PREFIX)?.split_once('/')?;
    Some((TenantId::new(tenant).ok()?, sensor.to_owned()))
}

fn key_of(entry: &SensorEntry) -> SensorKey {
    (entry.tenant().clone(), entry.meta.sensor_ref())
}

impl Reactor {
    /// Whether sensors run under leases of their own here: a node of a
    /// cluster. Else they run where this node leads (alone: always).
    pub(crate) fn sensors_leased(&self) -> bool {
        self.cluster().is_some()
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, SensorLeases> {
        self.inner
            .sensor_leases
            .lock()
            .expect("sensor lease lock poisoned")
    }

    /// Whether this node may run `entry` now.
    pub(crate) fn runs_sensor(&self, entry: &SensorEntry) -> bool {
        if !self.sensors_leased() {
            return self.leads();
        }
        self.leases().held.contains(&key_of(entry))
    }

    /// A sensor here wants to start and this node does not hold its lease:
    /// beat now rather than at the next tick.
    pub(crate) fn want_sensor(&self) {
        if self.sensors_leased() {
            self.inner.sensor_beat.notify_one();
        }
    }

    /// Hold this node's sensors' leases, take its share and give up the
    /// rest, for as long as this reactor runs.
    pub(crate) fn keep_sensor_leases(&self) {
        let Some((node, pg)) = self.cluster() else {
            return;
        };
        let (node, pg) = (node.clone(), pg.clone());
        let reactor = self.clone();
        self.spawn(async move {
            let every = node.claim_ttl / 6;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // When the leases were last renewed, by this node's clock.
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = reactor.inner.sensor_beat.notified() => {}
                }
                if reactor.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                // Within the leases' life, less a beat's margin.
                let left = node
                    .claim_ttl
                    .saturating_sub(renewed.elapsed())
                    .saturating_sub(every)
                    .max(every);
                let beat = reactor.beat_sensors(&pg, &node, &mut renewed);
                match tokio::time::timeout(left, beat).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(node = %node.name, error = %e, "could not hold this node's sensor leases")
                    }
                    Err(_) => {
                        tracing::warn!(node = %node.name, "the sensor leases' statement timed out")
                    }
                }
                // Not renewed in time: another node may take them now.
                if renewed.elapsed() + every >= node.claim_ttl {
                    reactor.stop_leased_sensors();
                }
            }
        });
    }

    /// Stop every sensor this node runs under a lease: it could not renew
    /// them in time, and another node may run them soon.
    fn stop_leased_sensors(&self) {
        let stopping: Vec<SensorKey> = {
            let mut leases = self.leases();
            std::mem::take(&mut leases.held).into_iter().collect()
        };
        if stopping.is_empty() {
            return;
        }
        tracing::warn!(
            sensors = stopping.len(),
            "this node could not renew its sensor leases in time; its sensors stop"
        );
        for key in &stopping {
            if let Some(entry) = self.inner.sensors.get(&key.0, &key.1) {
                self.stop_here(&entry);
            }
        }
    }

    /// One beat; `renewed` is set to when the renewal was sent, once the
    /// database answered it.
    async fn beat_sensors(
        &self,
        pg: &PgStore,
        node: &ClusterNode,
        renewed_at: &mut Instant,
    ) -> Result<(), squall_store::Error> {
        let sent = Instant::now();
        let (renewed, live) = pg.beat_leases(&node.name, PREFIX, node.claim_ttl).await?;
        *renewed_at = sent;
        let renewed: HashSet<SensorKey> = renewed.iter().filter_map(|n| sensor_of(n)).collect();
        // The sensors to run somewhere: enabled, of packs in force.
        let wanted: Vec<Arc<SensorEntry>> = self
            .inner
            .sensors
            .all()
            .into_iter()
            .filter(|e| e.is_enabled())
            .collect();
        let share = wanted.len().div_ceil(live.max(1));
        let wanted_keys: HashSet<SensorKey> = wanted.iter().map(|e| key_of(e)).collect();
        // In this node's order of preference: its share is the first ones.
        let rank = |key: &SensorKey| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&node.name, key).hash(&mut h);
            h.finish()
        };
        let (lost, extra, mut give_up, stopping) = {
            let mut leases = self.leases();
            let lost: Vec<SensorKey> = leases
                .held
                .iter()
                .filter(|k| !renewed.contains(*k))
                .cloned()
                .collect();
            leases.releasing.retain(|k| renewed.contains(k));
            let releasing = leases.releasing.clone();
            leases.held = renewed
                .iter()
                .filter(|k| !releasing.contains(*k))
                .cloned()
                .collect();
            // Held for nothing (disabled, gone): given up now.
            let give_up: Vec<SensorKey> = leases
                .held
                .iter()
                .filter(|k| !wanted_keys.contains(*k))
                .cloned()
                .collect();
            for k in &give_up {
                leases.held.remove(k);
            }
            // Above its share: the least preferred stop, and are given up
            // once stopped.
            let mut mine: Vec<SensorKey> = leases.held.iter().cloned().collect();
            mine.sort_by_key(|k| std::cmp::Reverse(rank(k)));
            let extra: Vec<SensorKey> = mine
                .into_iter()
                .take(leases.held.len().saturating_sub(share))
                .collect();
            let stopping: Vec<SensorKey> = leases.releasing.iter().cloned().collect();
            for k in &extra {
                leases.held.remove(k);
                leases.releasing.insert(k.clone());
            }
            (lost, extra, give_up, stopping)
        };
        // Those given up earlier that have stopped since (looked at without
        // the lease lock: a supervisor stopping takes its own locks first,
        // then this one).
        let stopped: Vec<SensorKey> = stopping
            .into_iter()
            .filter(|k| {
                self.inner
                    .sensors
                    .get(&k.0, &k.1)
                    .is_none_or(|e| !e.is_supervised())
            })
            .collect();
        {
            let mut leases = self.leases();
            for k in &stopped {
                leases.releasing.remove(k);
            }
        }
        give_up.extend(stopped);
        for key in lost.iter().chain(&extra) {
            if let Some(entry) = self.inner.sensors.get(&key.0, &key.1) {
                self.stop_here(&entry);
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                sensors = lost.len(),
                "this node's lease on sensors ran out; they stopped here"
            );
        }
        for key in &give_up {
            pg.release_lease(&lease_name(key), &node.name).await?;
        }
        // Below its share: take what no live node holds.
        let held = self.leases().held.len();
        if held >= share {
            return Ok(());
        }
        let mut candidates: Vec<&Arc<SensorEntry>> = wanted
            .iter()
            .filter(|e| !renewed.contains(&key_of(e)))
            .collect();
        candidates.sort_by_key(|e| rank(&key_of(e)));
        let mut room = share - held;
        for entry in candidates {
            if room == 0 {
                break;
            }
            let key = key_of(entry);
            if pg
                .acquire_lease(&lease_name(&key), &node.name, node.claim_ttl)
                .await?
                .is_none()
            {
                continue;
            }
            room -= 1;
            self.leases().held.insert(key.clone());
            tracing::info!(sensor = %key.1, tenant = %key.0, "this node runs the sensor");
            if let Some(current) = self.inner.sensors.get(&key.0, &key.1) {
                self.start_if_enabled(current);
            }
        }
        Ok(())
    }

    /// Give up this node's sensors' leases and its own (a graceful stop,
    /// its sensors stopped): other nodes take them at their next beat.
    pub(crate) async fn release_sensor_leases(&self) {
        let Some((node, pg)) = self.cluster() else {
            return;
        };
        if let Err(e) = pg.release_leases(&node.name, PREFIX).await {
            tracing::warn!(error = %e, "could not give up this node's sensor leases; they run out on their own");
        }
    }
}
