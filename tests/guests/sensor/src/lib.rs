//! One test sensor, its behaviour chosen by the pack config's `mode`:
//! `counter` (a kv counter that survives restarts, dispatched each poll),
//! `panic` (panics in poll), `loop` (never returns from poll), `nap`
//! (sleeps an hour in poll, waiting in the host), `params`
//! (logs the triggers announced to it and dispatches to each),
//! `bad-payload` (dispatches a payload its schema refuses), `burst`
//! (dispatches the config's `burst` events per poll, for benchmarks) and
//! `tagged` (dispatches `{count, tag, instance}` each poll: the config's
//! `tag` and a number drawn at setup, so each instance's events are told
//! apart).
use std::collections::BTreeMap;

use serde_json::json;
use squall_sdk::sensor::{self, Sensor, Trigger};
use squall_sdk::{Result, kv, log};

struct TestSensor {
    mode: String,
    count: u64,
    /// Drawn at setup: tells this instance's events from another's.
    instance: u64,
    triggers: BTreeMap<String, serde_json::Value>,
}

#[squall_sdk::sensor]
impl Sensor for TestSensor {
    fn setup() -> Result<Self> {
        let mode = squall_sdk::config()["mode"]
            .as_str()
            .unwrap_or("counter")
            .to_owned();
        let count = kv::get("count")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        log::info!("setup in mode {mode} at count {count}");
        let instance = {
            use std::hash::{BuildHasher, Hasher};
            // Seeded from wasi:random.
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        Ok(TestSensor {
            mode,
            count,
            instance,
            triggers: BTreeMap::new(),
        })
    }

    fn poll(&mut self) -> Result<()> {
        match self.mode.as_str() {
            "panic" => panic!("sensor broke on purpose"),
            "nap" => {
                // Waits in a host call (wasi's clock), not in wasm.
                log::info!("napping");
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(())
            }
            "loop" => {
                log::info!("looping");
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "params" => {
                for (id, params) in &self.triggers {
                    sensor::dispatch(id, &json!({ "seen": params }))?;
                }
                Ok(())
            }
            "burst" => {
                let n = squall_sdk::config()["burst"].as_u64().unwrap_or(100);
                for _ in 0..n {
                    self.count += 1;
                    sensor::dispatch("counted", &json!({ "count": self.count }))?;
                }
                Ok(())
            }
            "tagged" => {
                self.count += 1;
                let tag = squall_sdk::config()["tag"].clone();
                sensor::dispatch(
                    "counted",
                    &json!({ "count": self.count, "tag": tag, "instance": self.instance.to_string() }),
                )
            }
            "bad-payload" => {
                if let Err(e) = sensor::dispatch("counted", &json!({ "count": "not a number" })) {
                    log::warn!("refused: {e}");
                }
                Ok(())
            }
            _ => {
                self.count += 1;
                kv::set("count", &self.count.to_string())?;
                sensor::dispatch("counted", &json!({ "count": self.count }))
            }
        }
    }

    fn add_trigger(&mut self, t: Trigger) {
        log::info!("add {} {}", t.id, t.parameters);
        self.triggers.insert(t.id, t.parameters);
    }

    fn update_trigger(&mut self, t: Trigger) {
        log::info!("update {} {}", t.id, t.parameters);
        self.triggers.insert(t.id, t.parameters);
    }

    fn remove_trigger(&mut self, t: Trigger) {
        log::info!("remove {}", t.id);
        self.triggers.remove(&t.id);
    }
}
