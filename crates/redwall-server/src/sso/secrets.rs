//! Provider secrets: from an environment variable, or sealed with the
//! master key so the configuration file never holds them in the clear.

use crate::sso::config::SecretRef;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::Secret;

const PURPOSE: &str = "sso-provider-secret";

pub fn seal(keyring: &Keyring, plain: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        keyring
            .sealer(PURPOSE)
            .seal(plain.as_bytes(), PURPOSE.as_bytes()),
    )
}

/// The secret, or a sentence saying why it is missing (never the value).
pub fn resolve(
    keyring: &Keyring,
    r: &SecretRef,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    if let Some(name) = &r.env {
        return env(name)
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| format!("the environment variable {name} is not set"));
    }
    if let Some(sealed) = &r.sealed {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .map_err(|_| "the sealed secret is not valid base64".to_string())?;
        let plain = keyring
            .sealer(PURPOSE)
            .open(&raw, PURPOSE.as_bytes())
            .map_err(|_| "the sealed secret does not open with this master key".to_string())?;
        return String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| "the sealed secret is not text".to_string());
    }
    Err("no secret is configured".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_master_key_only() {
        let k = Keyring::generate();
        let r = SecretRef {
            env: None,
            sealed: Some(seal(&k, "s3cret")),
        };
        assert_eq!(
            resolve(&k, &r, |_| None).map(|s| s.expose().to_string()),
            Ok("s3cret".into())
        );
        assert!(resolve(&Keyring::generate(), &r, |_| None).is_err());
        let e = SecretRef {
            env: Some("X".into()),
            sealed: None,
        };
        assert_eq!(
            resolve(&k, &e, |_| Some("v".into())).map(|s| s.expose().to_string()),
            Ok("v".into())
        );
        assert!(resolve(&k, &e, |_| None).is_err_and(|m| m.contains('X')));
    }
}
