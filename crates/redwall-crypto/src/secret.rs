//! A string that must not end up in logs or linger in memory.

use std::fmt;
use zeroize::Zeroize;

/// A secret string (token, password, encoded key, recovery code...).
///
/// The contents are wiped when the value is dropped, and `Debug`/`Display`
/// print `[redacted]`, so a secret accidentally passed to `tracing` or
/// `format!` does not leak. Call [`Secret::expose`] at the single place where
/// the value is genuinely needed.
///
/// Cloning is allowed; each clone is wiped independently.
// No `PartialEq`: comparing secrets must go through `constant_time_eq`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a string. The caller should not keep other copies of it.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// Returns the secret value. Keep the borrow short and do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn expose_returns_the_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.clone().expose(), "hunter2");
    }

    #[test]
    fn formatting_never_reveals_the_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }
}
