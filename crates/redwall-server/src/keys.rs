//! The master key: from `REDWALL_MASTER_KEY` (base64), or `master.key` in the
//! data directory, created with mode 0600 on first start.
//!
//! It seals TOTP secrets, keys the audit chain and other digests. Nodes that
//! share a PostgreSQL database must share this key (use the variable or a
//! secret store that sets it).

use crate::files::{readable_by_others, write_private};
use anyhow::{anyhow, Context};
use redwall_crypto::keyring::Keyring;
use std::path::Path;

pub fn load_or_create(data_dir: &Path, from_env: Option<&str>) -> anyhow::Result<Keyring> {
    if let Some(b64) = from_env {
        return Keyring::from_base64(b64.trim())
            .map_err(|_| anyhow!("REDWALL_MASTER_KEY must be 32 bytes in base64"));
    }
    let path = data_dir.join("master.key");
    if path.is_file() {
        if readable_by_others(&path) {
            tracing::warn!(file = %path.display(), "the master key file is readable by other users; chmod 600 it");
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Keyring::from_base64(text.trim())
            .map_err(|_| anyhow!("{} does not hold a valid master key", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let keyring = Keyring::generate();
    write_private(&path, keyring.to_base64().expose().as_bytes())?;
    tracing::info!(file = %path.display(), "created a new master key; back it up with the database");
    Ok(keyring)
}
