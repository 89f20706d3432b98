//! Session cookies: an opaque 256-bit id, stored only as its SHA-256
//! digest; the sessions themselves are the hub's (`redwall_hub::sessions`).

use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::{AppState, CachedSession};
use axum::http::{HeaderMap, HeaderValue};

/// Under HTTPS the `__Host-` prefix makes browsers refuse the cookie unless it
/// is Secure, host-only and for path `/`.
pub const SECURE_COOKIE: &str = "__Host-redwall_session";
/// Plain HTTP is only allowed on loopback; browsers drop Secure cookies there.
pub const PLAIN_COOKIE: &str = "redwall_session";

/// The session id from the Cookie headers: over HTTPS only from the
/// `__Host-` cookie, which no other host (a sibling subdomain, an
/// instance) and no plain-HTTP page can set, so a planted session cannot
/// log a browser in as someone else. Works on bytes, so another
/// application's non-ASCII cookie on the same host cannot hide ours.
pub fn cookie_token(headers: &HeaderMap, https: bool) -> Option<String> {
    let wanted = if https { SECURE_COOKIE } else { PLAIN_COOKIE };
    crate::net::cookies::value(headers, wanted)
}

pub fn set_cookie(token: &str, https: bool, max_age_secs: i64) -> ApiResult<HeaderValue> {
    let text = if https {
        format!("{SECURE_COOKIE}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Lax")
    } else {
        format!("{PLAIN_COOKIE}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax")
    };
    HeaderValue::from_str(&text).map_err(ApiError::internal)
}

/// Carries an MFA challenge from a single sign-on callback to the console's
/// code step, so the challenge never appears in a URL.
pub fn mfa_challenge_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-redwall_mfa"
    } else {
        "redwall_mfa"
    }
}

pub fn mfa_challenge_cookie(token: &str, https: bool, max_age_secs: i64) -> ApiResult<HeaderValue> {
    let secure = if https { "; Secure" } else { "" };
    let text = format!(
        "{}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}",
        mfa_challenge_cookie_name(https)
    );
    HeaderValue::from_str(&text).map_err(ApiError::internal)
}

pub fn clear_cookie(https: bool) -> HeaderValue {
    if https {
        HeaderValue::from_static(
            "__Host-redwall_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        )
    } else {
        HeaderValue::from_static("redwall_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
    }
}

/// The live session for a cookie value, or `None` when it is unknown or
/// expired (an expired one is ended and the expiry audited).
pub async fn lookup(
    state: &AppState,
    cookie_value: &str,
    client: &ClientInfo,
) -> ApiResult<Option<CachedSession>> {
    let origin = client.origin();
    let who = redwall_hub::Who::anonymous(&origin);
    Ok(state.hub.live_session(who, cookie_value).await?)
}
