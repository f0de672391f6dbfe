//! `automaton.QuerySensor`: Automaton Engine's scheduled Elasticsearch
//! query. Every `query_interval` seconds it sends `query_payload` to
//! `elasticsearch_url` + `query_endpoint` (basic auth, the password read
//! decrypted from the datastore) and dispatches `automaton.query_hit` for
//! each aggregation bucket, its fields renamed by `query_response_mapping`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use squall_sdk::sensor::{self, Sensor};
use squall_sdk::{Error, Result, http, kv, log};

#[derive(Deserialize)]
struct Config {
    elasticsearch_url: String,
    elasticsearch_timeout: u64,
    elasticsearch_username: Option<String>,
    elasticsearch_password_key: String,
    query_name: String,
    query_interval: f64,
    query_endpoint: String,
    query_payload: Value,
    query_response_mapping: Map<String, Value>,
}

struct QuerySensor {
    config: Config,
    password: Option<String>,
    last: Option<Instant>,
}

impl QuerySensor {
    fn query(&self) -> Result<Value> {
        let url = format!(
            "{}{}",
            self.config.elasticsearch_url.trim_end_matches('/'),
            self.config.query_endpoint
        );
        let mut request = http::post(&url)
            .timeout(Duration::from_secs(self.config.elasticsearch_timeout))
            .json(&self.config.query_payload)?;
        if let Some(user) = &self.config.elasticsearch_username {
            request = request.basic_auth(user, self.password.as_deref().unwrap_or_default());
        }
        let response = request.send()?;
        if !response.is_success() {
            return Err(Error::failed(format!(
                "Elasticsearch answered HTTP {}: {}",
                response.status,
                response.text()
            )));
        }
        response.json()
    }
}

#[squall_sdk::sensor]
impl Sensor for QuerySensor {
    fn setup() -> Result<Self> {
        let config: Config = squall_sdk::config_as()?;
        let password = match &config.elasticsearch_username {
            Some(_) => Some(
                kv::get_secret(&format!("system:{}", config.elasticsearch_password_key))?
                    .ok_or_else(|| {
                        Error::failed(format!(
                            "no password stored under '{}' (squall key set {} PASSWORD --encrypt)",
                            config.elasticsearch_password_key, config.elasticsearch_password_key
                        ))
                    })?,
            ),
            None => None,
        };
        log::info!(
            "querying {}{} every {} s",
            config.elasticsearch_url,
            config.query_endpoint,
            config.query_interval
        );
        Ok(QuerySensor {
            config,
            password,
            last: None,
        })
    }

    fn poll(&mut self) -> Result<()> {
        let interval = Duration::from_secs_f64(self.config.query_interval.clamp(0.1, 86_400.0));
        if self.last.is_some_and(|at| at.elapsed() < interval) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let response = self.query()?;
        let Some(aggregations) = response.get("aggregations").and_then(Value::as_object) else {
            return Ok(());
        };
        for (name, aggregation) in aggregations {
            let buckets = aggregation
                .get("buckets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for bucket in buckets {
                let mut payload = Map::new();
                payload.insert(
                    "query".into(),
                    Value::String(self.config.query_name.clone()),
                );
                payload.insert("aggregation".into(), Value::String(name.clone()));
                for (field, renamed) in &self.config.query_response_mapping {
                    if let (Some(value), Some(renamed)) = (bucket.get(field), renamed.as_str()) {
                        payload.insert(renamed.to_owned(), value.clone());
                    }
                }
                sensor::dispatch("query_hit", &payload)?;
            }
        }
        Ok(())
    }
}
