//! Login failure records per account, per known device and per client
//! address, judged by `redwall_policy::throttle`.
//!
//! Accounts are keyed by channel (console and API login, or an instance's
//! `basic` route: neither can lock out the other), by realm (local, or one
//! directory), and by the normalised name the directory would match
//! (`redwall_policy::login_name`) and, once resolved, by the account's
//! stable subject. A client holding a device cookie for the account
//! (`auth/device.rs`) is counted on its own record instead.
//!
//! The records live in this process's memory, as before: a second hub
//! replica would need them in a shared store (a table keyed like these maps,
//! or Redis) with an atomic read-modify-write per failure. The device
//! cookies themselves need nothing shared but the master keyring.

use redwall_policy::login_name::throttle_name;
use redwall_policy::throttle::{attempt_wait, AttemptRecords, FailureRecord, ThrottlePolicy};
use redwall_policy::Micros;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const MAX_RECORDS: usize = 100_000;
/// Longest normalised name kept as a key (no login name is longer).
const MAX_NAME_CHARS: usize = 256;

/// Where the login happened: the console and API login, or an instance's
/// `basic` route. Each has its own cookie and its own throttle records, so
/// one cannot lock out the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Console,
    Endpoint,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Console => "console",
            Channel::Endpoint => "endpoint",
        }
    }
}

/// A device cookie the client presented, opened and unexpired: the user it
/// last signed in as, and its random id.
#[derive(Clone, Debug)]
pub struct Device {
    user_id: String,
    id: String,
}

impl Device {
    pub fn new(user_id: String, id: String) -> Device {
        Device { user_id, id }
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The throttle's name for this device, when it is known for `user_id`.
    pub fn known_for(&self, user_id: &str) -> Option<String> {
        (self.user_id == user_id).then(|| format!("device:{}", self.id))
    }
}

/// One login attempt, as the throttle counts it.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The account's keys: its name and, once known, its subject.
    pub accounts: Vec<String>,
    pub client: IpAddr,
    /// The client's device, when its device cookie is for this account.
    pub device: Option<String>,
}

impl Attempt {
    pub fn new(client: IpAddr, name_key: String) -> Attempt {
        Attempt {
            accounts: vec![name_key],
            client,
            device: None,
        }
    }

    /// The directory or the user table resolved the account.
    pub fn resolved(&mut self, subject_key: String, device: Option<String>) {
        if !self.accounts.contains(&subject_key) {
            self.accounts.push(subject_key);
        }
        self.device = device;
    }

    /// A signed-in user confirming their password (to change it, or to turn
    /// MFA off): counted apart from logins, which a stranger can flood, since
    /// only someone holding the session can fail here.
    pub fn reauthentication(client: IpAddr, user_id: &str) -> Attempt {
        Attempt::new(client, subject_key(Channel::Console, "reauth", user_id))
    }

    pub fn known(&self) -> bool {
        self.device.is_some()
    }

    pub fn priority(&self) -> crate::hash_gate::Priority {
        if self.known() {
            crate::hash_gate::Priority::Known
        } else {
            crate::hash_gate::Priority::Unknown
        }
    }
}

/// The key of a login name in `realm` ("local", or "ldap:{provider}").
pub fn name_key(channel: Channel, realm: &str, name: &str) -> String {
    let name: String = throttle_name(name).chars().take(MAX_NAME_CHARS).collect();
    format!("{}:{realm}:name:{name}", channel.as_str())
}

/// The key of a resolved account: a user id, or a directory's subject.
pub fn subject_key(channel: Channel, realm: &str, subject: &str) -> String {
    format!("{}:{realm}:subject:{subject}", channel.as_str())
}

#[derive(Default)]
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, FailureRecord>>,
    devices: Mutex<HashMap<String, FailureRecord>>,
    clients: Mutex<HashMap<IpAddr, FailureRecord>>,
}

impl LoginThrottle {
    /// `Err(seconds)` when the attempt must wait.
    pub fn check(&self, a: &Attempt, now: Micros) -> Result<(), i64> {
        let client = self.client_record(a.client);
        let account: Vec<Option<FailureRecord>> = match self.accounts.lock() {
            Ok(m) => a.accounts.iter().map(|k| m.get(k).copied()).collect(),
            Err(_) => Vec::new(),
        };
        let device = a
            .device
            .as_ref()
            .map(|d| self.devices.lock().ok().and_then(|m| m.get(d).copied()));
        attempt_wait(
            AttemptRecords {
                client: client.as_ref(),
                account: &account,
                device: device.as_ref().map(Option::as_ref),
            },
            now,
        )
    }

    pub fn record_failure(&self, a: &Attempt, now: Micros) {
        match &a.device {
            Some(d) => record(&self.devices, d.clone(), &ThrottlePolicy::DEVICE, now),
            None => {
                for k in &a.accounts {
                    record(&self.accounts, k.clone(), &ThrottlePolicy::ACCOUNT, now);
                }
            }
        }
        self.record_client_failure(a.client, now);
    }

    /// A known device's success clears only its own record; anyone else's
    /// clears the account's (it was not locked, or it would not have got
    /// this far). The client's record stays: otherwise one valid account
    /// would reset a password sprayer.
    pub fn record_success(&self, a: &Attempt) {
        match &a.device {
            Some(d) => {
                if let Ok(mut m) = self.devices.lock() {
                    m.remove(d);
                }
            }
            None => {
                if let Ok(mut m) = self.accounts.lock() {
                    for k in &a.accounts {
                        m.remove(k);
                    }
                }
            }
        }
    }

    /// For credentials that name no account (tokens, the setup token): only
    /// the client address is throttled, so one client's guessing cannot lock
    /// anyone else out.
    pub fn check_client(&self, client: IpAddr, now: Micros) -> Result<(), i64> {
        ThrottlePolicy::CLIENT.check(self.client_record(client).as_ref(), now)
    }

    pub fn record_client_failure(&self, client: IpAddr, now: Micros) {
        record(&self.clients, client, &ThrottlePolicy::CLIENT, now);
    }

    fn client_record(&self, client: IpAddr) -> Option<FailureRecord> {
        self.clients
            .lock()
            .ok()
            .and_then(|m| m.get(&client).copied())
    }
}

fn record<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, FailureRecord>>,
    key: K,
    policy: &ThrottlePolicy,
    now: Micros,
) {
    if let Ok(mut m) = map.lock() {
        if m.len() >= MAX_RECORDS {
            m.retain(|_, r| !r.is_stale(policy, now));
        }
        let next = policy.record_failure(m.get(&key).copied(), now);
        m.insert(key, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    #[test]
    fn spellings_share_one_record_and_a_known_device_its_own() {
        let t = LoginThrottle::default();
        for i in 0..10 {
            let a = Attempt::new(ip(i), name_key(Channel::Console, "local", "bob"));
            t.record_failure(&a, 0);
        }
        for spelling in ["bob", " BOB", "bob    "] {
            let a = Attempt::new(ip(50), name_key(Channel::Console, "local", spelling));
            assert!(t.check(&a, 0).is_err(), "{spelling:?}");
        }
        let mut known = Attempt::new(ip(51), name_key(Channel::Console, "local", "bob"));
        known.resolved(
            subject_key(Channel::Console, "local", "u1"),
            Some("device:d1".into()),
        );
        assert_eq!(t.check(&known, 0), Ok(()));
        let other = Attempt::new(ip(52), name_key(Channel::Endpoint, "local", "bob"));
        assert_eq!(t.check(&other, 0), Ok(()), "channels are separate");
    }

    #[test]
    fn a_resolved_subject_is_locked_whatever_the_name() {
        let t = LoginThrottle::default();
        for i in 0..10 {
            let mut a = Attempt::new(ip(i), name_key(Channel::Console, "ldap:corp", "bob"));
            a.resolved(subject_key(Channel::Console, "ldap:corp", "uuid-1"), None);
            t.record_failure(&a, 0);
        }
        let mut odd = Attempt::new(ip(60), name_key(Channel::Console, "ldap:corp", "b-o-b"));
        assert_eq!(t.check(&odd, 0), Ok(()));
        odd.resolved(subject_key(Channel::Console, "ldap:corp", "uuid-1"), None);
        assert!(t.check(&odd, 0).is_err());
    }
}
