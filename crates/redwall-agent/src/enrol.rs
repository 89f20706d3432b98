//! Enrolment: once per agent. The agent makes its own key, sends the
//! public half with the one-time provisioning token, and keeps what the
//! hub answers. The token is only ever in memory and in that one request:
//! never written, never logged (nothing here derives `Debug` output of the
//! bundle or the request into a log line).

use std::path::Path;
use std::time::Duration;

use redwall_crypto::agent_box::AgentBoxKey;
use redwall_crypto::signing::{AgentKey, PublicKey};
use redwall_policy::agent_protocol::{
    check_agent_name, EnrolAnswer, EnrolRequest, ProvisioningBundle,
};
use serde::Deserialize;

use crate::error_chain;
use crate::hub_url::{BadHubUrl, HubEndpoint};
use crate::state::{self, AgentConfig, NodeRedConfig, StateError};
use crate::tls::{self, HubTrust, TlsSetupError};

/// How long the whole enrolment request may take.
const ENROL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest error message from the hub shown to the operator.
const MAX_SHOWN_MESSAGE: usize = 500;

/// A successful enrolment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub agent_id: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("{0}")]
    Bundle(String),
    #[error("{0}")]
    Name(String),
    /// The Node-RED given with `--node-red-path` cannot be run.
    #[error("{0}")]
    NodeRed(String),
    #[error(transparent)]
    HubUrl(#[from] BadHubUrl),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The hub answered with an error; `message` is the hub's.
    #[error("the hub refused the enrolment: {message} ({code}, HTTP {status})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("could not reach the hub at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the hub's answer is not an enrolment answer: {0}")]
    BadAnswer(String),
}

/// The platform name the hub expects for this build.
pub fn platform() -> String {
    format!("linux-{}", std::env::consts::ARCH)
}

/// Reads the `--bundle` argument: the line itself, or `@FILE` to read it
/// from a file (which keeps the token out of shell history and `ps`).
pub fn read_bundle_arg(arg: &str) -> Result<ProvisioningBundle, EnrolError> {
    let line = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| EnrolError::Bundle(format!("cannot read the bundle from {path}: {e}")))?,
        None => arg.to_owned(),
    };
    ProvisioningBundle::decode(&line).map_err(|e| EnrolError::Bundle(e.message))
}

/// Enrols an agent named `name` into `dir` with `bundle`: makes the keys,
/// asks the hub, writes `agent.key`, `agent-box.key` and `agent.json`. If
/// anything fails before the hub accepted the keys, the key files are
/// removed again. The agent runs no Node-RED (see [`enrol_with`]).
pub async fn enrol(
    bundle: &ProvisioningBundle,
    name: &str,
    dir: &Path,
) -> Result<Enrolled, EnrolError> {
    enrol_with(bundle, name, dir, None).await
}

/// [`enrol`], and the agent runs the Node-RED `node_red` names. That
/// Node-RED is checked first (a `node-red` package, a `node` recent enough
/// for it, an unprivileged port), before the token is spent; `agent.json`
/// keeps its paths resolved.
pub async fn enrol_with(
    bundle: &ProvisioningBundle,
    name: &str,
    dir: &Path,
    node_red: Option<NodeRedConfig>,
) -> Result<Enrolled, EnrolError> {
    check_agent_name(name).map_err(|e| EnrolError::Name(e.message))?;
    let node_red = node_red
        .map(|c| crate::node_red::check_config(&c))
        .transpose()
        .map_err(EnrolError::NodeRed)?;
    let hub = HubEndpoint::parse(&bundle.hub_url)?;
    let trust = HubTrust::new(bundle.cert_sha256.as_deref(), bundle.ca_pem.as_deref());
    // Before touching the disk: a bundle with a broken CA fails here.
    let tls_config = tls::client_config(&trust)?;
    state::prepare_dir(dir)?;

    let key = AgentKey::generate();
    let key_file = state::write_new_key(dir, &key)?;
    // Written before the request, like agent.key: once the hub holds the
    // public half, the secret half must already be safe on disk.
    let box_key = AgentBoxKey::generate();
    let box_key_file = state::write_new_box_key(dir, &box_key)?;
    let request = EnrolRequest {
        provisioning_token: bundle.provisioning_token.clone(),
        name: name.to_owned(),
        public_key: key.public_key().to_base64(),
        encryption_key: box_key.public_base64(),
        platform: platform(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let answer = post_enrolment(&hub, tls_config, &request).await?;
    drop(request);
    if answer.name != name {
        return Err(EnrolError::BadAnswer(format!(
            "the hub enrolled the name {:?}, not {name:?}",
            answer.name
        )));
    }
    if PublicKey::from_base64(&answer.hub_signing_key).is_err() {
        return Err(EnrolError::BadAnswer(
            "the hub's signing key is not an Ed25519 public key".into(),
        ));
    }
    let config = AgentConfig {
        hub_url: bundle.hub_url.clone(),
        cert_sha256: bundle.cert_sha256.clone(),
        ca_pem: bundle.ca_pem.clone(),
        agent_id: answer.agent_id.clone(),
        team_id: answer.team_id,
        name: answer.name.clone(),
        hub_signing_key: answer.hub_signing_key,
        node_red,
    };
    state::write_config(dir, &config)?;
    key_file.keep();
    box_key_file.keep();
    Ok(Enrolled {
        agent_id: answer.agent_id,
        name: answer.name,
    })
}

/// The hub's error answer: `{"error":{"code","message"}}`.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

async fn post_enrolment(
    hub: &HubEndpoint,
    tls_config: rustls::ClientConfig,
    request: &EnrolRequest,
) -> Result<EnrolAnswer, EnrolError> {
    let url = hub.enrol_url();
    let unreachable = |e: reqwest::Error| EnrolError::Unreachable {
        url: url.clone(),
        why: error_chain(&e),
    };
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config)
        // A redirect would carry the token to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        // The WebSocket dials the hub directly, so enrolment does too: an
        // agent that can enrol can also connect.
        .no_proxy()
        .https_only(true)
        .timeout(ENROL_TIMEOUT)
        .user_agent(concat!("redwall-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(unreachable)?;
    let response = client
        .post(&url)
        .json(request)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| EnrolError::BadAnswer(e.to_string()));
    }
    let (code, message) = match serde_json::from_slice::<ErrorAnswer>(&body) {
        Ok(a) => (a.error.code, a.error.message),
        Err(_) => (
            "unexpected_answer".to_owned(),
            String::from_utf8_lossy(&body).into_owned(),
        ),
    };
    Err(EnrolError::Refused {
        status: status.as_u16(),
        code: printable(&code),
        message: printable(&message),
    })
}

/// Text from the hub made safe to print on a terminal: no control
/// characters, not too long.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SHOWN_MESSAGE)
        .collect();
    if text.chars().count() > MAX_SHOWN_MESSAGE {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_is_one_the_hub_knows() {
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert!(redwall_policy::agent_protocol::check_platform(&platform()).is_ok());
        }
    }

    #[test]
    fn the_bundle_comes_from_the_line_or_a_file() {
        let bundle = ProvisioningBundle {
            hub_url: "https://hub.example:8443".into(),
            cert_sha256: None,
            ca_pem: None,
            provisioning_token: "rwe_secret".into(),
        };
        assert_eq!(read_bundle_arg(&bundle.encode()).unwrap(), bundle);
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bundle");
        std::fs::write(&file, format!("{}\n", bundle.encode())).unwrap();
        assert_eq!(
            read_bundle_arg(&format!("@{}", file.display())).unwrap(),
            bundle
        );
        assert!(matches!(
            read_bundle_arg("nonsense"),
            Err(EnrolError::Bundle(_))
        ));
        assert!(matches!(
            read_bundle_arg("@/nonexistent/bundle"),
            Err(EnrolError::Bundle(_))
        ));
    }

    #[test]
    fn hub_messages_are_made_printable() {
        assert_eq!(printable("bad\u{1b}[31m token\n"), "bad[31m token");
        assert_eq!(printable(&"x".repeat(600)).chars().count(), 501);
    }
}
