//! What a hub operation answers when it does not do what was asked.

use redwall_store::StoreError;

/// Why an operation refused, in the terms a shell maps to its own answer
/// (the API: 422, 409, 403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The request breaks a rule of its input (a name, a range).
    Invalid,
    /// The request conflicts with what is stored (the last Owner).
    Conflict,
    /// The caller may not do this, whatever the input.
    Forbidden,
    /// The credentials do not prove who the caller says they are.
    Unauthenticated,
    /// This host cannot do it now (no sandbox, Node-RED not installed):
    /// the request was fine and may succeed later.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Nothing by that name, or nothing the caller may know of: a stranger's
    /// answer is the same as for something missing.
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Refused {
        kind: Refused,
        code: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many failed attempts: the caller must wait this long.
    #[error("too many failed attempts; try again in {retry_after_secs} seconds")]
    Throttled { retry_after_secs: i64 },
    /// Too many password checks are waiting (a flood): refused at once
    /// rather than queued.
    #[error("too many logins are being checked; try again in a second")]
    Busy,
    /// Something that should never happen (a stored value that does not
    /// open); logged by the shell, never shown to the caller.
    #[error("{0}")]
    Internal(String),
}

pub type HubResult<T> = Result<T, HubError>;

impl HubError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> HubError {
        HubError::Refused {
            kind: Refused::Invalid,
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> HubError {
        HubError::Refused {
            kind: Refused::Conflict,
            code,
            message: message.into(),
        }
    }
}

impl HubError {
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> HubError {
        HubError::Refused {
            kind: Refused::Unavailable,
            code,
            message: message.into(),
        }
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> HubError {
        HubError::Refused {
            kind: Refused::Unauthenticated,
            code,
            message: message.into(),
        }
    }

    /// The one answer to a failed password login, whatever failed.
    pub fn invalid_credentials() -> HubError {
        HubError::unauthenticated(
            "invalid_credentials",
            "the username or password is incorrect",
        )
    }

    pub fn internal(cause: impl std::fmt::Display) -> HubError {
        HubError::Internal(cause.to_string())
    }

    /// The refusal's code, if it is one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            HubError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<redwall_policy::RuleError> for HubError {
    fn from(e: redwall_policy::RuleError) -> Self {
        HubError::invalid(e.code, e.message)
    }
}
