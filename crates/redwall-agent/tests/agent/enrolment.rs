//! `enrol` against the fake hub: what is sent, what is written, what is
//! never written, and what is left behind when the hub says no.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use redwall_agent::state::{BOX_KEY_FILE, CONFIG_FILE, KEY_FILE};
use redwall_agent::{enrol, Agent, EnrolError, StateError};
use redwall_crypto::signing::PublicKey;
use redwall_policy::agent_protocol::check_platform;

use crate::fake_hub::{FakeHub, AGENT_ID, TEAM_ID, TOKEN};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every byte of every file under `dir`, to look for the token in.
fn everything_in(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn enrolment_sends_the_key_and_keeps_the_answer_but_never_the_token() {
    let mut hub = FakeHub::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("redwall-agent");

    let enrolled = enrol(&hub.bundle(TOKEN), "plant-7", &dir).await.unwrap();
    assert_eq!(enrolled.agent_id, AGENT_ID);
    assert_eq!(enrolled.name, "plant-7");

    let request = hub.next_enrolment().await;
    assert_eq!(request.provisioning_token, TOKEN);
    assert_eq!(request.name, "plant-7");
    assert!(check_platform(&request.platform).is_ok() || !cfg!(target_os = "linux"));
    assert_eq!(request.version, env!("CARGO_PKG_VERSION"));
    let sent_key = PublicKey::from_base64(&request.public_key).unwrap();

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(BOX_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
    let agent = Agent::load(&dir).unwrap();
    // The encryption key sent is the public half of the one kept, and a
    // key of its own (not the signing key's bytes).
    let box_key = agent.box_key.as_ref().expect("a box key on disk");
    assert_eq!(request.encryption_key, box_key.public_base64());
    assert_ne!(request.encryption_key, request.public_key);
    assert_eq!(
        agent.key.public_key(),
        sent_key,
        "the key on disk is the one enrolled"
    );
    assert_eq!(agent.config.agent_id, AGENT_ID);
    assert_eq!(agent.config.team_id, TEAM_ID);
    assert_eq!(agent.config.hub_url, hub.url);
    assert_eq!(
        agent.config.cert_sha256.as_deref(),
        Some(hub.cert_sha256.as_str())
    );
    assert_eq!(agent.config.hub_signing_key, hub.signing_key);
    assert!(
        !contains(&everything_in(&dir), TOKEN),
        "the token is written nowhere"
    );
    assert!(!contains(&everything_in(&dir), "provisioning"));

    // A second enrolment into the same directory is refused before the hub
    // is asked, and the first stays intact.
    let err = enrol(&hub.bundle(TOKEN), "plant-8", &dir)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EnrolError::State(StateError::AlreadyEnrolled { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("already"), "{err}");
    assert!(!hub.has_enrolment());
    assert_eq!(Agent::load(&dir).unwrap().key.public_key(), sent_key);
}

#[tokio::test]
async fn a_refused_enrolment_shows_the_hubs_message_and_leaves_no_key() {
    let mut hub = FakeHub::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let err = enrol(&hub.bundle("rwe_spent-token"), "plant-7", dir)
        .await
        .unwrap_err();
    match &err {
        EnrolError::Refused {
            status,
            code,
            message,
        } => {
            assert_eq!(*status, 403);
            assert_eq!(code, "invalid_token");
            assert_eq!(
                message,
                "the provisioning token is unknown, spent or expired"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!err.to_string().contains("rwe_spent-token"), "{err}");
    hub.next_enrolment().await;
    assert!(
        !dir.join(KEY_FILE).exists(),
        "the key of a refused enrolment is removed"
    );
    assert!(!dir.join(BOX_KEY_FILE).exists(), "so is its encryption key");
    assert!(!dir.join(CONFIG_FILE).exists());
    // So the operator can simply try again with a good token.
    enrol(&hub.bundle(TOKEN), "plant-7", dir).await.unwrap();
}

#[tokio::test]
async fn enrolment_refuses_a_hub_with_another_certificate() {
    let mut hub = FakeHub::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut bundle = hub.bundle(TOKEN);
    bundle.cert_sha256 = Some("0f".repeat(32));

    let err = enrol(&bundle, "plant-7", tmp.path()).await.unwrap_err();
    assert!(matches!(err, EnrolError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("not the one pinned"), "{err}");
    assert!(!err.to_string().contains(TOKEN));
    hub.next_refused_handshake().await;
    assert!(!hub.has_enrolment(), "the token never reached the impostor");
    assert!(!tmp.path().join(KEY_FILE).exists());
    assert!(!tmp.path().join(BOX_KEY_FILE).exists());
}

#[tokio::test]
async fn a_bad_name_is_refused_before_anything_happens() {
    let mut hub = FakeHub::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never-made");
    let err = enrol(&hub.bundle(TOKEN), "Plant_7", &dir)
        .await
        .unwrap_err();
    assert!(matches!(err, EnrolError::Name(_)), "{err}");
    assert!(!dir.exists());
    assert!(!hub.has_enrolment());
}
