//! OpenID Connect login: Authorization Code with PKCE (S256), `state` and
//! `nonce`, for any certified provider.
//!
//! - `start` seals what the callback must check (state, nonce, PKCE
//!   verifier, provider, redirect URI, where to go next) into a short-lived
//!   HttpOnly cookie, so any node can finish the login and an anonymous
//!   start keeps nothing on the server. A `state` is accepted once: its
//!   digest is recorded in the database until the cookie expires (shared by
//!   every replica), at most [`USED_STATES_PER_CLIENT`] per client address,
//!   so a flood from one address cannot crowd out anyone else's logins.
//! - `/start` and `/callback` are throttled per client address: each
//!   callback that does not log in counts as a failure (own counter, not the
//!   password logins'); refusals an anonymous client can cause at will are
//!   audited in aggregate (`sso::refusals`).
//! - The callback exchanges the code and verifies the ID token: an
//!   asymmetric signature from the provider's JWKS (never HS*, whose key
//!   would be our own client secret), issuer, audience and `azp`, expiry
//!   against Redwall's clock, nonce. Groups and the username come from the
//!   ID token or, when it lacks them, from UserInfo (same `sub` required).
//! - Discovery documents and key sets are cached for a few minutes; an ID
//!   token signed with an unknown `kid`, or whose signature does not verify
//!   with the cached key of its `kid` (a provider may rotate a key and keep
//!   its `kid`), makes Redwall refetch the key set once before refusing, at
//!   most once per [`KEY_REFETCH_INTERVAL`] per provider.
//!
//! The `openidconnect` crate pulls `rsa`, whose timing advisory
//! (RUSTSEC-2023-0071) concerns private-key operations: Redwall only
//! verifies signatures with public keys.

use crate::sso::config::OidcProvider;
use crate::sso::login::ExternalIdentity;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdToken, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use redwall_crypto::keyring::Keyring;
use redwall_crypto::Secret;
use redwall_policy::{Micros, MICROS_PER_SECOND};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a user has between leaving for the provider and coming back.
pub const LOGIN_COOKIE_SECS: i64 = 600;
/// Under HTTPS the `__Host-` prefix pins the cookie to our host and path `/`.
pub const SECURE_LOGIN_COOKIE: &str = "__Host-redwall_oidc";
pub const PLAIN_LOGIN_COOKIE: &str = "redwall_oidc";
/// Discovery and keys are re-read this often, so a provider's key rotation
/// or endpoint change is picked up without a restart.
const METADATA_TTL: Micros = 300 * MICROS_PER_SECOND;
/// Clock difference tolerated on the ID token's expiry.
const LEEWAY_SECS: i64 = 60;
/// Used states kept per client address (an IPv6 client's /64) while their
/// cookies live: far more logins than one address makes in 10 minutes,
/// and the most a flood from one address can make the table hold.
pub const USED_STATES_PER_CLIENT: i64 = 1000;
/// A signature failure refetches the provider's keys at most this often.
pub const KEY_REFETCH_INTERVAL: Micros = 30 * MICROS_PER_SECOND;
const SEAL_PURPOSE: &str = "oidc-login";
/// Signature algorithms accepted on ID tokens: asymmetric ones only.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

pub type Metadata = ProviderMetadataWithLogout;

pub use super::Failure;

impl Failure {
    /// The provider could not be reached, as opposed to a refused login.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.reason, "discovery_failed" | "timeout")
    }
}

/// What the OIDC flow keeps in memory on each node: caches (HTTP clients,
/// discovery documents with their keys), the per-address throttle and the
/// aggregated refusal counts. Nothing per login: used states are in the
/// database.
#[derive(Default)]
pub struct OidcState {
    http: Mutex<HashMap<String, reqwest::Client>>,
    metadata: Mutex<HashMap<String, (Micros, Arc<Metadata>)>>,
    /// provider -> when a signature failure last refetched its keys.
    key_refetches: Mutex<HashMap<String, Micros>>,
    /// Failed callbacks per client address (the login throttle's rules, its
    /// own records: OIDC refusals do not slow password logins).
    pub throttle: crate::auth::throttle::LoginThrottle,
}

/// What identifies a used state in the database: a keyed digest, so the
/// table says nothing about the states themselves.
pub fn state_digest(keyring: &Keyring, state: &str) -> String {
    hex::encode(keyring.keyed_digest("oidc-used-state", state.as_bytes()))
}

/// The client a used state is counted against: its address, or its /64
/// for IPv6 (one site or host usually holds a whole /64).
pub fn client_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl OidcState {
    fn client_for(&self, p: &OidcProvider) -> Result<reqwest::Client, Failure> {
        if let Some(c) = self.http.lock().ok().and_then(|m| m.get(&p.name).cloned()) {
            return Ok(c);
        }
        let c = http_client(p).map_err(|e| Failure::new("discovery_failed", e))?;
        if let Ok(mut m) = self.http.lock() {
            m.insert(p.name.clone(), c.clone());
        }
        Ok(c)
    }

    /// The provider's discovery document and keys, from the cache when fresh.
    pub async fn metadata(&self, p: &OidcProvider, now: Micros) -> Result<Arc<Metadata>, Failure> {
        let cached = self
            .metadata
            .lock()
            .ok()
            .and_then(|m| m.get(&p.name).cloned());
        if let Some((at, md)) = cached {
            if now.saturating_sub(at) < METADATA_TTL && now >= at {
                return Ok(md);
            }
        }
        let http = self.client_for(p)?;
        let md = Arc::new(discover(p, &http).await?);
        if let Ok(mut m) = self.metadata.lock() {
            m.insert(p.name.clone(), (now, md.clone()));
        }
        Ok(md)
    }

    /// After an ID token did not verify with the keys in `md`: keys newer
    /// than `md` when another login already refetched them, else the key set
    /// read again from the provider (it may have rotated its keys), unless
    /// that was done less than [`KEY_REFETCH_INTERVAL`] ago (`None`).
    async fn fresher_keys(
        &self,
        p: &OidcProvider,
        md: &Arc<Metadata>,
        now: Micros,
    ) -> Result<Option<Arc<Metadata>>, Failure> {
        let cached = self
            .metadata
            .lock()
            .ok()
            .and_then(|m| m.get(&p.name).map(|(_, c)| c.clone()));
        if let Some(c) = cached.filter(|c| !Arc::ptr_eq(c, md)) {
            return Ok(Some(c));
        }
        {
            let Ok(mut last) = self.key_refetches.lock() else {
                return Ok(None);
            };
            let recent = last
                .get(&p.name)
                .is_some_and(|at| now >= *at && now - *at < KEY_REFETCH_INTERVAL);
            if recent {
                return Ok(None);
            }
            last.insert(p.name.clone(), now);
        }
        self.refresh_keys(p, md, now).await.map(Some)
    }

    /// Reads the key set again and remembers it.
    async fn refresh_keys(
        &self,
        p: &OidcProvider,
        md: &Metadata,
        now: Micros,
    ) -> Result<Arc<Metadata>, Failure> {
        let http = self.client_for(p)?;
        let jwks = JsonWebKeySet::fetch_async(md.jwks_uri(), &http)
            .await
            .map_err(|e| classify_http("discovery_failed", &e))?;
        let md = Arc::new(md.clone().set_jwks(jwks));
        if let Ok(mut m) = self.metadata.lock() {
            m.insert(p.name.clone(), (now, md.clone()));
        }
        Ok(md)
    }
}

/// The HTTP client for one provider: its timeout, its extra CA, and no
/// redirects (the library's advice: a redirect could point the token
/// request anywhere).
pub fn http_client(p: &OidcProvider) -> Result<reqwest::Client, String> {
    let timeout = Duration::from_secs(p.timeout_secs.clamp(1, 300));
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("redwall/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &p.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no certificate", path.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// "timeout" when any error in the chain is a timeout, else `otherwise`.
fn classify_http(otherwise: &'static str, e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = e.to_string();
    while let Some(err) = cur {
        // The library keeps reqwest's error boxed: look for both shapes.
        let re = err.downcast_ref::<reqwest::Error>().or_else(|| {
            err.downcast_ref::<Box<reqwest::Error>>()
                .map(|b| b.as_ref())
        });
        if let Some(re) = re.filter(|re| re.is_timeout()) {
            return Failure::new("timeout", re.to_string());
        }
        cur = err.source();
        if let Some(next) = cur {
            text.push_str(": ");
            text.push_str(&next.to_string());
        }
    }
    Failure::new(otherwise, text)
}

async fn discover(p: &OidcProvider, http: &reqwest::Client) -> Result<Metadata, Failure> {
    let issuer = IssuerUrl::new(p.issuer.clone())
        .map_err(|e| Failure::new("discovery_failed", format!("issuer URL: {e}")))?;
    // The library checks that the document's issuer is exactly ours.
    Metadata::discover_async(issuer, http)
        .await
        .map_err(|e| classify_http("discovery_failed", &e))
}

/// The one-line outcome of reading a provider's discovery document and keys,
/// for `redwall config check`.
pub async fn check(p: &OidcProvider) -> Result<String, String> {
    let http = http_client(p).map_err(|e| format!("{}: {e}", p.name))?;
    match discover(p, &http).await {
        Ok(md) => Ok(format!(
            "{}: {} answers: {} signing key(s){}",
            p.name,
            p.issuer,
            md.jwks().keys().len(),
            if md.additional_metadata().end_session_endpoint.is_some() {
                ", RP-initiated logout"
            } else {
                ""
            }
        )),
        Err(f) => Err(format!(
            "{}: {} discovery {}: {}",
            p.name,
            p.issuer,
            if f.reason == "timeout" {
                "timed out"
            } else {
                "failed"
            },
            one_line(&f.detail)
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the login cookie holds (sealed: the client can neither read the
/// PKCE verifier nor change any of it).
#[derive(Serialize, Deserialize)]
pub struct PendingLogin {
    #[serde(rename = "p")]
    pub provider: String,
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub pkce_verifier: String,
    #[serde(rename = "r")]
    pub redirect_uri: String,
    #[serde(rename = "x")]
    pub next: String,
    #[serde(rename = "e")]
    pub expires: Micros,
}

impl PendingLogin {
    pub fn seal(&self, keyring: &Keyring) -> Result<String, String> {
        let plain = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        Ok(URL_SAFE_NO_PAD.encode(
            keyring
                .sealer(SEAL_PURPOSE)
                .seal(&plain, SEAL_PURPOSE.as_bytes()),
        ))
    }

    /// The pending login, if the cookie is ours, intact and not expired.
    pub fn open(keyring: &Keyring, cookie: &str, now: Micros) -> Option<PendingLogin> {
        if cookie.len() > 4096 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        let plain = keyring
            .sealer(SEAL_PURPOSE)
            .open(&raw, SEAL_PURPOSE.as_bytes())
            .ok()?;
        let p: PendingLogin = serde_json::from_slice(&plain).ok()?;
        (now < p.expires).then_some(p)
    }
}

/// Where to send the browser, and the login to remember in the cookie.
pub struct Started {
    pub authorize_url: String,
    pub pending: PendingLogin,
}

pub async fn start(
    oidc: &OidcState,
    p: &OidcProvider,
    redirect_uri: String,
    next: String,
    now: Micros,
) -> Result<Started, Failure> {
    let md = oidc.metadata(p, now).await?;
    let redirect = RedirectUrl::new(redirect_uri.clone())
        .map_err(|e| Failure::new("bad_redirect_uri", e.to_string()))?;
    let client =
        CoreClient::from_provider_metadata((*md).clone(), ClientId::new(p.client_id.clone()), None)
            .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    // The library always asks for `openid`.
    for s in p.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = req.url();
    Ok(Started {
        authorize_url: url.to_string(),
        pending: PendingLogin {
            provider: p.name.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            redirect_uri,
            next,
            expires: now + LOGIN_COOKIE_SECS * MICROS_PER_SECOND,
        },
    })
}

/// Exchanges the code and verifies what the provider says about the user.
pub async fn finish(
    oidc: &OidcState,
    p: &OidcProvider,
    client_secret: &Secret,
    pending: &PendingLogin,
    code: &str,
    now: Micros,
) -> Result<ExternalIdentity, Failure> {
    let md = oidc.metadata(p, now).await?;
    let http = oidc.client_for(p)?;
    let client = oidc_client(p, &md, client_secret, &pending.redirect_uri)?;
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| Failure::new("token_exchange_failed", e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&http)
        .await
        .map_err(|e| classify_http("token_exchange_failed", &e))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| Failure::new("token_exchange_failed", "no ID token in the answer"))?;
    let nonce = Nonce::new(pending.nonce.clone());
    let (sub, issuer) = match verify_id_token(p, &md, id_token, &nonce, now) {
        Err(e @ (SignatureOrOther::UnknownKey | SignatureOrOther::BadSignature(_))) => {
            match oidc.fresher_keys(p, &md, now).await? {
                Some(newer) => verify_id_token(p, &newer, id_token, &nonce, now)
                    .map_err(SignatureOrOther::failure)?,
                None => return Err(e.failure()),
            }
        }
        other => other.map_err(SignatureOrOther::failure)?,
    };
    let mut claims = payload_claims(id_token)?;
    let wanted = [p.groups_claim.as_str(), p.username_claim.as_str()];
    if wanted.iter().any(|c| !claims.contains_key(*c)) {
        if let Some(endpoint) = md.userinfo_endpoint() {
            let info = userinfo(
                &http,
                endpoint.url().as_str(),
                token.access_token().secret(),
            )
            .await?;
            // UserInfo must be about the same person (OIDC Core 5.3.2).
            if info.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
                return Err(Failure::new(
                    "userinfo_mismatch",
                    "UserInfo names another subject",
                ));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
    }
    Ok(ExternalIdentity {
        provider: p.name.clone(),
        subject: format!("{issuer}#{sub}"),
        username: claims
            .get(&p.username_claim)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups: groups_of(claims.get(&p.groups_claim)),
    })
}

fn oidc_client(
    p: &OidcProvider,
    md: &Metadata,
    client_secret: &Secret,
    redirect_uri: &str,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    Failure,
> {
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| Failure::new("bad_state", e.to_string()))?;
    // client_secret_basic unless the provider only takes client_secret_post.
    let methods = md.token_endpoint_auth_methods_supported();
    let post_only = methods.is_some_and(|m| {
        !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
            && m.contains(&CoreClientAuthMethod::ClientSecretPost)
    });
    Ok(CoreClient::from_provider_metadata(
        md.clone(),
        ClientId::new(p.client_id.clone()),
        Some(ClientSecret::new(client_secret.expose().to_string())),
    )
    .set_redirect_uri(redirect)
    .set_auth_type(if post_only {
        AuthType::RequestBody
    } else {
        AuthType::BasicAuth
    }))
}

pub enum SignatureOrOther {
    /// No key of the `kid` (or algorithm) the token names.
    UnknownKey,
    /// A key was found but the signature does not verify with it.
    BadSignature(Failure),
    Failed(Failure),
}

impl SignatureOrOther {
    fn failure(self) -> Failure {
        match self {
            SignatureOrOther::UnknownKey => {
                Failure::new("bad_signature", "no key of the provider matches the token")
            }
            SignatureOrOther::BadSignature(f) | SignatureOrOther::Failed(f) => f,
        }
    }
}

/// Verifies an ID token against the provider's keys and Redwall's clock;
/// answers (sub, issuer).
pub fn verify_id_token(
    p: &OidcProvider,
    md: &Metadata,
    id_token: &CoreIdToken,
    nonce: &Nonce,
    now: Micros,
) -> Result<(String, String), SignatureOrOther> {
    // The client here is only a carrier for the issuer, client id and keys:
    // with no secret, HS* (keyed with the client secret) cannot be accepted.
    let client =
        CoreClient::from_provider_metadata(md.clone(), ClientId::new(p.client_id.clone()), None);
    // The library has no leeway on `exp`: judge it at a time a little earlier.
    let at = now - LEEWAY_SECS * MICROS_PER_SECOND;
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(ALLOWED_ALGS)
        .set_time_fn(move || {
            chrono::DateTime::from_timestamp_micros(at).unwrap_or(chrono::DateTime::UNIX_EPOCH)
        });
    let claims = id_token.claims(&verifier, nonce).map_err(|e| {
        let reason = match &e {
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ) => return SignatureOrOther::UnknownKey,
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::CryptoError(_),
            ) => {
                return SignatureOrOther::BadSignature(Failure::new("bad_signature", e.to_string()))
            }
            ClaimsVerificationError::SignatureVerification(_) => "bad_signature",
            ClaimsVerificationError::Expired(_) => "expired",
            ClaimsVerificationError::InvalidAudience(_) => "wrong_audience",
            ClaimsVerificationError::InvalidIssuer(_) => "wrong_issuer",
            ClaimsVerificationError::InvalidNonce(_) => "nonce_mismatch",
            _ => "invalid_id_token",
        };
        SignatureOrOther::Failed(Failure::new(reason, e.to_string()))
    })?;
    // The library leaves `azp` to us (OIDC Core 3.1.3.7 steps 4-5).
    let several = claims.audiences().len() > 1;
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != p.client_id => {
            return Err(SignatureOrOther::Failed(Failure::new(
                "wrong_audience",
                format!("azp is {}", azp.as_str()),
            )))
        }
        None if several => {
            return Err(SignatureOrOther::Failed(Failure::new(
                "wrong_audience",
                "several audiences and no azp",
            )))
        }
        _ => {}
    }
    Ok((
        claims.subject().as_str().to_string(),
        claims.issuer().as_str().to_string(),
    ))
}

/// The token's claims as JSON, for the configurable claims the typed claims
/// do not carry. Read only after the signature was verified over these bytes.
fn payload_claims(id_token: &CoreIdToken) -> Result<Map<String, Value>, Failure> {
    let compact = id_token.to_string();
    let payload = compact
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok());
    payload.ok_or_else(|| Failure::new("invalid_id_token", "the ID token payload is not JSON"))
}

async fn userinfo(
    http: &reqwest::Client,
    endpoint: &str,
    access_token: &str,
) -> Result<Map<String, Value>, Failure> {
    let r = http
        .get(endpoint)
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| classify_http("userinfo_failed", &e))?;
    if !r.status().is_success() {
        return Err(Failure::new(
            "userinfo_failed",
            format!("UserInfo answered {}", r.status()),
        ));
    }
    // Bounded: a hostile or broken provider cannot make us buffer much.
    let body = r
        .bytes()
        .await
        .map_err(|e| classify_http("userinfo_failed", &e))?;
    if body.len() > 256 * 1024 {
        return Err(Failure::new("userinfo_failed", "UserInfo answer too large"));
    }
    serde_json::from_slice(&body).map_err(|_| {
        Failure::new(
            "userinfo_failed",
            "UserInfo is not a JSON object (signed UserInfo is not supported)",
        )
    })
}

/// A groups claim: a list of strings (or one string); anything else is no
/// group. Bounded, so a huge claim cannot make the mapping slow.
pub fn groups_of(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|g| !g.is_empty() && g.len() <= 512)
            .take(1000)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => vec![s.clone()],
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// Where the provider should send the browser after its logout, if it
/// offers RP-initiated logout.
pub async fn end_session_url(
    oidc: &OidcState,
    p: &OidcProvider,
    post_logout_redirect: Option<&str>,
    now: Micros,
) -> Result<Option<String>, Failure> {
    let md = oidc.metadata(p, now).await?;
    let Some(endpoint) = md.additional_metadata().end_session_endpoint.clone() else {
        return Ok(None);
    };
    let mut req = openidconnect::LogoutRequest::from(endpoint)
        .set_client_id(ClientId::new(p.client_id.clone()));
    if let Some(uri) = post_logout_redirect {
        let uri = PostLogoutRedirectUrl::new(uri.to_string())
            .map_err(|e| Failure::new("bad_redirect_uri", e.to_string()))?;
        req = req.set_post_logout_redirect_uri(uri);
    }
    Ok(Some(req.http_get_url().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_claims_are_strings_only_and_bounded() {
        let v = serde_json::json!(["b", "a", "b", 3, "", null]);
        assert_eq!(groups_of(Some(&v)), vec!["a", "b"]);
        assert_eq!(groups_of(Some(&serde_json::json!("ops"))), vec!["ops"]);
        assert!(groups_of(Some(&serde_json::json!({"a": 1}))).is_empty());
        assert!(groups_of(None).is_empty());
        let many: Vec<String> = (0..5000).map(|i| format!("g{i}")).collect();
        assert_eq!(groups_of(Some(&serde_json::json!(many))).len(), 1000);
    }

    #[test]
    fn used_states_count_against_an_address_or_an_ipv6_64() {
        let key = |s: &str| client_key(s.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])));
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2::9"), key("2001:db8:1:2:ffff::1"));
        assert_ne!(key("2001:db8:1:2::9"), key("2001:db8:1:3::9"));
    }

    #[test]
    fn login_cookies_open_only_intact_with_their_key_and_in_time() {
        let k = Keyring::generate();
        let p = PendingLogin {
            provider: "corp".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            next: "/".into(),
            expires: 100,
        };
        let sealed = p.seal(&k).unwrap_or_default();
        assert!(PendingLogin::open(&k, &sealed, 99).is_some_and(|o| o.state == "s"));
        assert!(PendingLogin::open(&k, &sealed, 100).is_none());
        assert!(PendingLogin::open(&Keyring::generate(), &sealed, 0).is_none());
        let mut tampered = sealed.into_bytes();
        if let Some(b) = tampered.get_mut(10) {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        let tampered = String::from_utf8(tampered).unwrap_or_default();
        assert!(PendingLogin::open(&k, &tampered, 0).is_none());
    }
}
