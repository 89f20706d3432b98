//! The `settings.js` Redwall writes for each instance. The security logic
//! (token checks, header scrubbing, the audit sink) lives in the template,
//! `settings.js.tpl`; this module only fills in values, every string through
//! `serde_json` so it is a valid, inert JS literal.

use crate::spec::InstanceSpec;
use crate::token::{EDITOR_TOKEN_HEADER, ENDPOINT_TOKEN_HEADER, USER_HEADER};

const TEMPLATE: &str = include_str!("settings.js.tpl");

/// Renders the instance's `settings.js`. Pure: holds no secret, so the file
/// can be world-readable.
pub fn render_settings(spec: &InstanceSpec) -> String {
    let js_string = |s: &str| serde_json::Value::from(s).to_string();
    let js_bool = |b: bool| if b { "true" } else { "false" };
    TEMPLATE
        .replace("@@INSTANCE_ID@@", &js_string(&spec.id))
        .replace("@@EDITOR_HEADER@@", &js_string(EDITOR_TOKEN_HEADER))
        .replace("@@ENDPOINT_HEADER@@", &js_string(ENDPOINT_TOKEN_HEADER))
        .replace("@@USER_HEADER@@", &js_string(USER_HEADER))
        .replace("@@PORT@@", &spec.port.to_string())
        .replace("@@HOST@@", &js_string(&spec.address().ip().to_string()))
        .replace(
            "@@ALLOW_PALETTE@@",
            js_bool(spec.options.allow_palette_install),
        )
        .replace(
            "@@ALLOW_FUNCTION_MODULES@@",
            js_bool(spec.options.allow_function_modules),
        )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::spec::{InstanceOptions, Limits, SandboxIdentity};
    use redwall_crypto::Secret;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            id: "shop-floor-1".into(),
            port: 18080,
            dir: "/tmp/x".into(),
            editor_secret: Secret::new("admin-secret-0123456789abcdef".into()),
            endpoint_secret: Secret::new("endpoint-secret-0123456789abcd".into()),
            credential_secret: Secret::new("credential-secret-0123456789ab".into()),
            env: vec![],
            platform_env: Vec::new(),
            options: InstanceOptions {
                allow_palette_install: true,
                allow_function_modules: false,
            },
            limits: Limits::default(),
            identity: SandboxIdentity::Inherit,
            read_only_paths: vec![],
            network: crate::spec::NetworkMode::Host,
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_no_secret_is_written() {
        let s = spec();
        let js = render_settings(&s);
        assert!(!js.contains("@@"));
        for secret in [&s.editor_secret, &s.endpoint_secret, &s.credential_secret] {
            assert!(!js.contains(secret.expose()));
        }
        assert!(js.contains("const INSTANCE_ID = \"shop-floor-1\";"));
        assert!(js.contains("uiPort: 18080,"));
        assert!(js.contains("uiHost: \"127.0.0.1\","));
        assert!(js.contains("allowInstall: true,"));
        assert!(js.contains("functionExternalModules: false,"));
    }
}
