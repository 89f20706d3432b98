//! What an isolated instance may reach on the network.
//!
//! By default an instance reaches the outside network and nothing of the
//! hub's host: not the host's own addresses (any service listening there),
//! not loopback, not link-local or cloud metadata addresses, not the links of
//! other instances. An Owner may open exceptions, each an address range with
//! a protocol and optionally ports: an instance's **egress policy**.
//!
//! Parsing fails closed: a range that does not parse, has host bits set,
//! covers every address, or names loopback is refused with a reason, never
//! read as "any". [`decide`] states the whole rule; the runtime's nftables
//! table implements it (rules first, then the default refusals).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// How many rules one instance's policy may hold.
pub const MAX_RULES: usize = 64;

/// A rule as an Owner writes it (API body, stored JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRuleInput {
    /// An address (`10.0.0.5`) or a range in CIDR form (`10.0.0.0/24`).
    pub cidr: String,
    /// `tcp` (the default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `5432`, `8000-8100`; absent for every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// An inclusive port range, `1 <= start <= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// A validated rule: its network has no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EgressRule {
    pub network: IpNet,
    pub protocol: Protocol,
    /// `None`: every port.
    pub ports: Option<PortRange>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("rule {index}: {reason}")]
    Rule { index: usize, reason: String },
    #[error("an egress policy holds at most {MAX_RULES} rules")]
    TooMany,
}

/// Parses an address or CIDR range. Refuses what is not exactly one range
/// of addresses an exception may name.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the range is empty".into());
    }
    let net: IpNet = if text.contains('/') {
        text.parse()
            .map_err(|_| format!("{text:?} is not an address range in CIDR form"))?
    } else {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address"))?;
        IpNet::from(addr)
    };
    if net.network() != net.addr() {
        return Err(format!(
            "{text:?} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    if net.prefix_len() == 0 {
        return Err("a rule may not cover every address; name the ranges the flows need".into());
    }
    let overlaps = |other: IpNet| net.contains(&other) || other.contains(&net);
    if overlaps(v4(Ipv4Addr::new(127, 0, 0, 0), 8)) || overlaps(v6(Ipv6Addr::LOCALHOST, 128)) {
        return Err(
            "loopback is the instance's own: the host's loopback services cannot be opened to it"
                .into(),
        );
    }
    // IPv4-mapped addresses would sidestep the IPv4 rules.
    if overlaps(v6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96)) {
        return Err("IPv4-mapped IPv6 ranges are not accepted; write the IPv4 range".into());
    }
    Ok(net)
}

fn v4(a: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(a, len).unwrap_or_default())
}

fn v6(a: Ipv6Addr, len: u8) -> IpNet {
    IpNet::V6(ipnet::Ipv6Net::new(a, len).unwrap_or_default())
}

pub fn parse_ports(text: &str) -> Result<PortRange, String> {
    let port = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a port number"));
        }
        match s.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("port {s} is outside 1-65535")),
            Ok(p) => Ok(p),
        }
    };
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if start > end {
        return Err(format!("the port range {text:?} runs backwards"));
    }
    Ok(PortRange { start, end })
}

pub fn parse_protocol(text: Option<&str>) -> Result<Protocol, String> {
    match text.map(str::trim) {
        None | Some("tcp") => Ok(Protocol::Tcp),
        Some("udp") => Ok(Protocol::Udp),
        Some(other) => Err(format!("protocol {other:?} is not tcp or udp")),
    }
}

/// Validates a whole policy: every rule or none. Duplicates are dropped,
/// order kept.
pub fn validate(inputs: &[EgressRuleInput]) -> Result<Vec<EgressRule>, EgressError> {
    if inputs.len() > MAX_RULES {
        return Err(EgressError::TooMany);
    }
    let mut rules: Vec<EgressRule> = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let fail = |reason: String| EgressError::Rule { index, reason };
        let rule = EgressRule {
            network: parse_network(&input.cidr).map_err(fail)?,
            protocol: parse_protocol(input.protocol.as_deref()).map_err(fail)?,
            ports: input
                .ports
                .as_deref()
                .map(parse_ports)
                .transpose()
                .map_err(fail)?,
        };
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

impl EgressRule {
    /// The canonical input form, for storage and answers.
    pub fn to_input(&self) -> EgressRuleInput {
        EgressRuleInput {
            cidr: self.network.to_string(),
            protocol: Some(
                match self.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                }
                .into(),
            ),
            ports: self.ports.map(|p| {
                if p.start == p.end {
                    p.start.to_string()
                } else {
                    format!("{}-{}", p.start, p.end)
                }
            }),
        }
    }

    pub fn matches(&self, dest: IpAddr, protocol: Protocol, port: u16) -> bool {
        self.network.contains(&dest)
            && self.protocol == protocol
            && self.ports.is_none_or(|p| (p.start..=p.end).contains(&port))
    }
}

/// Why traffic is refused by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An address of the hub's host (its services listen there).
    Host,
    Loopback,
    /// Link-local, which holds cloud metadata services (169.254.169.254).
    LinkLocal,
    /// AWS's IPv6 metadata address and the like.
    Metadata,
    /// Another instance's link.
    OtherInstance,
    /// Unspecified, multicast, broadcast or reserved: never a service.
    NotAService,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An egress rule names it.
    AllowedByRule(usize),
    /// Not the host: the outside network.
    AllowedOutside,
    Refused(Refusal),
}

/// IPv6 metadata addresses of the large clouds.
pub const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// The default refusal for `dest`, if any. `host_addresses` are the host's
/// own; `instance_block` holds every instance's link.
pub fn default_refusal(
    dest: IpAddr,
    host_addresses: &[IpAddr],
    instance_block: IpNet,
) -> Option<Refusal> {
    let dest = match dest {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(dest, IpAddr::V4),
        v4 => v4,
    };
    if host_addresses.contains(&dest) {
        return Some(Refusal::Host);
    }
    match dest {
        IpAddr::V4(a) => {
            if a.is_loopback() {
                Some(Refusal::Loopback)
            } else if a.is_link_local() {
                Some(Refusal::LinkLocal)
            } else if instance_block.contains(&dest) {
                Some(Refusal::OtherInstance)
            } else if a.is_unspecified()
                || a.octets()[0] == 0
                || a.is_multicast()
                || a.is_broadcast()
                || a.octets()[0] >= 240
            {
                Some(Refusal::NotAService)
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if a.is_loopback() {
                Some(Refusal::Loopback)
            } else if METADATA_V6.contains(&a) {
                Some(Refusal::Metadata)
            } else if a.is_unicast_link_local() {
                Some(Refusal::LinkLocal)
            } else if instance_block.contains(&dest) {
                Some(Refusal::OtherInstance)
            } else if a.is_unspecified() || a.is_multicast() {
                Some(Refusal::NotAService)
            } else {
                None
            }
        }
    }
}

/// Whether an isolated instance may open traffic to `dest:port`: the first
/// matching rule allows; otherwise the default refusals apply; otherwise it
/// is the outside network and allowed.
pub fn decide(
    dest: IpAddr,
    protocol: Protocol,
    port: u16,
    rules: &[EgressRule],
    host_addresses: &[IpAddr],
    instance_block: IpNet,
) -> Verdict {
    if let Some(i) = rules.iter().position(|r| r.matches(dest, protocol, port)) {
        return Verdict::AllowedByRule(i);
    }
    match default_refusal(dest, host_addresses, instance_block) {
        Some(r) => Verdict::Refused(r),
        None => Verdict::AllowedOutside,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(cidr: &str, protocol: Option<&str>, ports: Option<&str>) -> EgressRuleInput {
        EgressRuleInput {
            cidr: cidr.into(),
            protocol: protocol.map(Into::into),
            ports: ports.map(Into::into),
        }
    }

    fn block() -> IpNet {
        "10.254.0.0/15".parse().unwrap()
    }

    #[test]
    fn ranges_fail_closed() {
        for bad in [
            "",
            " ",
            "any",
            "*",
            "0.0.0.0/0",
            "::/0",
            "10.0.0.1/24",
            "10.0.0.0/33",
            "10.0.0.0/",
            "/24",
            "10.0.0",
            "10.0.0.0/24/8",
            "10.0.0.0/-1",
            "127.0.0.1",
            "127.0.0.0/8",
            "127.5.0.0/16",
            "64.0.0.0/2",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0:0/96",
            "fe80::1%eth0",
            "10.0.0.0 /24",
        ] {
            assert!(parse_network(bad).is_err(), "{bad:?} accepted");
        }
        for (good, canonical) in [
            ("10.0.0.5", "10.0.0.5/32"),
            (" 10.0.0.0/24 ", "10.0.0.0/24"),
            ("169.254.169.254/32", "169.254.169.254/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("fd00:ec2::254", "fd00:ec2::254/128"),
            ("128.0.0.0/1", "128.0.0.0/1"),
        ] {
            assert_eq!(parse_network(good).unwrap().to_string(), canonical);
        }
    }

    #[test]
    fn ports_and_protocols_are_exact() {
        for bad in [
            "", "0", "65536", "-1", "80-", "-80", "90-80", "8o", "1,2", " ",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_ports("5432").unwrap(),
            PortRange {
                start: 5432,
                end: 5432
            }
        );
        assert_eq!(
            parse_ports("1-65535").unwrap(),
            PortRange {
                start: 1,
                end: 65535
            }
        );
        assert_eq!(parse_protocol(None).unwrap(), Protocol::Tcp);
        assert_eq!(parse_protocol(Some("udp")).unwrap(), Protocol::Udp);
        for bad in ["", "TCP", "icmp", "any"] {
            assert!(parse_protocol(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_policy_is_all_valid_or_refused_with_the_bad_rule() {
        let ok = validate(&[
            input("10.0.0.0/24", None, Some("5432")),
            input("10.0.0.0/24", Some("tcp"), Some("5432")),
            input("192.0.2.7", Some("udp"), None),
        ])
        .unwrap();
        assert_eq!(ok.len(), 2, "duplicates are dropped");
        assert_eq!(
            ok[0].to_input(),
            input("10.0.0.0/24", Some("tcp"), Some("5432"))
        );
        let err =
            validate(&[input("10.0.0.0/24", None, None), input("nope", None, None)]).unwrap_err();
        assert!(matches!(err, EgressError::Rule { index: 1, .. }), "{err}");
        let many = vec![input("10.0.0.0/24", None, None); MAX_RULES + 1];
        assert_eq!(validate(&many).unwrap_err(), EgressError::TooMany);
        assert!(validate(&[]).unwrap().is_empty());
        // Unknown fields are refused, not ignored.
        assert!(
            serde_json::from_str::<EgressRuleInput>(r#"{"cidr":"10.0.0.0/8","allow":"all"}"#)
                .is_err()
        );
    }

    #[test]
    fn by_default_the_host_is_refused_and_the_outside_allowed() {
        let host: Vec<IpAddr> = vec![
            "192.168.1.10".parse().unwrap(),
            "10.254.156.64".parse().unwrap(),
        ];
        let d = |a: &str| decide(a.parse().unwrap(), Protocol::Tcp, 80, &[], &host, block());
        use Refusal::*;
        for (addr, want) in [
            ("127.0.0.1", Verdict::Refused(Loopback)),
            ("127.9.9.9", Verdict::Refused(Loopback)),
            ("::1", Verdict::Refused(Loopback)),
            ("::ffff:127.0.0.1", Verdict::Refused(Loopback)),
            ("192.168.1.10", Verdict::Refused(Host)),
            ("::ffff:192.168.1.10", Verdict::Refused(Host)),
            ("10.254.156.64", Verdict::Refused(Host)),
            ("10.254.0.3", Verdict::Refused(OtherInstance)),
            ("169.254.169.254", Verdict::Refused(LinkLocal)),
            ("169.254.0.1", Verdict::Refused(LinkLocal)),
            ("fe80::1", Verdict::Refused(LinkLocal)),
            ("fd00:ec2::254", Verdict::Refused(Metadata)),
            ("0.0.0.0", Verdict::Refused(NotAService)),
            ("0.1.2.3", Verdict::Refused(NotAService)),
            ("224.0.0.1", Verdict::Refused(NotAService)),
            ("255.255.255.255", Verdict::Refused(NotAService)),
            ("240.0.0.1", Verdict::Refused(NotAService)),
            ("::", Verdict::Refused(NotAService)),
            ("ff02::1", Verdict::Refused(NotAService)),
            ("192.168.1.11", Verdict::AllowedOutside),
            ("198.18.7.2", Verdict::AllowedOutside),
            ("8.8.8.8", Verdict::AllowedOutside),
            ("2001:db8::1", Verdict::AllowedOutside),
        ] {
            assert_eq!(d(addr), want, "{addr}");
        }
    }

    #[test]
    fn a_rule_opens_exactly_its_range_protocol_and_ports() {
        let host: Vec<IpAddr> = vec!["192.168.1.10".parse().unwrap()];
        let rules = validate(&[
            input("169.254.169.254", None, Some("80")),
            input("192.168.1.10", Some("udp"), Some("5000-5010")),
        ])
        .unwrap();
        let d =
            |a: &str, proto, port| decide(a.parse().unwrap(), proto, port, &rules, &host, block());
        assert_eq!(
            d("169.254.169.254", Protocol::Tcp, 80),
            Verdict::AllowedByRule(0)
        );
        assert_eq!(
            d("169.254.169.254", Protocol::Tcp, 81),
            Verdict::Refused(Refusal::LinkLocal)
        );
        assert_eq!(
            d("169.254.169.254", Protocol::Udp, 80),
            Verdict::Refused(Refusal::LinkLocal)
        );
        assert_eq!(
            d("169.254.169.253", Protocol::Tcp, 80),
            Verdict::Refused(Refusal::LinkLocal)
        );
        assert_eq!(
            d("192.168.1.10", Protocol::Udp, 5005),
            Verdict::AllowedByRule(1)
        );
        assert_eq!(
            d("192.168.1.10", Protocol::Udp, 5011),
            Verdict::Refused(Refusal::Host)
        );
        assert_eq!(
            d("192.168.1.10", Protocol::Tcp, 5005),
            Verdict::Refused(Refusal::Host)
        );
    }

    proptest! {
        /// Whatever an Owner types, a range either is refused or is one
        /// canonical, non-empty, non-loopback range that never covers
        /// every address.
        #[test]
        fn any_text_is_refused_or_a_canonical_range(text in "[0-9a-f:./ -]{0,24}") {
            if let Ok(net) = parse_network(&text) {
                prop_assert!(net.prefix_len() > 0);
                prop_assert_eq!(net.network(), net.addr());
                prop_assert_eq!(parse_network(&net.to_string()), Ok(net));
                prop_assert!(!net.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
                prop_assert!(!net.contains(&"::1".parse::<IpAddr>().unwrap()));
            }
        }

        /// A rule never allows less than it names, and nothing outside it.
        #[test]
        fn rules_match_only_inside_their_range(a in any::<u32>(), len in 1u8..=32, d in any::<u32>(), port in 1u16..) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
            if let Ok(rules) = validate(&[input(&net.to_string(), None, None)]) {
                let dest = IpAddr::V4(Ipv4Addr::from(d));
                let allowed = matches!(
                    decide(dest, Protocol::Tcp, port, &rules, &[], block()),
                    Verdict::AllowedByRule(_)
                );
                prop_assert_eq!(allowed, net.contains(&Ipv4Addr::from(d)));
            }
        }
    }
}
