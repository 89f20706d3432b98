// prepare_request on the header map of the benchmark's api_key request, N times.
use http::{HeaderMap, HeaderValue};
use redwall_headers::{prepare_request, strip_hop_by_hop, Authorization};
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut total = 0usize;
    for _ in 0..n {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:47100"));
        h.insert("authorization", HeaderValue::from_static("Bearer rwk__RlFNkh4iASWA0MLS5V134UXZ_g5oXUrs5NXj9V3wk0"));
        let h = std::hint::black_box(h);
        let mut h = h;
        prepare_request(&mut h, ip, false, Some("127.0.0.1:47100"), Authorization::Drop);
        strip_hop_by_hop(&mut h);
        total += h.len();
    }
    println!("{total}");
}
