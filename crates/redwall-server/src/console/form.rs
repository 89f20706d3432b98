//! Form posts: parsing, the CSRF checks, and the double-submit guard.
//!
//! Signed-in forms carry the session's CSRF token (the API's own, derived
//! from the session), which the console passes to the API as its header, so
//! the API's guard judges it. Forms shown before a session exists (setup,
//! login) carry a token tied to a random pre-session cookie instead, so
//! another site cannot log a browser into an account of its choosing.

use crate::auth::csrf;
use crate::net::client::ClientInfo;
use crate::ttl_cache::TtlCache;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use redwall_crypto::keyring::Keyring;
use redwall_policy::{Micros, MICROS_PER_SECOND};
use std::collections::HashMap;

/// The longest form body the console reads; larger posts are refused.
pub const MAX_FORM_BYTES: usize = 256 * 1024;

pub struct Form {
    fields: HashMap<String, String>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        let mut fields = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            // The first value wins, so an appended duplicate changes nothing.
            fields
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
        Form { fields }
    }

    /// A field's value, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.fields
            .get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    /// A field's value exactly as typed (passwords and secrets).
    pub fn raw(&self, name: &str) -> String {
        self.fields.get(name).cloned().unwrap_or_default()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|v| !v.is_empty())
    }

    /// All values of a repeated field, in order (checkbox groups, table rows).
    pub fn all(body: &[u8], name: &str) -> Vec<String> {
        form_urlencoded::parse(body)
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// The cookie that ties a pre-session form to this browser.
pub fn pre_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-redwall_form"
    } else {
        "redwall_form"
    }
}

pub fn pre_cookie_value(headers: &HeaderMap, https: bool) -> Option<String> {
    cookie_value(headers, pre_cookie_name(https)).filter(|v| v.len() >= 32 && v.len() <= 64)
}

/// A cookie's value from the request, by exact name; none when empty or
/// implausibly long.
pub fn cookie_value(headers: &HeaderMap, wanted: &str) -> Option<String> {
    crate::net::cookies::value(headers, wanted).filter(|v| !v.is_empty() && v.len() <= 4096)
}

/// A new pre-session cookie value and its Set-Cookie header.
pub fn new_pre_cookie(https: bool) -> (String, Option<HeaderValue>) {
    let value = redwall_crypto::token::new_token("").expose().to_string();
    let secure = if https { "; Secure" } else { "" };
    let header = HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict{secure}",
        pre_cookie_name(https)
    ))
    .ok();
    (value, header)
}

pub fn pre_session_token(keyring: &Keyring, cookie: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(keyring.keyed_digest("console-form", cookie.as_bytes()))
}

/// A pre-session form is genuine when it carries the token of this
/// browser's cookie and does not come from another site.
pub fn pre_session_ok(
    keyring: &Keyring,
    headers: &HeaderMap,
    client: &ClientInfo,
    presented: &str,
) -> bool {
    let Some(cookie) = pre_cookie_value(headers, client.https) else {
        return false;
    };
    let expected = pre_session_token(keyring, &cookie);
    redwall_crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes())
        && csrf::origin_matches_host(headers)
}

/// A signed-in form is genuine when its token is the session's.
pub fn session_form_ok(
    keyring: &Keyring,
    headers: &HeaderMap,
    https: bool,
    presented: &str,
) -> bool {
    let Some(cookie) = crate::auth::session::cookie_token(headers, https) else {
        return false;
    };
    let expected = csrf::token_for_session(keyring, &cookie);
    redwall_crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes())
        && csrf::origin_matches_host(headers)
}

/// Remembers which rendered forms were already submitted, so a double
/// click or a reload of the POST lands where the first submit went instead
/// of creating a second thing.
pub struct Submissions {
    seen: TtlCache<[u8; 32], Outcome>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first submit is still being handled.
    InFlight,
    /// It finished and redirected here.
    Done(String),
}

const SUBMISSION_TTL: Micros = 15 * 60 * MICROS_PER_SECOND;

impl Default for Submissions {
    fn default() -> Self {
        Submissions {
            seen: TtlCache::new(SUBMISSION_TTL, 100_000),
        }
    }
}

impl Submissions {
    /// Claims a form instance; `Some` when it was submitted before.
    pub fn claim(&self, key: [u8; 32], now: Micros) -> Option<Outcome> {
        if let Some(previous) = self.seen.get(&key, now) {
            return Some(previous);
        }
        self.seen.insert(key, Outcome::InFlight, now);
        None
    }

    pub fn finish(&self, key: [u8; 32], outcome: Option<String>, now: Micros) {
        match outcome {
            Some(location) => self.seen.insert(key, Outcome::Done(location), now),
            // A refused submit may be corrected and sent again.
            None => self.seen.remove(&key),
        }
    }
}

/// The key a submission is remembered by: the form's random id, bound to
/// the session so one user's id means nothing in another session.
/// The key a submission is remembered by: the session's CSRF token, the
/// rendered form's id (16 to 64 characters; checked alone, since the path
/// of a team's page is long itself) and the path it was sent to.
pub fn submission_key(
    keyring: &Keyring,
    csrf_token: &str,
    form_id: &str,
    path: &str,
) -> Option<[u8; 32]> {
    if form_id.len() < 16 || form_id.len() > 64 {
        return None;
    }
    Some(keyring.keyed_digest(
        "console-submit",
        format!("{csrf_token}\n{form_id}\n{path}").as_bytes(),
    ))
}
