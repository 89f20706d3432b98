//! Last-seen times for sessions and last-use times for tokens, gathered in
//! memory and written in one batch every few seconds, so a busy API does not
//! turn every read into a database write.

use redwall_policy::Micros;
use redwall_store::Store;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct ActivityBuffer {
    sessions: Mutex<HashMap<String, Micros>>,
    tokens: Mutex<HashMap<String, Micros>>,
    instance_keys: Mutex<HashMap<String, Micros>>,
}

impl ActivityBuffer {
    pub fn session_seen(&self, session_id: &str, at: Micros) {
        if let Ok(mut m) = self.sessions.lock() {
            let e = m.entry(session_id.to_string()).or_insert(at);
            *e = (*e).max(at);
        }
    }

    pub fn token_used(&self, token_id: &str, at: Micros) {
        if let Ok(mut m) = self.tokens.lock() {
            let e = m.entry(token_id.to_string()).or_insert(at);
            *e = (*e).max(at);
        }
    }

    /// An instance API key let a request through the proxy. On the proxy's
    /// hot path, so the id is copied only the first time in a flush period.
    pub fn instance_key_used(&self, key_id: &str, at: Micros) {
        if let Ok(mut m) = self.instance_keys.lock() {
            match m.get_mut(key_id) {
                Some(e) => *e = (*e).max(at),
                None => {
                    m.insert(key_id.to_string(), at);
                }
            }
        }
    }

    /// The latest unflushed activity of a session, if any.
    pub fn session_last_seen(&self, session_id: &str) -> Option<Micros> {
        self.sessions.lock().ok()?.get(session_id).copied()
    }

    pub fn forget_session(&self, session_id: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(session_id);
        }
    }

    pub async fn flush(&self, store: &Store) -> Result<(), redwall_store::StoreError> {
        let sessions: Vec<(String, Micros)> = self
            .sessions
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        let tokens: Vec<(String, Micros)> = self
            .tokens
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        let keys: Vec<(String, Micros)> = self
            .instance_keys
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        store.touch_instance_api_keys(&keys).await?;
        if !sessions.is_empty() {
            store.touch_sessions(&sessions).await?;
        }
        if !tokens.is_empty() {
            store.touch_api_tokens(&tokens).await?;
        }
        Ok(())
    }
}
