//! Device cookies (OWASP "Slow down online guessing attacks with device
//! cookies"): a client that logged in to an account before gets a cookie
//! sealed with the master keyring naming that account, the channel it logged
//! in on, an expiry and a random device id. While it holds one, its failures
//! count against that device's own allowance, not the account's, so a flood
//! of wrong passwords from elsewhere cannot lock the owner out.
//!
//! Nothing is stored: any hub replica with the keyring can check one. A
//! cookie is not a credential (the password is still needed), only the
//! right to a separate failure count; a stolen one gets its thief just one
//! device's allowance, for one account.

use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine;
use rand::RngCore;
use redwall_policy::{Micros, MICROS_PER_SECOND};
use serde::{Deserialize, Serialize};

/// How long a device stays known after its last successful login.
pub const LIFETIME_SECS: i64 = 30 * 24 * 3600;
/// Longest cookie value read (a sealed payload is far shorter).
const MAX_VALUE_BYTES: usize = 512;

pub use redwall_hub::throttle::Channel;

/// Under HTTPS only the `__Host-` name counts (a sibling host cannot set it).
fn cookie_name(channel: Channel, https: bool) -> &'static str {
    match (channel, https) {
        (Channel::Console, true) => "__Host-redwall_device",
        (Channel::Console, false) => "redwall_device",
        (Channel::Endpoint, true) => "__Host-redwall_endpoint_device",
        (Channel::Endpoint, false) => "redwall_endpoint_device",
    }
}

fn purpose(channel: Channel) -> String {
    format!("device-cookie:{}", channel.as_str())
}

#[derive(Serialize, Deserialize)]
struct Payload {
    /// The Redwall user id this device logged in as.
    u: String,
    /// Expiry, microseconds.
    e: Micros,
    /// Random device id.
    d: String,
}

pub use redwall_hub::throttle::Device;

/// The console's device cookie in the request, if valid now.
pub fn console(state: &AppState, headers: &HeaderMap, client: &ClientInfo) -> Option<Device> {
    read(state, headers, Channel::Console, client.https, state.now())
}

/// The device cookie of `channel` in the request, if it opens and has not expired.
pub fn read(
    state: &AppState,
    headers: &HeaderMap,
    channel: Channel,
    https: bool,
    now: Micros,
) -> Option<Device> {
    let name = cookie_name(channel, https);
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })?;
    if value.len() > MAX_VALUE_BYTES {
        return None;
    }
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()?;
    let purpose = purpose(channel);
    let plain = state
        .keyring
        .sealer(&purpose)
        .open(&sealed, purpose.as_bytes())
        .ok()?;
    let p: Payload = serde_json::from_slice(&plain).ok()?;
    (now < p.e).then_some(Device::new(p.u, p.d))
}

/// A fresh cookie for a client that just logged in as `user_id`; a device
/// already known keeps its id (and so its own failure record).
pub fn issue(
    state: &AppState,
    channel: Channel,
    https: bool,
    user_id: &str,
    known: Option<&Device>,
    now: Micros,
) -> Option<HeaderValue> {
    let id = match known.filter(|d| d.user_id() == user_id) {
        Some(d) => d.id().to_string(),
        None => {
            let mut raw = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            hex::encode(raw)
        }
    };
    let payload = Payload {
        u: user_id.to_string(),
        e: now + LIFETIME_SECS * MICROS_PER_SECOND,
        d: id,
    };
    let plain = serde_json::to_vec(&payload).ok()?;
    let purpose = purpose(channel);
    let sealed = state
        .keyring
        .sealer(&purpose)
        .seal(&plain, purpose.as_bytes());
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={LIFETIME_SECS}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(channel, https)
    ))
    .ok()
}
