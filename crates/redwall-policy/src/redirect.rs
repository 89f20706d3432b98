//! The one rule for where Redwall sends a browser next (after login, an SSO
//! callback or an instance handover): only a path on the same site, so no
//! parameter can turn Redwall into an open redirect.

/// Longest `next` honoured, in bytes.
pub const MAX_NEXT_BYTES: usize = 1024;

/// Whether `next` can only lead within the site: an absolute path, not a
/// scheme-relative `//host` or `/\host` (browsers read `\` as `/`), no
/// backslash anywhere, and only visible ASCII (no control characters,
/// spaces or look-alikes: a browser sends anything else percent-encoded).
pub fn is_local_path(next: &str) -> bool {
    next.len() <= MAX_NEXT_BYTES
        && next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic())
}

/// `next` when it is a local path, else `fallback`.
pub fn local_path_or(next: Option<&str>, fallback: &str) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        _ => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        for good in ["/", "/teams/abc?tab=1", "/editor/#flow/1", "/a%20b"] {
            assert!(is_local_path(good), "{good:?}");
        }
        for bad in [
            "",
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/a\\b",
            "evil",
            "/a\nb",
            "/a b",
            "/\u{7f}",
            "/é",
            "\t/x",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
        assert!(is_local_path(&format!(
            "/{}",
            "a".repeat(MAX_NEXT_BYTES - 1)
        )));
        assert!(!is_local_path(&format!("/{}", "a".repeat(MAX_NEXT_BYTES))));
    }

    #[test]
    fn anything_else_gets_the_fallback() {
        assert_eq!(local_path_or(Some("/x?y=1"), "/"), "/x?y=1");
        assert_eq!(local_path_or(Some("//evil"), "/editor/"), "/editor/");
        assert_eq!(local_path_or(None, "/"), "/");
    }
}
