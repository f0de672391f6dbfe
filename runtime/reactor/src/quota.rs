//! Per-tenant rate limits: a token bucket per tenant, `per_minute` tokens
//! refilled continuously, as many at most.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use squall_core::TenantId;

#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<TenantId, (f64, Instant)>>,
}

impl RateLimits {
    /// Take one token of `tenant`'s bucket, or say why not.
    pub(crate) fn take(&self, tenant: &TenantId, per_minute: u32) -> Result<(), String> {
        let capacity = f64::from(per_minute);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock poisoned");
        let (tokens, last) = buckets.entry(tenant.clone()).or_insert((capacity, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * capacity / 60.0).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) * 60.0 / capacity;
            Err(format!(
                "quota exceeded: tenant '{tenant}' may request {per_minute} executions per minute; the next is allowed in {wait:.1} s"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_size_then_refuses_per_tenant() {
        let limits = RateLimits::default();
        let a = TenantId::new("a").expect("id");
        let b = TenantId::new("b").expect("id");
        for _ in 0..3 {
            limits.take(&a, 3).expect("within the quota");
        }
        let e = limits.take(&a, 3).expect_err("over");
        assert!(e.contains("3 executions per minute"), "{e}");
        limits.take(&b, 3).expect("another tenant is not affected");
    }
}
