//! What crosses the agent between a client of the site and a flow: the
//! same rules as the hub's proxy, from `redwall_headers` (one copy for
//! both, so they cannot drift apart).

pub use redwall_headers::{
    drop_our_cookies, filter_challenges, prepare_request, strip_hop_by_hop, Authorization,
};
