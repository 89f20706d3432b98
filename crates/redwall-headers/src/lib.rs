//! What crosses every hop Redwall makes to a Node-RED (the hub's proxy,
//! the agent's endpoints on a site's network), in one place so the two
//! cannot drift apart. Pure functions over `http`'s header maps.
//!
//! Towards Node-RED: no hop-by-hop header, nothing in our header names (in
//! any spelling: a framework may read `x_redwall_user` as
//! `x-redwall-user`), none of our cookies, no Redwall token in any scheme,
//! the consumed credential gone, and forwarding headers that say what
//! Redwall saw on the socket (or from a trusted proxy) instead of what the
//! client claimed.
//!
//! Back from Node-RED: no cookie that is, or could be read as, one of
//! ours, and no challenge a browser could answer with a Redwall password.
//!
//! Who owns authentication on a route decides the rest. On a public route
//! of an instance with no `basic` rule the instance does: its own basic
//! credentials and challenges pass (but never our realm). Once any rule of
//! an instance asks for a Redwall password, a browser may send that
//! password to every path below the one it was asked on (and, on the same
//! origin, to any path a challenge in our realm names), so on such an
//! instance no basic credential reaches a flow and no flow challenges.
//! Everywhere else (editor, session, API-key and basic rules) Redwall
//! decides, and the instance's challenges are dropped.

use std::net::IpAddr;

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// What of the client's Authorization header Node-RED may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// None of it: Redwall consumed it (an API key, a session), or decides
    /// on this path (the editor).
    Drop,
    /// A foreign credential, but no basic one: the instance has rules that
    /// ask for Redwall passwords, so a browser may send one to any path.
    NoBasic,
    /// Any foreign credential: the instance owns authentication here.
    Foreign,
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// `HeaderName`s, not `&str`s: a `&str` is parsed (and copied) again on
/// every use, and this runs twice a request. A `static`: a `const` array is
/// built and dropped again at every use.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Client-address headers a flow might believe; replaced by ours.
const CLIENT_ADDRESS_HEADERS: [&str; 8] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
];

/// Removes the hop-by-hop headers and those the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, comparing parsed names (cheap), then a
    // removal (a hash and a probe) only of those present: a request
    // usually has none, an answer Connection and Keep-Alive.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Connection nearly always names only "keep-alive" or "close" (hop-by-hop
    // anyway, or no header at all), so the names are collected, into a
    // `Vec`, only when it names something else.
    if connection_names(headers).next().is_some() {
        let named: Vec<HeaderName> = connection_names(headers)
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// What the Connection headers name, but "keep-alive" and "close".
fn connection_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
}

/// A header name as a lenient reader could take it: lower case, with `_`
/// (and any other separator) read as `-`.
fn normalized(name: &str) -> String {
    name.bytes().map(|b| normalized_byte(b) as char).collect()
}

fn normalized_byte(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// Our header names in any spelling, and the forwarding headers we set.
/// (`Authorization` is judged apart, by its value: `prepare_request`.)
fn is_ours_or_forwarding(name: &str) -> bool {
    // Normalized on the stack: a request's every header name passes here.
    let mut buf = [0u8; 64];
    let owned;
    let n: &str = if name.len() <= buf.len() {
        for (d, b) in buf.iter_mut().zip(name.bytes()) {
            *d = normalized_byte(b);
        }
        // Only ASCII letters, digits and '-' were written.
        std::str::from_utf8(&buf[..name.len()]).unwrap_or_default()
    } else {
        owned = normalized(name);
        &owned
    };
    n.starts_with("x-redwall")
        || n == "x-csrf-token"
        || n == "x-api-key"
        || n.starts_with("x-forwarded-")
        || CLIENT_ADDRESS_HEADERS.contains(&n)
}

fn mentions_redwall(bytes: &[u8]) -> bool {
    bytes.windows(7).any(|w| w.eq_ignore_ascii_case(b"redwall"))
}

/// A cookie name that is, or could be read as, one of Redwall's (whatever
/// the case, with or without a `__Host-`/`__Secure-` prefix). Broader than
/// our names on purpose: a flow has no need of a cookie named like ours.
pub fn is_redwall_cookie(name: &[u8]) -> bool {
    mentions_redwall(name)
}

/// A word with the shape of one of Redwall's tokens (`rwp_`, `rwk_`, any
/// `rw?_`), in any case.
fn is_redwall_token(word: &[u8]) -> bool {
    word.len() > 4
        && word[..2].eq_ignore_ascii_case(b"rw")
        && word[2].is_ascii_alphabetic()
        && word[3] == b'_'
}

fn words(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|b| b.is_ascii_whitespace() || matches!(b, b',' | b':' | b'=' | b'"'))
        .filter(|w| !w.is_empty())
}

fn basic_credential(value: &[u8]) -> Option<Vec<u8>> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(value[space..].trim_ascii())
        .ok()
}

fn carries_redwall_token(value: &[u8]) -> bool {
    words(value).any(is_redwall_token)
        || basic_credential(value).is_some_and(|decoded| words(&decoded).any(is_redwall_token))
}

fn authorization_passes(value: &HeaderValue, authorization: Authorization) -> bool {
    let bytes = value.as_bytes();
    match authorization {
        Authorization::Drop => false,
        _ if carries_redwall_token(bytes) => false,
        Authorization::NoBasic => !bytes
            .trim_ascii_start()
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"basic")),
        Authorization::Foreign => true,
    }
}

/// Prepares a request's headers for Node-RED: removes what it must never
/// see and says who the client is. `authority` is the host the client
/// asked for (HTTP/2's `:authority`, else `Host`).
pub fn prepare_request(
    headers: &mut HeaderMap,
    peer: IpAddr,
    https: bool,
    authority: Option<&str>,
    authorization: Authorization,
) {
    // Usually none: then `collect` allocates nothing. Authorization, the one
    // such header nearly every request to a rule with a credential carries,
    // is removed on its own below, so it does not take a `Vec` either.
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_ours_or_forwarding(k.as_str()))
        .cloned()
        .collect();
    for k in ours {
        headers.remove(k);
    }
    let drop_authorization = authorization == Authorization::Drop
        || headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .any(|v| !authorization_passes(v, authorization));
    if drop_authorization {
        headers.remove(header::AUTHORIZATION);
    }
    strip_our_cookies(headers);
    set_forwarding(headers, peer, https, authority);
}

// Parsed once, not on every insert: a `&str` name is parsed and checked
// again by each `HeaderMap::insert` (a few hundred instructions a name).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
// Values that need no copy.
const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

fn set_forwarding(headers: &mut HeaderMap, peer: IpAddr, https: bool, authority: Option<&str>) {
    let ip = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    let mut v4_buf = [0u8; 15];
    let v6_text;
    let ip_text: &str = match ip {
        IpAddr::V4(v4) => ipv4_text(v4, &mut v4_buf),
        IpAddr::V6(v6) => {
            v6_text = v6.to_string();
            &v6_text
        }
    };
    let proto = if https { "https" } else { "http" };
    let authority = authority.filter(|a| !a.bytes().any(|b| b == b'"' || b == b'\\'));
    // for=NODE;proto=PROTO[;host="AUTHORITY"], built in one buffer of the
    // exact length: the value then takes the buffer as it is (a spare byte
    // would cost `Bytes` another allocation).
    let len = "for=".len()
        + ip_text.len()
        + if ip.is_ipv6() { "\"[]\"".len() } else { 0 }
        + ";proto=".len()
        + proto.len()
        + authority.map_or(0, |a| ";host=\"\"".len() + a.len());
    let mut forwarded = String::with_capacity(len);
    forwarded.push_str("for=");
    if ip.is_ipv6() {
        forwarded.push_str("\"[");
        forwarded.push_str(ip_text);
        forwarded.push_str("]\"");
    } else {
        forwarded.push_str(ip_text);
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if let Some(a) = authority {
        forwarded.push_str(";host=\"");
        forwarded.push_str(a);
        forwarded.push('"');
    }
    set(headers, X_FORWARDED_FOR, ip_text);
    set(headers, X_REAL_IP, ip_text);
    headers.insert(X_FORWARDED_PROTO, if https { HTTPS } else { HTTP });
    // The String's own buffer becomes the value (`from_str` would copy it).
    // For ASCII text `try_from` refuses exactly what `from_str` refuses.
    if forwarded.is_ascii() {
        if let Ok(v) = HeaderValue::try_from(forwarded) {
            headers.insert(header::FORWARDED, v);
        }
    }
    if let Some(a) = authority {
        set(headers, X_FORWARDED_HOST, a);
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// An IPv4 address as dotted text, written into `buf`: `Ipv4Addr`'s
/// `Display` goes through the formatting machinery and a `String` (about
/// 1,300 instructions on every request).
fn ipv4_text(ip: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> &str {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    // Only ASCII digits and dots were written.
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// Removes Redwall's cookies from the Cookie headers, byte by byte so that
/// another application's non-ASCII cookie neither hides ours nor is lost.
fn strip_our_cookies(headers: &mut HeaderMap) {
    let ours = |pair: &[u8]| {
        let pair = pair.trim_ascii();
        let name = pair
            .iter()
            .position(|&b| b == b'=')
            .map_or(pair, |eq| &pair[..eq]);
        mentions_redwall(name)
    };
    if !headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b';').any(ours))
    {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() || ours(pair) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(&kept) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// RFC 6265 token bytes: visible ASCII but the separators.
fn is_token_byte(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// The name a Set-Cookie value sets, when it is a plain token and the whole
/// value printable ASCII; `None` for anything a browser might read another
/// way.
pub fn set_cookie_name(value: &[u8]) -> Option<&[u8]> {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return None;
    }
    let pair_end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    let pair = &value[..pair_end];
    let eq = pair.iter().position(|&b| b == b'=')?;
    let name = pair[..eq].trim_ascii();
    (!name.is_empty() && name.iter().all(|&b| is_token_byte(b))).then_some(name)
}

/// A flow must not set or overwrite Redwall's cookies (`redwall_*`,
/// `__Host-redwall_*`, or anything that could be read as one). What cannot
/// be parsed plainly is dropped too.
pub fn drop_our_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| set_cookie_name(v.as_bytes()).is_some_and(|n| !mentions_redwall(n)))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Keeps Node-RED's `WWW-Authenticate` only where it owns authentication,
/// and never one naming Redwall's realm.
pub fn filter_challenges(headers: &mut HeaderMap, instance_may_challenge: bool) {
    if !headers.contains_key(header::WWW_AUTHENTICATE) {
        return;
    }
    let kept: Vec<HeaderValue> = if instance_may_challenge {
        headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter(|v| {
                let b = v.as_bytes();
                b.is_ascii() && !mentions_redwall(b)
            })
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    headers.remove(header::WWW_AUTHENTICATE);
    for v in kept {
        headers.append(header::WWW_AUTHENTICATE, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    // The names the runtime's settings.js reads (redwall_runtime::token).
    const EDITOR_TOKEN_HEADER: &str = "x-redwall-editor-token";
    const ENDPOINT_TOKEN_HEADER: &str = "x-redwall-endpoint-token";
    const USER_HEADER: &str = "x-redwall-user";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    const SITE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn our_headers_and_cookies_never_reach_node_red() {
        let mut h = headers(&[
            (EDITOR_TOKEN_HEADER, b"forged"),
            (ENDPOINT_TOKEN_HEADER, b"forged"),
            (USER_HEADER, b"admin"),
            ("x_redwall_user", b"admin"),
            ("X-Redwall_Anything", b"forged"),
            ("x-redwallish", b"forged"),
            ("x-csrf-token", b"t"),
            ("x_api_key", b"rwk_x"),
            ("x-api-key", b"rwk_x"),
            ("authorization", b"Bearer rwk_x"),
            ("cookie", b"redwall_session=rwc_a; theme=dark"),
            ("cookie", b"__Host-redwall_pass=p; lang=caf\xe9"),
            ("accept", b"*/*"),
        ]);
        prepare_request(&mut h, SITE, true, None, Authorization::Drop);
        assert_eq!(
            names(&h),
            [
                "accept",
                "cookie",
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-real-ip"
            ]
        );
        assert_eq!(h[header::COOKIE].as_bytes(), b"theme=dark; lang=caf\xe9");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=https");
        let mut only_ours = headers(&[("cookie", b"redwall_session=x")]);
        prepare_request(&mut only_ours, SITE, true, None, Authorization::Foreign);
        assert!(only_ours.get(header::COOKIE).is_none());
    }

    #[test]
    fn forwarding_headers_say_what_the_agent_saw() {
        let mut h = headers(&[
            ("forwarded", b"for=6.6.6.6"),
            ("x-forwarded-for", b"6.6.6.6"),
            ("X_Forwarded_Host", b"evil"),
            ("x-forwarded-port", b"1"),
            ("x-real-ip", b"6.6.6.6"),
            ("true-client-ip", b"6.6.6.6"),
            ("cf-connecting-ip", b"6.6.6.6"),
        ]);
        prepare_request(
            &mut h,
            SITE,
            false,
            Some("gw.plant.test:8443"),
            Authorization::Foreign,
        );
        assert_eq!(h["x-forwarded-host"], "gw.plant.test:8443");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1;proto=http;host=\"gw.plant.test:8443\""
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-forwarded-port").is_none());
        assert!(h.get("true-client-ip").is_none());
        assert!(!h.iter().any(|(_, v)| v
            .as_bytes()
            .windows(4)
            .any(|w| w == b"6.6." || w == b"evil")));
        let mut v6 = HeaderMap::new();
        prepare_request(
            &mut v6,
            "2001:db8::1".parse().unwrap(),
            true,
            Some("a\"b"),
            Authorization::Foreign,
        );
        assert_eq!(v6["forwarded"], "for=\"[2001:db8::1]\";proto=https");
        assert!(v6.get("x-forwarded-host").is_none());
        let mut mapped = HeaderMap::new();
        prepare_request(
            &mut mapped,
            "::ffff:10.0.0.1".parse().unwrap(),
            true,
            None,
            Authorization::Foreign,
        );
        assert_eq!(mapped["x-real-ip"], "10.0.0.1");
    }

    #[test]
    fn redwall_tokens_never_pass_and_basic_only_where_the_instance_owns_it() {
        let token = format!("rwp_{}", "A".repeat(43));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let basic_token = format!("Basic {}", b64(&format!("ci:{token}")));
        let basic_device = format!("Basic {}", b64("device:s3cret"));
        let cases: [(String, Authorization, bool); 10] = [
            (format!("Bearer {token}"), Authorization::Foreign, false),
            (
                format!("bearer RWK_{}", "b".repeat(43)),
                Authorization::Foreign,
                false,
            ),
            (
                format!("Token token=\"{token}\""),
                Authorization::Foreign,
                false,
            ),
            (token.clone(), Authorization::Foreign, false),
            (basic_token, Authorization::Foreign, false),
            ("Bearer device-own".into(), Authorization::Foreign, true),
            (basic_device.clone(), Authorization::Foreign, true),
            (basic_device, Authorization::NoBasic, false),
            ("Bearer device-own".into(), Authorization::NoBasic, true),
            ("Bearer device-own".into(), Authorization::Drop, false),
        ];
        for (value, authorization, passes) in cases {
            let mut h = headers(&[("authorization", value.as_bytes())]);
            prepare_request(&mut h, SITE, true, None, authorization);
            assert_eq!(
                h.contains_key(header::AUTHORIZATION),
                passes,
                "{value} {authorization:?}"
            );
        }
    }

    #[test]
    fn ipv4_text_is_the_dotted_form() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "1.20.199.250",
        ] {
            let parsed: std::net::Ipv4Addr = ip.parse().unwrap();
            assert_eq!(ipv4_text(parsed, &mut [0; 15]), ip);
        }
    }

    #[test]
    fn connection_tokens_keep_alive_and_close_name_nothing() {
        let mut h = headers(&[
            ("connection", b"Keep-Alive, close"),
            ("keep-alive", b"timeout=5"),
            ("close", b"1"),
            ("content-type", b"text/plain"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["close", "content-type"]);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", b"keep-alive, x-private"),
            ("keep-alive", b"timeout=5"),
            ("transfer-encoding", b"chunked"),
            ("x-private", b"1"),
            ("upgrade", b"h2c"),
            ("te", b"trailers"),
            ("proxy-authorization", b"Basic x"),
            ("content-type", b"text/plain"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-type"]);
    }

    #[test]
    fn only_plainly_named_foreign_cookies_may_be_set() {
        let values: [&[u8]; 12] = [
            b"redwall_session=rwc_x\xe9",
            b"=__Host-redwall_session=rwc_x",
            b"=x",
            b"__HOST-REDWALL_SESSION=x; Secure",
            b" redwall_session=x",
            b"__Secure-redwall_instance=x",
            b"caf\xe9=1",
            b"\"redwall_session\"=x",
            b"session_redwall=x",
            b"theme",
            b"theme=dark; Path=/",
            b"lang=en",
        ];
        let pairs: Vec<(&str, &[u8])> = values.iter().map(|v| ("set-cookie", *v)).collect();
        let mut h = headers(&pairs);
        drop_our_cookies(&mut h);
        let kept: Vec<&[u8]> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(kept, [&b"theme=dark; Path=/"[..], b"lang=en"]);
    }

    #[test]
    fn challenges_pass_only_where_the_instance_owns_auth_and_never_in_our_realm() {
        let all: [&[u8]; 4] = [
            b"Basic realm=\"redwall\"",
            b"Basic realm=\"ReDwAlL\", charset=\"UTF-8\"",
            b"Bearer realm=\"sensors\"",
            b"Basic realm=\"caf\xe9\"",
        ];
        let pairs: Vec<(&str, &[u8])> = all.iter().map(|v| ("www-authenticate", *v)).collect();
        let mut h = headers(&pairs);
        filter_challenges(&mut h, true);
        let kept: Vec<&[u8]> = h
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(kept, [&b"Bearer realm=\"sensors\""[..]]);
        filter_challenges(&mut h, false);
        assert!(h.get(header::WWW_AUTHENTICATE).is_none());
    }
}
