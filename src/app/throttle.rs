//! Slowing down password guessing: every login attempt counts against the user name, the client
//! address, and the pair; registrations against the address. Past a few free attempts, each one
//! makes the next wait twice as long, up to a cap: a delay, never a lock-out. The cap of the
//! user name alone is short, so an attacker guessing from elsewhere can only slow the user's own
//! login, not stop it. Attempts are counted before the password is checked (two at once cannot
//! both pass a limit), and refused attempts cost no password hash.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AppError, Origin, Switchboard};
use crate::store::throttle::Counter;

/// Counters untouched this long start again from zero.
pub const FORGET: Duration = Duration::from_secs(15 * 60);

/// How one kind of key is slowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Attempts within [`FORGET`] that wait for nothing.
    pub free: i32,
    /// The longest wait, in units of the base delay.
    pub cap: u32,
}

/// A user name, from anywhere.
pub const USER: Rule = Rule { free: 10, cap: 30 };
/// A user name from one address.
pub const USER_AT_ADDRESS: Rule = Rule { free: 5, cap: 900 };
/// One address, whatever the user names.
pub const ADDRESS: Rule = Rule { free: 30, cap: 900 };
/// Registrations from one address.
pub const REGISTRATIONS: Rule = Rule { free: 10, cap: 900 };

/// The counter after one more attempt at `now`.
pub fn count(counter: Option<Counter>, rule: Rule, base: Duration, now: DateTime<Utc>) -> Counter {
    let forget = chrono::Duration::from_std(FORGET).expect("small");
    let before = counter
        .filter(|c| now - c.last_attempt_at < forget)
        .map_or(0, |c| c.attempts);
    let attempts = before.saturating_add(1);
    let over = attempts - rule.free;
    let delay = if over <= 0 {
        Duration::ZERO
    } else {
        let factor = 1u64 << (over - 1).min(32);
        base.saturating_mul(factor.min(rule.cap as u64) as u32)
    };
    Counter {
        attempts,
        last_attempt_at: now,
        blocked_until: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
    }
}

/// Counts one attempt on every key, or refuses it with the time left if any key is waiting.
pub fn admit(
    counters: &[Option<Counter>],
    rules: &[Rule],
    base: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Counter>, Duration> {
    let waiting = counters
        .iter()
        .flatten()
        .map(|c| c.blocked_until)
        .filter(|until| *until > now)
        .max();
    if let Some(until) = waiting {
        return Err((until - now).to_std().unwrap_or_default());
    }
    Ok(counters
        .iter()
        .zip(rules)
        .map(|(counter, rule)| count(*counter, *rule, base, now))
        .collect())
}

/// The part of an address that identifies a client: the whole IPv4 address, the /64 of IPv6.
fn client(address: IpAddr) -> String {
    match address {
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

impl Switchboard {
    /// Counts a login attempt for `name` (a user's or an auditor's, by `kind`) from `origin`, or
    /// refuses it with `RATE_LIMITED`.
    pub(super) async fn admit_login(
        &self,
        kind: &str,
        name: &str,
        origin: &Origin,
    ) -> Result<(), AppError> {
        let name = name.trim().to_lowercase();
        let mut keys = vec![format!("{kind}:{name}")];
        let mut rules = vec![USER];
        if let Some(address) = origin.address.map(client) {
            keys.push(format!("{kind}@:{name}@{address}"));
            rules.push(USER_AT_ADDRESS);
            keys.push(format!("address:{address}"));
            rules.push(ADDRESS);
        }
        self.admit(&keys, &rules).await
    }

    /// A login that succeeded: its name starts again from zero, and the attempt does not count
    /// against its address.
    pub(super) async fn login_succeeded(
        &self,
        kind: &str,
        name: &str,
        origin: &Origin,
    ) -> Result<(), AppError> {
        if self.settings.throttle_base.is_zero() {
            return Ok(());
        }
        let name = name.trim().to_lowercase();
        self.throttle.clear(&format!("{kind}:{name}")).await?;
        if let Some(address) = origin.address.map(client) {
            self.throttle
                .clear(&format!("{kind}@:{name}@{address}"))
                .await?;
            self.throttle
                .give_back(&format!("address:{address}"))
                .await?;
        }
        Ok(())
    }

    /// Counts a registration from `origin`, or refuses it with `RATE_LIMITED`.
    pub(super) async fn admit_registration(&self, origin: &Origin) -> Result<(), AppError> {
        match origin.address.map(client) {
            Some(address) => {
                self.admit(&[format!("register:{address}")], &[REGISTRATIONS])
                    .await
            }
            None => Ok(()),
        }
    }

    async fn admit(&self, keys: &[String], rules: &[Rule]) -> Result<(), AppError> {
        let base = self.settings.throttle_base;
        if base.is_zero() {
            // Throttling off (benchmarks, tests of other things).
            return Ok(());
        }
        let now = Utc::now();
        self.throttle
            .update(keys, |counters| admit(counters, rules, base, now))
            .await?
            .map_err(|retry_after| AppError::RateLimited { retry_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn free_attempts_wait_for_nothing_then_each_doubles_the_wait_up_to_the_cap() {
        let rule = Rule { free: 3, cap: 8 };
        let mut counter = None;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let next = count(counter, rule, BASE, at(0));
            waits.push((next.blocked_until - at(0)).num_seconds());
            counter = Some(next);
        }
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_quiet_spell_starts_the_count_again() {
        let rule = Rule { free: 1, cap: 8 };
        let first = count(None, rule, BASE, at(0));
        let second = count(Some(first), rule, BASE, at(1));
        assert_eq!(second.attempts, 2);
        let later = count(Some(second), rule, BASE, at(FORGET.as_secs() as i64 + 10));
        assert_eq!(later.attempts, 1);
        assert_eq!(later.blocked_until, at(FORGET.as_secs() as i64 + 10));
    }

    #[test]
    fn a_waiting_key_refuses_with_the_time_left_and_counts_nothing() {
        let waiting = Counter {
            attempts: 7,
            last_attempt_at: at(0),
            blocked_until: at(20),
        };
        let refused = admit(&[None, Some(waiting)], &[USER, ADDRESS], BASE, at(5));
        assert_eq!(refused, Err(Duration::from_secs(15)));
        let admitted = admit(&[None, Some(waiting)], &[USER, ADDRESS], BASE, at(21)).unwrap();
        assert_eq!(admitted[0].attempts, 1);
        assert_eq!(admitted[1].attempts, 8);
    }

    #[test]
    fn ipv6_clients_are_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client(a), client(b));
        assert_eq!(client("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }
}
