//! Rate limits as token buckets, one per party (a builder key, a client address): a party
//! may spend `per_minute` tokens at once, and gets them back at `per_minute` a minute. What a
//! token is worth is the caller's business (a pushed narinfo, for the attestations route).
//!
//! Kept in this process's memory: a replica set enforces the limit per replica, and a
//! restart forgets what was spent. Buckets that have filled up again are forgotten first, so
//! the map stays bounded whoever knocks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limits::RATE_LIMIT_PARTIES;

/// Token buckets for any number of parties, all with the same rate.
pub struct RateLimiter {
    /// Tokens a full bucket holds, and tokens regained per minute.
    per_minute: u32,
    /// Buckets by party. std Mutex: held for a map operation only, never across `.await`.
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// One party's bucket.
#[derive(Clone, Copy)]
struct Bucket {
    /// Tokens left at `at`.
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter granting `per_minute` tokens a minute (and at most that many at once).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The most a party can ever spend at once.
    pub fn burst(&self) -> u32 {
        self.per_minute
    }

    /// Takes `cost` tokens from every party in `spends` at `now`, or none at all: when one of
    /// them has too few, the answer is how long until all would have enough.
    pub fn take(&self, spends: &[(String, u32)], now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.per_minute) / 60.0;
        let full = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = |b: Option<&Bucket>| match b {
            Some(b) => {
                (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(full)
            }
            None => full,
        };
        let mut wait = Duration::ZERO;
        for (party, cost) in spends {
            let short = f64::from(*cost) - level(buckets.get(party));
            if short > 0.0 {
                let secs = if rate > 0.0 { short / rate } else { 60.0 };
                wait = wait.max(Duration::from_secs_f64(secs.min(3600.0)));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if buckets.len() + spends.len() > RATE_LIMIT_PARTIES {
            // A full bucket is the same as none: forget those first.
            buckets.retain(|_, b| level(Some(b)) < full);
            if buckets.len() + spends.len() > RATE_LIMIT_PARTIES {
                tracing::warn!(
                    "more than {RATE_LIMIT_PARTIES} parties are rate limited at once; \
                     forgetting what they spent"
                );
                buckets.clear();
            }
        }
        for (party, cost) in spends {
            let tokens = level(buckets.get(party)) - f64::from(*cost);
            buckets.insert(party.clone(), Bucket { tokens, at: now });
        }
        Ok(())
    }
}

/// The party a client address is counted as: an IPv4 address, or an IPv6 address's /64 (one
/// host usually holds a whole /64, so counting single addresses would not limit it).
pub fn client_party(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(party: &str, cost: u32) -> Vec<(String, u32)> {
        vec![(party.to_owned(), cost)]
    }

    #[test]
    fn a_party_spends_its_burst_then_waits_for_tokens_to_come_back() {
        let limiter = RateLimiter::new(60); // one a second
        let t0 = Instant::now();
        assert_eq!(limiter.take(&one("a", 60), t0), Ok(()));
        let wait = limiter.take(&one("a", 2), t0).expect_err("empty");
        assert_eq!(wait, Duration::from_secs(2));
        // Another party is not affected.
        assert_eq!(limiter.take(&one("b", 1), t0), Ok(()));
        // Two seconds later, two tokens are back.
        assert_eq!(
            limiter.take(&one("a", 2), t0 + Duration::from_secs(2)),
            Ok(())
        );
        // Never more than the burst, however long it waited.
        let later = t0 + Duration::from_secs(3600);
        assert!(limiter.take(&one("a", 61), later).is_err());
    }

    #[test]
    fn several_parties_are_charged_all_or_nothing() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        assert_eq!(limiter.take(&one("b", 10), t0), Ok(()));
        let both = vec![("a".to_owned(), 5), ("b".to_owned(), 5)];
        assert!(limiter.take(&both, t0).is_err());
        // a was not charged for the refused attempt.
        assert_eq!(limiter.take(&one("a", 10), t0), Ok(()));
    }

    #[test]
    fn the_map_of_parties_stays_bounded() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT_PARTIES + 10 {
            assert_eq!(limiter.take(&one(&i.to_string(), 1), t0), Ok(()));
        }
        let len = limiter.buckets.lock().expect("lock").len();
        assert!(len <= RATE_LIMIT_PARTIES, "{len}");
    }

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(client_party(a), client_party(b));
        assert_eq!(client_party(a), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_party(mapped), "192.0.2.7");
    }
}
