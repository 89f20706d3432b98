//! Reading a Node-RED `adminAuth` users list: a JSON file (an array, or an
//! object with `users`), or a settings.js whose `adminAuth.users` array is a
//! JavaScript literal.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct NodeRedUser {
    pub username: String,
    /// A bcrypt hash, as `node-red admin hash-pw` makes.
    pub password: String,
    #[serde(default)]
    pub permissions: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("no users array found: expected a JSON array, an object with \"users\", or a settings.js with adminAuth.users")]
    NoUsers,
    #[error("the users array is not valid: {0}")]
    Invalid(String),
}

pub fn parse_users(text: &str) -> Result<Vec<NodeRedUser>, ImportError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        if let Ok(users) = serde_json::from_str::<Vec<NodeRedUser>>(text) {
            return Ok(users);
        }
        #[derive(Deserialize)]
        struct Wrapped {
            users: Vec<NodeRedUser>,
        }
        if let Ok(w) = serde_json::from_str::<Wrapped>(text) {
            return Ok(w.users);
        }
    }
    let code = without_comments(text);
    let array = users_array_literal(&code).ok_or(ImportError::NoUsers)?;
    json5::from_str::<Vec<NodeRedUser>>(array).map_err(|e| ImportError::Invalid(e.to_string()))
}

/// The text with `//` and `/* */` comments blanked out (strings kept), so a
/// commented-out `users: [...]` is not mistaken for the real one.
fn without_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'' | b'`') => {
                out.push(quote);
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        out.push(bytes[i]);
                        i += 1;
                    }
                    out.push(bytes[i]);
                    i += 1;
                }
                if i < bytes.len() {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
                out.push(b' ');
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII delimiters were removed, so the bytes are still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// The text of the array after `users:` (JS property syntax), found by
/// bracket matching that skips strings.
fn users_array_literal(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut search_from = 0;
    while let Some(found) = text[search_from..].find("users") {
        let at = search_from + found;
        search_from = at + 5;
        let before_ok = at == 0 || !is_ident(bytes[at - 1]);
        let mut i = at + 5;
        if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
            i += 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if !before_ok || i >= bytes.len() || bytes[i] != b':' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'[' {
            continue;
        }
        let end = matching_bracket(bytes, i)?;
        return Some(&text[i..=end]);
    }
    None
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn matching_bracket(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS_JS: &str = r#"
module.exports = {
    // users: [] in a comment must not confuse the parser
    adminAuth: {
        type: "credentials",
        users: [{
            username: "admin",
            password: "$2a$08$zZWtXTja0fB1pzD4sHCMyOCMYz2Z6dNbM6tl8sJogENOMcxWV9DN.",
            permissions: "*"
        },
        {
            username: 'viewer', // read only
            password: '$2b$08$abcdefghijklmnopqrstuu5Yr1bN5b9mIbF6VA2XjC3FE7wI6b2G',
            permissions: "read"
        }]
    },
    httpNodeAuth: {user:"user", pass:"$2a$08$x"},
}
"#;

    #[test]
    fn reads_the_users_array_of_a_settings_file() {
        let users = parse_users(SETTINGS_JS).unwrap_or_default();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].username, "admin");
        assert!(users[0].password.starts_with("$2a$08$"));
        assert_eq!(users[1].username, "viewer");
        assert_eq!(users[1].permissions, serde_json::json!("read"));
    }

    #[test]
    fn reads_json_arrays_and_objects() {
        let arr = r#"[{"username":"a","password":"$2b$08$x","permissions":"*"}]"#;
        assert_eq!(parse_users(arr).map(|u| u.len()), Ok(1));
        let obj = r#"{"users":[{"username":"a","password":"$2b$08$x"}]}"#;
        assert_eq!(parse_users(obj).map(|u| u.len()), Ok(1));
    }

    #[test]
    fn explains_files_without_users() {
        assert_eq!(
            parse_users("module.exports = {}"),
            Err(ImportError::NoUsers)
        );
        assert!(matches!(
            parse_users("users: [ {username: } ]"),
            Err(ImportError::Invalid(_))
        ));
        assert_eq!(parse_users("users: [ [[[ "), Err(ImportError::NoUsers));
    }
}
