//! Exponential backoff after failed logins, per account, per known device
//! and per client address.
//!
//! The state is a small value the caller keeps (in memory or a store); these
//! functions only compute. A few free failures are allowed, then each further
//! failure doubles the wait up to a cap; a quiet period forgets the failures.

use crate::{Micros, MICROS_PER_SECOND};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed before any wait is imposed.
    pub free_failures: u32,
    /// The first wait, in seconds; each further failure doubles it.
    pub base_delay_secs: i64,
    /// The longest wait, in seconds.
    pub max_delay_secs: i64,
    /// After this long without a failure the record is forgotten.
    pub forget_after_secs: i64,
}

impl ThrottlePolicy {
    /// Per account: a person mistyping a few times is not slowed down.
    pub const ACCOUNT: ThrottlePolicy = ThrottlePolicy {
        free_failures: 5,
        base_delay_secs: 2,
        max_delay_secs: 15 * 60,
        forget_after_secs: 60 * 60,
    };

    /// Per known device (a client that logged in to the account before and
    /// holds its device cookie): its own allowance, as lenient as the
    /// account's, so the owner's typos are treated the same.
    pub const DEVICE: ThrottlePolicy = ThrottlePolicy {
        free_failures: 5,
        base_delay_secs: 2,
        max_delay_secs: 15 * 60,
        forget_after_secs: 60 * 60,
    };

    /// Per client address: more lenient, since many people may share one
    /// address behind NAT, but it stops one client spraying many accounts.
    pub const CLIENT: ThrottlePolicy = ThrottlePolicy {
        free_failures: 20,
        base_delay_secs: 1,
        max_delay_secs: 15 * 60,
        forget_after_secs: 60 * 60,
    };
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureRecord {
    pub failures: u32,
    pub last_failure_at: Micros,
    pub blocked_until: Micros,
}

impl FailureRecord {
    /// Whether this record says nothing any more and can be dropped.
    pub fn is_stale(&self, policy: &ThrottlePolicy, now: Micros) -> bool {
        now >= self.blocked_until
            && now.saturating_sub(self.last_failure_at)
                >= policy.forget_after_secs * MICROS_PER_SECOND
    }
}

impl ThrottlePolicy {
    /// `Err(seconds)` when an attempt must wait that many more seconds.
    pub fn check(&self, record: Option<&FailureRecord>, now: Micros) -> Result<(), i64> {
        match record {
            Some(r) if now < r.blocked_until => {
                let wait = r.blocked_until - now;
                Err(((wait + MICROS_PER_SECOND - 1) / MICROS_PER_SECOND).max(1))
            }
            _ => Ok(()),
        }
    }

    /// The record after one more failure at `now`.
    pub fn record_failure(&self, record: Option<FailureRecord>, now: Micros) -> FailureRecord {
        let previous = record
            .filter(|r| !r.is_stale(self, now))
            .unwrap_or_default();
        let failures = previous.failures.saturating_add(1);
        let blocked_until = match failures.checked_sub(self.free_failures) {
            None | Some(0) => previous.blocked_until,
            Some(over) => now + self.delay_secs(over) * MICROS_PER_SECOND,
        };
        FailureRecord {
            failures,
            last_failure_at: now,
            blocked_until,
        }
    }

    /// The wait after the `over`-th failure beyond the free ones.
    fn delay_secs(&self, over: u32) -> i64 {
        let doublings = over.saturating_sub(1).min(30);
        self.base_delay_secs
            .saturating_mul(1_i64 << doublings)
            .min(self.max_delay_secs)
    }
}

/// A login attempt's records, as the caller found them.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttemptRecords<'a> {
    /// The client address's record.
    pub client: Option<&'a FailureRecord>,
    /// The account's records (its normalised name, and its stable subject
    /// once known): the longest wait counts.
    pub account: &'a [Option<FailureRecord>],
    /// `Some` when the client holds a device cookie for this account: then
    /// its own record counts instead of the account's.
    pub device: Option<Option<&'a FailureRecord>>,
}

/// `Err(seconds)` when the attempt must wait: the per-address limit always
/// applies; a known client (OWASP device cookie) is judged by its device's
/// own allowance, so a flood against the account cannot lock it out, and
/// anyone else by the account's.
pub fn attempt_wait(r: AttemptRecords<'_>, now: Micros) -> Result<(), i64> {
    let client = ThrottlePolicy::CLIENT.check(r.client, now).err();
    let own = match r.device {
        Some(device) => ThrottlePolicy::DEVICE.check(device, now).err(),
        None => r
            .account
            .iter()
            .filter_map(|a| ThrottlePolicy::ACCOUNT.check(a.as_ref(), now).err())
            .max(),
    };
    match client.max(own) {
        Some(w) => Err(w),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Micros = MICROS_PER_SECOND;

    fn fail_n(policy: &ThrottlePolicy, n: u32, now: Micros) -> Option<FailureRecord> {
        let mut r = None;
        for _ in 0..n {
            r = Some(policy.record_failure(r, now));
        }
        r
    }

    #[test]
    fn free_failures_impose_no_wait() {
        let p = ThrottlePolicy::ACCOUNT;
        let r = fail_n(&p, 5, 0);
        assert_eq!(p.check(r.as_ref(), 0), Ok(()));
    }

    #[test]
    fn each_further_failure_doubles_the_wait() {
        let p = ThrottlePolicy::ACCOUNT;
        let r = fail_n(&p, 6, 0);
        assert_eq!(p.check(r.as_ref(), 0), Err(2));
        let r = fail_n(&p, 7, 0);
        assert_eq!(p.check(r.as_ref(), 0), Err(4));
        let r = fail_n(&p, 8, 0);
        assert_eq!(p.check(r.as_ref(), 0), Err(8));
    }

    #[test]
    fn the_wait_is_capped() {
        let p = ThrottlePolicy::ACCOUNT;
        let r = fail_n(&p, 100, 0);
        assert_eq!(p.check(r.as_ref(), 0), Err(p.max_delay_secs));
    }

    #[test]
    fn the_wait_ends() {
        let p = ThrottlePolicy::ACCOUNT;
        let r = fail_n(&p, 6, 0);
        assert_eq!(p.check(r.as_ref(), 2 * S), Ok(()));
        assert_eq!(p.check(r.as_ref(), S), Err(1));
    }

    #[test]
    fn a_quiet_hour_forgets_failures() {
        let p = ThrottlePolicy::ACCOUNT;
        let r = fail_n(&p, 6, 0);
        let later = p.record_failure(r, 3_600 * S);
        assert_eq!(later.failures, 1);
        assert_eq!(p.check(Some(&later), 3_600 * S), Ok(()));
    }

    #[test]
    fn an_unknown_client_waits_for_the_account_a_known_one_for_its_device() {
        let locked = fail_n(&ThrottlePolicy::ACCOUNT, 10, 0);
        let accounts = [None, locked];
        let unknown = AttemptRecords {
            client: None,
            account: &accounts,
            device: None,
        };
        assert!(attempt_wait(unknown, 0).is_err());
        let known = AttemptRecords {
            device: Some(None),
            ..unknown
        };
        assert_eq!(attempt_wait(known, 0), Ok(()));
        let tired = fail_n(&ThrottlePolicy::DEVICE, 10, 0);
        let known_but_failing = AttemptRecords {
            device: Some(tired.as_ref()),
            ..unknown
        };
        assert!(attempt_wait(known_but_failing, 0).is_err());
    }

    #[test]
    fn the_address_limit_applies_to_known_clients_too() {
        let busy = fail_n(&ThrottlePolicy::CLIENT, 30, 0);
        let r = AttemptRecords {
            client: busy.as_ref(),
            account: &[],
            device: Some(None),
        };
        assert!(attempt_wait(r, 0).is_err());
        assert_eq!(
            attempt_wait(AttemptRecords { client: None, ..r }, 0),
            Ok(())
        );
    }

    #[test]
    fn the_longest_account_wait_counts() {
        let a = fail_n(&ThrottlePolicy::ACCOUNT, 6, 0);
        let b = fail_n(&ThrottlePolicy::ACCOUNT, 9, 0);
        let accounts = [a, b];
        let r = AttemptRecords {
            client: None,
            account: &accounts,
            device: None,
        };
        assert_eq!(attempt_wait(r, 0), Err(16));
    }

    proptest! {
        #[test]
        fn more_failures_never_wait_less(n in 0u32..200) {
            let p = ThrottlePolicy::CLIENT;
            let wait = |k| p.check(fail_n(&p, k, 0).as_ref(), 0).err().unwrap_or(0);
            prop_assert!(wait(n + 1) >= wait(n));
            prop_assert!(wait(n + 1) <= p.max_delay_secs);
        }
    }
}
