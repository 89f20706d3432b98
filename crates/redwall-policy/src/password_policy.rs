//! What a new password must satisfy.
//!
//! Length over composition rules (NIST SP 800-63B): at least 12 characters,
//! not a well-known password (even decorated with digits or symbols), and not
//! built from the username.

use serde::Serialize;
use std::collections::HashSet;
use std::sync::LazyLock;

pub const MIN_LENGTH: usize = 12;
/// An upper bound keeps a huge body from turning into an expensive hash.
pub const MAX_LENGTH: usize = 1024;

/// The 10,000 most common passwords of the zxcvbn frequency list (MIT licence,
/// Dropbox), four characters or longer.
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordProblem {
    TooShort,
    TooLong,
    Common,
    ContainsUsername,
    ControlCharacters,
}

impl PasswordProblem {
    pub fn message(self) -> String {
        match self {
            PasswordProblem::TooShort => {
                format!("the password must have at least {MIN_LENGTH} characters")
            }
            PasswordProblem::TooLong => {
                format!("the password must have at most {MAX_LENGTH} characters")
            }
            PasswordProblem::Common => {
                "the password is too common; choose a longer, less predictable one".into()
            }
            PasswordProblem::ContainsUsername => {
                "the password must not contain the username".into()
            }
            PasswordProblem::ControlCharacters => {
                "the password must not contain control characters".into()
            }
        }
    }
}

/// Checks a new password for `username`. Returns the first problem found.
pub fn check_password(password: &str, username: &str) -> Result<(), PasswordProblem> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(PasswordProblem::TooShort);
    }
    if length > MAX_LENGTH {
        return Err(PasswordProblem::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordProblem::ControlCharacters);
    }
    let lower = password.to_lowercase();
    let user = username.to_lowercase();
    if user.chars().count() >= 3 && lower.contains(&user) {
        return Err(PasswordProblem::ContainsUsername);
    }
    if is_common(&lower) {
        return Err(PasswordProblem::Common);
    }
    Ok(())
}

/// A listed password, a listed password with digits or symbols around it, a
/// listed password repeated, or a single repeated character.
fn is_common(lower: &str) -> bool {
    if COMMON.contains(lower) {
        return true;
    }
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    if core.is_empty() {
        // Only digits and symbols: common when it is a run or a repetition.
        return is_repetition(lower) || is_sequence(lower);
    }
    if COMMON.contains(core) {
        return true;
    }
    is_repetition(core)
}

/// "abcabcabc", "aaaaaaaa": a short unit repeated, or a repeated common word.
fn is_repetition(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    (1..=chars.len() / 2).any(|unit| {
        chars.len().is_multiple_of(unit) && chars.chunks(unit).all(|c| c == &chars[..unit]) && {
            let word: String = chars[..unit].iter().collect();
            unit <= 3 || COMMON.contains(word.as_str())
        }
    })
}

/// "123456789012", "987654321098": each character one more (or less) than the last.
fn is_sequence(s: &str) -> bool {
    let bytes = s.as_bytes();
    let steps: Vec<i16> = bytes
        .windows(2)
        .map(|w| (i16::from(w[1]) - i16::from(w[0])).rem_euclid(10))
        .collect();
    steps.iter().all(|&d| d == 1) || steps.iter().all(|&d| d == 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_loaded() {
        assert!(COMMON.len() > 9_000);
        assert!(COMMON.contains("password"));
    }

    #[test]
    fn accepts_a_long_unusual_password() {
        assert_eq!(check_password("violet-harbor-copper-9", "alice"), Ok(()));
        assert_eq!(check_password("Zürich Straßenbahn 12", "alice"), Ok(()));
    }

    #[test]
    fn refuses_short_passwords_counting_characters_not_bytes() {
        assert_eq!(
            check_password("short", "alice"),
            Err(PasswordProblem::TooShort)
        );
        // 11 characters, 22 bytes
        assert_eq!(
            check_password("ééééééééééé", "alice"),
            Err(PasswordProblem::TooShort)
        );
    }

    #[test]
    fn refuses_overlong_passwords() {
        let long = "x".repeat(MAX_LENGTH + 1);
        assert_eq!(
            check_password(&long, "alice"),
            Err(PasswordProblem::TooLong)
        );
    }

    #[test]
    fn refuses_common_passwords_even_decorated() {
        for p in [
            "password1234",
            "Password1234!",
            "!!!!football2024",
            "baseballbaseball",
            "123456789012",
            "000000000000",
            "aaaaaaaaaaaa",
            "abcabcabcabc",
            "qwertyuiop1234",
        ] {
            assert_eq!(
                check_password(p, "alice"),
                Err(PasswordProblem::Common),
                "{p}"
            );
        }
    }

    #[test]
    fn refuses_the_username() {
        assert_eq!(
            check_password("xx-Alice-2024-yy", "alice"),
            Err(PasswordProblem::ContainsUsername)
        );
    }

    #[test]
    fn refuses_control_characters() {
        assert_eq!(
            check_password("good-length\u{0}pass", "bob"),
            Err(PasswordProblem::ControlCharacters)
        );
    }
}
