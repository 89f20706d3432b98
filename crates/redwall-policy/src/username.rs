//! What a username may look like: short, printable, unambiguous in logs.

use serde::Serialize;

pub const MAX_LENGTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernameProblem {
    Empty,
    TooLong,
    InvalidCharacters,
}

impl UsernameProblem {
    pub fn message(self) -> String {
        match self {
            UsernameProblem::Empty => "the username must not be empty".into(),
            UsernameProblem::TooLong => {
                format!("the username must have at most {MAX_LENGTH} characters")
            }
            UsernameProblem::InvalidCharacters => {
                "the username may contain only letters, digits and . _ @ - (and must start with a letter or digit)"
                    .into()
            }
        }
    }
}

/// Letters and digits (ASCII), plus `.`, `_`, `@`, `-` after the first
/// character. This covers e-mail-style and directory logins while keeping
/// control characters, spaces and look-alike Unicode out of audit records.
pub fn check_username(name: &str) -> Result<(), UsernameProblem> {
    if name.is_empty() {
        return Err(UsernameProblem::Empty);
    }
    if name.len() > MAX_LENGTH {
        return Err(UsernameProblem::TooLong);
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(UsernameProblem::InvalidCharacters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["alice", "bob.smith", "ops-admin_2", "carol@example.com"] {
            assert_eq!(check_username(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(check_username(""), Err(UsernameProblem::Empty));
        assert_eq!(
            check_username(&"a".repeat(65)),
            Err(UsernameProblem::TooLong)
        );
        for n in [
            "a b",
            "a\nb",
            "-lead",
            "x'; DROP TABLE users;--",
            "<script>",
            "аlice",
        ] {
            assert_eq!(
                check_username(n),
                Err(UsernameProblem::InvalidCharacters),
                "{n}"
            );
        }
    }

    proptest! {
        #[test]
        fn accepted_names_are_printable_ascii(name in "\\PC{0,80}") {
            if check_username(&name).is_ok() {
                prop_assert!(name.len() <= MAX_LENGTH);
                prop_assert!(name.chars().all(|c| c.is_ascii_graphic()));
            }
        }
    }
}
