//! Per-client-address rate limits for the endpoints anyone may call before they have an
//! identity (`/enroll`, `/scep`): a token bucket per address, in memory, with a bounded number
//! of addresses. Over the limit a client gets 429 with `Retry-After`. Devices behind one NAT
//! share an address, so the default is generous (a burst of a whole office enrolling at once
//! fits); it exists to stop one client from making the server sign and decrypt without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most addresses remembered at once; past it, the quietest are forgotten.
const MAX_CLIENTS: usize = 50_000;

pub struct RateLimit {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_minute` requests a minute per address, in bursts of as many; 0 turns it off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client` may make a request now; `Err(seconds)` to wait when it may not.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        // Requests without a peer address (in-process tests) share one bucket.
        let client = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            // A full bucket is the same as no bucket: forget every address that is back to full.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < capacity
            });
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_waits_and_others_do_not() {
        let limit = RateLimit::new(3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        let wait = limit.check(a).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(limit.check(b).is_ok());
        assert!(RateLimit::new(0).check(a).is_ok());
    }
}
