//! Tokens that Redwall's proxy attaches to requests it forwards to an
//! instance. Minted here, verified by the generated `settings.js` with Node's
//! crypto, so the format is a small shared contract:
//! `v1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(key, "v1." + payload_b64))>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redwall_crypto::mac::hmac_sha256;
use redwall_crypto::Secret;

/// Request header carrying the editor token (for `/editor/`).
pub const EDITOR_TOKEN_HEADER: &str = "x-redwall-editor-token";
/// Request header carrying the endpoint token.
pub const ENDPOINT_TOKEN_HEADER: &str = "x-redwall-endpoint-token";
/// Header the instance sets, from the endpoint token, for flows to read.
pub const USER_HEADER: &str = "x-redwall-user";

/// What an editor token allows, in Node-RED's permission vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditorPermission {
    /// `"*"`: everything, deploys included.
    Full,
    /// `"read"`: every `*.read` permission, no deploy.
    Read,
}

impl EditorPermission {
    fn as_node_red(self) -> &'static str {
        match self {
            EditorPermission::Full => "*",
            EditorPermission::Read => "read",
        }
    }
}

/// Mints a token for `/editor/*` of one instance.
pub fn mint_editor_token(
    secret: &Secret,
    instance_id: &str,
    username: &str,
    perm: EditorPermission,
    expires_at_unix: i64,
) -> String {
    let payload = serde_json::json!({
        // The kind settings.js checks; "admin" from before the editor token
        // had its name (the known-answer test holds it).
        "k": "admin",
        "sub": username,
        "perm": perm.as_node_red(),
        "aud": instance_id,
        "exp": expires_at_unix,
    });
    sign(secret, &payload)
}

/// Mints a token for the endpoints (`httpNodeRoot`) of one instance.
/// `username` is `None` for anonymous callers of public endpoints.
pub fn mint_endpoint_token(
    secret: &Secret,
    instance_id: &str,
    username: Option<&str>,
    expires_at_unix: i64,
) -> String {
    let payload = serde_json::json!({
        "k": "endpoint",
        "sub": username,
        "aud": instance_id,
        "exp": expires_at_unix,
    });
    sign(secret, &payload)
}

fn sign(secret: &Secret, payload: &serde_json::Value) -> String {
    let payload_b64 = URL_SAFE_NO_PAD.encode(payload.to_string());
    let signed = format!("v1.{payload_b64}");
    let mac = hmac_sha256(secret.expose().as_bytes(), &[signed.as_bytes()]);
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    #[test]
    fn admin_token_known_answer() {
        let token = mint_editor_token(
            &secret("0123456789abcdef0123456789abcdef"),
            "inst-1",
            "alice",
            EditorPermission::Read,
            1_700_000_000,
        );
        // Computed independently with Node:
        // crypto.createHmac("sha256", key).update("v1." + b64).digest("base64url")
        let expected = concat!(
            "v1.eyJhdWQiOiJpbnN0LTEiLCJleHAiOjE3MDAwMDAwMDAsImsiOiJhZG1pbiIsInBlcm0iOiJyZWFkIiwic3ViIjoiYWxpY2UifQ",
            ".aVT-AsmLpUuWSzcd5eKAkd526Kyz8vxLNVtt2bd8JVI"
        );
        assert_eq!(token, expected);
    }

    #[test]
    fn endpoint_token_payload_names_kind_audience_and_optional_user() {
        let token = mint_endpoint_token(&secret("k"), "inst-2", None, 5);
        let payload = token.split('.').nth(1).unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"k": "endpoint", "sub": null, "aud": "inst-2", "exp": 5})
        );
    }

    #[test]
    fn different_keys_give_different_macs() {
        let a = mint_endpoint_token(&secret("a"), "i", Some("u"), 1);
        let b = mint_endpoint_token(&secret("b"), "i", Some("u"), 1);
        assert_ne!(a, b);
        assert_eq!(a.split('.').nth(1), b.split('.').nth(1));
    }
}
