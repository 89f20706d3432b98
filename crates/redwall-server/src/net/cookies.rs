//! Reading one cookie from the request.

use axum::http::{header, HeaderMap};

/// The value of the cookie `name` in the Cookie headers. Works on bytes, so
/// another application's non-ASCII cookie on the same host cannot hide ours.
pub fn value(headers: &HeaderMap, name: &str) -> Option<String> {
    let wanted = name.as_bytes();
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == wanted).then(|| {
                std::str::from_utf8(&pair[eq + 1..])
                    .ok()
                    .map(str::to_string)
            })?
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn finds_ours_past_a_foreign_non_ascii_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"other=caf\xe9; redwall_form=abc").unwrap(),
        );
        assert_eq!(value(&h, "redwall_form").as_deref(), Some("abc"));
        assert_eq!(value(&h, "redwall_mfa"), None);
    }
}
