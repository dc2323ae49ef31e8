//! What the sandbox needs to know about a tenant: its limits (with the
//! server's defaults filled in), its HTTP allow-list, its secrets and its
//! share of running invocations. Read from the store and kept for a short
//! while, so a change by `cerebelum admin` applies within seconds without
//! a query per invocation.

use super::Inner;
use crate::error::Result;
use crate::http::AllowList;
use crate::model::Quotas;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a tenant's settings are used before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// A tenant's sandbox settings, as the engine applies them.
pub struct TenantSandbox {
    /// The tenant's name (also its key in the node's turns on cores).
    pub name: Arc<str>,
    /// The tenant's quotas with the server's defaults where it has none.
    pub quotas: Quotas,
    pub http: AllowList,
    /// Name and value of each secret.
    pub secrets: Vec<(String, String)>,
    /// The values alone, for redaction.
    pub secret_values: Arc<[String]>,
    /// Places for the tenant's running invocations on this node.
    pub share: Arc<Semaphore>,
    /// Its journaled host calls per second, if limited.
    pub journal_rate: Option<Arc<RateLimit>>,
    /// Its starts per second, if limited.
    pub start_rate: Option<Arc<RateLimit>>,
}

/// A token bucket: `rate` tokens a second, at most a second's worth saved.
pub struct RateLimit {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Returns a token taken by a caller that did not go on after all.
    pub fn give_back(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = (state.0 + 1.0).min(self.rate);
    }

    /// Takes a token; how long the caller must wait before it may go on
    /// (zero if a token was there).
    pub fn take(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let now = Instant::now();
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate) - 1.0;
        *state = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

impl TenantSandbox {
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `text` with every secret value replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut value = serde_json::Value::String(text.to_owned());
        crate::store::redact(&mut value, &self.secret_values);
        match value {
            serde_json::Value::String(out) => out,
            _ => text.to_owned(),
        }
    }
}

/// The settings of every tenant this node ran something for.
#[derive(Default)]
pub struct TenantCache {
    entries: Mutex<HashMap<String, (Arc<TenantSandbox>, Instant)>>,
    /// Shares outlive refreshes of the settings (their permits are held by
    /// running invocations); replaced only when the limit changes.
    shares: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    /// Rate limits (journal, starts) by (tenant, what), kept the same way.
    rates: Mutex<HashMap<RateKey, (i64, Arc<RateLimit>)>>,
}

/// A tenant and what its rate limits (`journal`, `start`).
type RateKey = (String, &'static str);

impl TenantCache {
    fn rate(&self, tenant: &str, what: &'static str, rate: i64) -> Arc<RateLimit> {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_owned(), what);
        match rates.get(&key) {
            Some((r, limit)) if *r == rate => limit.clone(),
            _ => {
                let limit = Arc::new(RateLimit::new(rate.max(1) as f64));
                rates.insert(key, (rate, limit.clone()));
                limit
            }
        }
    }

    fn share(&self, tenant: &str, places: usize) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        match shares.get(tenant) {
            Some((n, s)) if *n == places => s.clone(),
            _ => {
                let s = Arc::new(Semaphore::new(places));
                shares.insert(tenant.to_owned(), (places, s.clone()));
                s
            }
        }
    }
}

impl Inner {
    /// The sandbox settings of `tenant`, fresh within [`FRESH_FOR`].
    pub async fn tenant_sandbox(&self, tenant: &str) -> Result<Arc<TenantSandbox>> {
        if let Some((s, at)) = self
            .tenants
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(s.clone());
        }
        let record = self.store.catalog().tenant(tenant).await?;
        let secrets = crate::secrets::open_all(
            self.config.master_key.as_deref(),
            tenant,
            self.store.catalog().secret_values(tenant).await?,
        )?;
        let quotas = record.quotas.or(self.config.quotas);
        // An allow-list stored by an older or newer version that this one
        // cannot read allows nothing rather than failing every execution.
        let http = AllowList::parse(&record.http_allow).unwrap_or_else(|e| {
            tracing::warn!(%tenant, error = %e, "ignoring the tenant's HTTP allow-list");
            AllowList::default()
        });
        let places = quotas
            .max_concurrency
            .map_or(usize::MAX >> 4, |n| n.max(1) as usize);
        let sandbox = Arc::new(TenantSandbox {
            name: tenant.into(),
            quotas,
            http,
            secret_values: secrets.iter().map(|(_, v)| v.clone()).collect(),
            secrets,
            share: self.tenants.share(tenant, places),
            journal_rate: quotas
                .max_journal_rate
                .map(|r| self.tenants.rate(tenant, "journal", r)),
            start_rate: quotas
                .max_start_rate
                .map(|r| self.tenants.rate(tenant, "start", r)),
        });
        self.tenants
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned(), (sandbox.clone(), Instant::now()));
        Ok(sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_lets_a_second_of_calls_through_then_spaces_them() {
        let limit = RateLimit::new(100.0);
        let waits: Vec<Duration> = (0..102).map(|_| limit.take()).collect();
        assert!(waits[..99].iter().all(|w| w.is_zero()), "{waits:?}");
        // Past the saved second, each call waits about 1/100 s more.
        let last = waits[101].as_secs_f64();
        assert!((0.015..0.025).contains(&last), "{last}");
    }
}
