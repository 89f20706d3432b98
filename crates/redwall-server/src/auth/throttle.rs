//! In-memory login failure records, per account and per client address, with
//! the backoff rules of `redwall_policy::throttle`.

use redwall_policy::throttle::{FailureRecord, ThrottlePolicy};
use redwall_policy::Micros;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const MAX_RECORDS: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, FailureRecord>>,
    clients: Mutex<HashMap<IpAddr, FailureRecord>>,
}

impl LoginThrottle {
    /// `Err(seconds)` when the account or the client must wait.
    pub fn check(&self, account: &str, client: IpAddr, now: Micros) -> Result<(), i64> {
        let a = self
            .accounts
            .lock()
            .ok()
            .and_then(|m| m.get(&account_key(account)).copied());
        let c = self
            .clients
            .lock()
            .ok()
            .and_then(|m| m.get(&client).copied());
        let wait_a = ThrottlePolicy::ACCOUNT.check(a.as_ref(), now).err();
        let wait_c = ThrottlePolicy::CLIENT.check(c.as_ref(), now).err();
        match wait_a.max(wait_c) {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, account: &str, client: IpAddr, now: Micros) {
        if let Ok(mut m) = self.accounts.lock() {
            prune(&mut m, &ThrottlePolicy::ACCOUNT, now);
            let key = account_key(account);
            let next = ThrottlePolicy::ACCOUNT.record_failure(m.get(&key).copied(), now);
            m.insert(key, next);
        }
        self.record_client_failure(client, now);
    }

    /// For credentials that name no account (tokens, the setup token): only
    /// the client address is throttled, so one client's guessing cannot lock
    /// anyone else out.
    pub fn check_client(&self, client: IpAddr, now: Micros) -> Result<(), i64> {
        let c = self
            .clients
            .lock()
            .ok()
            .and_then(|m| m.get(&client).copied());
        ThrottlePolicy::CLIENT.check(c.as_ref(), now)
    }

    pub fn record_client_failure(&self, client: IpAddr, now: Micros) {
        if let Ok(mut m) = self.clients.lock() {
            prune(&mut m, &ThrottlePolicy::CLIENT, now);
            let next = ThrottlePolicy::CLIENT.record_failure(m.get(&client).copied(), now);
            m.insert(client, next);
        }
    }

    /// A successful login clears the account's record. The client's record
    /// stays: otherwise one valid account would reset a password sprayer.
    pub fn record_success(&self, account: &str) {
        if let Ok(mut m) = self.accounts.lock() {
            m.remove(&account_key(account));
        }
    }
}

fn account_key(account: &str) -> String {
    account.to_lowercase()
}

fn prune<K>(map: &mut HashMap<K, FailureRecord>, policy: &ThrottlePolicy, now: Micros) {
    if map.len() >= MAX_RECORDS {
        map.retain(|_, r| !r.is_stale(policy, now));
    }
}
