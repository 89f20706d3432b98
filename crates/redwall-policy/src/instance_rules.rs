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

#[cfg(test)]
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
}
