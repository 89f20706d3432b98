//! Rules for instances: names (they become host names) and their
//! environment variables, and how many of each.

use crate::{refused, RuleError};

/// Instances one team may have.
pub const MAX_INSTANCES_PER_TEAM: i64 = 100;
/// Environment variables one instance may have.
pub const MAX_ENV_VARS: usize = 200;
/// Longest environment variable value, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;

/// Names appear in host names (`{name}.{domain}`), so they follow DNS label
/// rules: 2 to 40 of a-z, 0-9 and '-', starting with a letter, not ending
/// with '-'.
pub fn instance_name(name: &str) -> Result<(), RuleError> {
    let ok = (2..=40).contains(&name.len())
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(refused(
            "invalid_name",
            "an instance name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
        ))
    }
}

/// Environment variable names: what a shell and Node-RED's `${VAR}` accept,
/// and never one Redwall sets itself.
pub fn env_name(name: &str) -> Result<(), RuleError> {
    let shaped = (1..=128).contains(&name.len())
        && !name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let reserved = name.starts_with("REDWALL_")
        || name.starts_with("NODE_")
        || name.starts_with("LD_")
        || ["PATH", "HOME", "TMPDIR", "LANG"].contains(&name);
    if !shaped {
        return Err(refused(
            "invalid_env_name",
            "a variable name is 1 to 128 of A-Z, a-z, 0-9 and '_', not starting with a digit",
        ));
    }
    if reserved {
        return Err(refused(
            "reserved_env_name",
            format!("{name} is set by Redwall and cannot be overridden"),
        ));
    }
    Ok(())
}

/// Whether a value may be stored: bounded, and without NUL (which no
/// process environment can carry).
pub fn env_value_fits(value: &str) -> bool {
    value.len() <= MAX_ENV_VALUE_BYTES && !value.contains('\0')
}

/// Live API keys one instance may hold.
pub const MAX_INSTANCE_KEYS: usize = 100;
/// Longest an instance API key may live, in days.
pub const MAX_INSTANCE_KEY_DAYS: i64 = 3650;
/// Longest path prefix a key may be limited to, in bytes.
pub const MAX_KEY_PATH_PREFIX_BYTES: usize = 512;

/// An instance API key's name as stored: trimmed, 1 to 100 printable
/// characters.
pub fn key_name(name: &str) -> Result<String, RuleError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(refused(
            "invalid_name",
            "the key name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_string())
}

/// An instance API key's lifetime: 1 to [`MAX_INSTANCE_KEY_DAYS`] days, or
/// none.
pub fn key_expiry_days(days: Option<i64>) -> Result<(), RuleError> {
    match days {
        Some(d) if !(1..=MAX_INSTANCE_KEY_DAYS).contains(&d) => Err(refused(
            "invalid_expiry",
            format!("expires_in_days must be between 1 and {MAX_INSTANCE_KEY_DAYS}"),
        )),
        _ => Ok(()),
    }
}

/// The path a key may be limited to: a clean absolute path (see
/// [`crate::route_policy::is_clean_path`]), at most 512 bytes.
pub fn key_path_prefix(prefix: &str) -> Result<(), RuleError> {
    if !crate::route_policy::is_clean_path(prefix) || prefix.len() > MAX_KEY_PATH_PREFIX_BYTES {
        return Err(refused(
            "invalid_path_prefix",
            "path_prefix must be a clean absolute path",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["ab", "plant-1", "a1", &format!("a{}", "b".repeat(39))] {
            assert!(instance_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "1ab",
            "ab-",
            "Ab",
            "a_b",
            "a.b",
            "-ab",
            &"a".repeat(41),
            "ab\u{e9}",
        ] {
            assert!(instance_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_refuse_ours() {
        assert!(env_name("DB_PASSWORD").is_ok());
        assert!(env_name("_x1").is_ok());
        for bad in ["", "1A", "A-B", "A B", &"A".repeat(129)] {
            assert_eq!(
                env_name(bad).map_err(|e| e.code),
                Err("invalid_env_name"),
                "{bad}"
            );
        }
        for ours in [
            "REDWALL_X",
            "NODE_OPTIONS",
            "PATH",
            "LD_PRELOAD",
            "HOME",
            "TMPDIR",
            "LANG",
        ] {
            assert_eq!(
                env_name(ours).map_err(|e| e.code),
                Err("reserved_env_name"),
                "{ours}"
            );
        }
    }

    #[test]
    fn values_are_bounded_and_nul_free() {
        assert!(env_value_fits(""));
        assert!(env_value_fits(&"x".repeat(MAX_ENV_VALUE_BYTES)));
        assert!(!env_value_fits(&"x".repeat(MAX_ENV_VALUE_BYTES + 1)));
        assert!(!env_value_fits("a\0b"));
    }

    #[test]
    fn key_names_are_trimmed_printable_and_bounded() {
        assert_eq!(key_name("  ci ").unwrap(), "ci");
        assert_eq!(key_name(&"k".repeat(100)).unwrap().len(), 100);
        for bad in ["", "   ", "a\nb", "\u{7}"] {
            assert_eq!(key_name(bad).unwrap_err().code, "invalid_name", "{bad:?}");
        }
        assert!(key_name(&"k".repeat(101)).is_err());
    }

    #[test]
    fn key_lifetimes_are_bounded() {
        assert!(key_expiry_days(None).is_ok());
        for d in [1, 30, MAX_INSTANCE_KEY_DAYS] {
            assert!(key_expiry_days(Some(d)).is_ok(), "{d}");
        }
        for d in [i64::MIN, -1, 0, MAX_INSTANCE_KEY_DAYS + 1, i64::MAX] {
            assert_eq!(key_expiry_days(Some(d)).unwrap_err().code, "invalid_expiry");
        }
    }

    #[test]
    fn key_path_prefixes_are_clean_and_bounded() {
        for ok in ["/", "/api", "/api/v1/"] {
            assert!(key_path_prefix(ok).is_ok(), "{ok}");
        }
        let long = format!("/{}", "a".repeat(MAX_KEY_PATH_PREFIX_BYTES));
        for bad in ["", "api", "/a/../b", "//x", "/a%2fb", long.as_str()] {
            assert_eq!(
                key_path_prefix(bad).unwrap_err().code,
                "invalid_path_prefix",
                "{bad:?}"
            );
        }
    }
}
