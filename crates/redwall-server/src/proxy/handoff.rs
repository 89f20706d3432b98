//! Browser sessions on instance host names.
//!
//! An instance at `{name}.{domain}` shares no cookies with the console (that
//! is the point of host routing), so a browser is handed over: the console
//! mints a one-minute, single-use code naming the user's console session
//! and the instance; the instance host trades it for its own cookie. That
//! cookie is sealed and names the console session, so it lives exactly as
//! long as that session: logging out of the console, idle or absolute
//! expiry, or "log out everywhere" end it too. It opens on that instance
//! only, and the proxy strips it before Node-RED sees the request.

use crate::auth::session::PLAIN_COOKIE;
use crate::state::AppState;
use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub const SECURE_COOKIE: &str = "__Host-redwall_instance";
pub const PLAIN_INSTANCE_COOKIE: &str = "redwall_instance";
pub const CALLBACK_PATH: &str = "/_redwall/callback";
/// Paths under this prefix on an instance host belong to Redwall.
pub const RESERVED_PREFIX: &str = "/_redwall/";
const CODE_SECS: i64 = 60;
const SEALER: &str = "instance-handoff";

#[derive(Serialize, Deserialize)]
struct Code {
    /// The console session's cookie value.
    t: String,
    i: String,
    e: i64,
    n: String,
}

#[derive(Serialize, Deserialize)]
struct Pass {
    t: String,
    i: String,
}

fn seal(state: &AppState, value: &impl Serialize, aad: &[u8]) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(state.keyring.sealer(SEALER).seal(&json, aad))
}

fn open<T: for<'a> Deserialize<'a>>(state: &AppState, text: &str, aad: &[u8]) -> Option<T> {
    let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
    let plain = state.keyring.sealer(SEALER).open(&raw, aad).ok()?;
    serde_json::from_slice(&plain).ok()
}

pub fn mint_code(state: &AppState, console_token: &str, instance: &str) -> String {
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let code = Code {
        t: console_token.to_string(),
        i: instance.to_string(),
        e: super::unix_now() + CODE_SECS,
        n: hex::encode(nonce),
    };
    seal(state, &code, b"code")
}

/// The console session a code names, once: a replayed code is refused.
pub fn redeem_code(state: &AppState, code: &str, instance: &str) -> Option<String> {
    let c: Code = open(state, code, b"code")?;
    if c.i != instance || c.e < super::unix_now() {
        return None;
    }
    let now = state.now();
    if state.used_handoff_codes.get(&c.n, now).is_some() {
        return None;
    }
    state.used_handoff_codes.insert(c.n, (), now);
    Some(c.t)
}

pub fn pass_cookie(
    state: &AppState,
    console_token: &str,
    instance: &str,
    https: bool,
) -> Option<HeaderValue> {
    let pass = seal(
        state,
        &Pass {
            t: console_token.to_string(),
            i: instance.to_string(),
        },
        instance.as_bytes(),
    );
    let text = if https {
        format!("{SECURE_COOKIE}={pass}; Path=/; HttpOnly; Secure; SameSite=Lax")
    } else {
        format!("{PLAIN_INSTANCE_COOKIE}={pass}; Path=/; HttpOnly; SameSite=Lax")
    };
    HeaderValue::from_str(&text).ok()
}

/// Replaces an instance pass in the Cookie header by the console session it
/// names, so the one session lookup serves both routings. The proxy strips
/// both before forwarding. Over HTTPS only the `__Host-` pass counts, and
/// the session it names comes first, ahead of any the client sent itself.
pub fn unwrap_pass(state: &AppState, headers: &mut HeaderMap, instance: &str, https: bool) {
    let wanted = if https {
        SECURE_COOKIE
    } else {
        PLAIN_INSTANCE_COOKIE
    };
    let console = crate::net::cookies::value(headers, wanted)
        .and_then(|val| open::<Pass>(state, &val, instance.as_bytes()))
        .filter(|p| p.i == instance)
        .map(|p| p.t);
    let Some(token) = console else {
        return;
    };
    let name = if https {
        crate::auth::session::SECURE_COOKIE
    } else {
        PLAIN_COOKIE
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={token}")) {
        let sent: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
        headers.insert(header::COOKIE, v);
        for other in sent {
            headers.append(header::COOKIE, other);
        }
    }
}

/// A value percent-encoded for a query string.
pub fn encode_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
