//! The host side of an isolated instance's network: a named network
//! namespace, a veth pair into it, and one nftables table that decides what
//! leaves it.
//!
//! Everything is named after the instance's port, which is unique on the
//! host: namespace `redwall-<port>`, host link `rwh<port>`, table
//! `inet redwall_<port>`. That lets a new supervisor remove what a killed one
//! left (see [`tear_down`]) without any record but the port.
//!
//! What the table enforces, for packets coming from the instance:
//! - to any address of the host itself (input hook): refused, except what an
//!   egress rule allows; answers on connections Redwall opened pass;
//! - forwarded to loopback, "this network", link-local (metadata), multicast,
//!   other instances' links: refused, except egress rules;
//! - anything else: forwarded and masqueraded, so flows reach the outside
//!   network.
//!
//! Nothing forwarded may open a connection into the instance. Refusals are
//! `reject` (ICMP administratively prohibited, or a TCP reset), so a flow gets
//! a quick, clear error instead of a hang.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::spec::{isolated_addresses, EgressProtocol, EgressRule, ISOLATED_BLOCK};
use crate::RuntimeError;

pub(crate) fn netns_name(port: u16) -> String {
    format!("redwall-{port}")
}

fn host_link(port: u16) -> String {
    format!("rwh{port}")
}

fn instance_link(port: u16) -> String {
    format!("rwi{port}")
}

fn table(port: u16) -> String {
    format!("redwall_{port}")
}

pub(crate) fn netns_path(port: u16) -> String {
    format!("/run/netns/{}", netns_name(port))
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("`{program}` could not be run: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("writing to `{program}`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for `{program}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether a namespace named for `port` exists with no process in it: what
/// a killed supervisor leaves behind.
fn stale(port: u16) -> bool {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", &netns_name(port)])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    out.status.success() && out.stdout.iter().all(u8::is_ascii_whitespace)
}

/// Creates the namespace, the link and the table for the instance on
/// `port`. A namespace of that port in use by a live process is refused
/// (another instance holds the port); a stale one is replaced.
pub(crate) fn set_up(port: u16, egress: &[EgressRule]) -> Result<(), RuntimeError> {
    let err = |e: String| RuntimeError::Sandbox(format!("network isolation: {e}"));
    if Path::new(&netns_path(port)).exists() {
        if !stale(port) {
            return Err(RuntimeError::PortInUse(port));
        }
        tear_down(port);
    }
    let ns = netns_name(port);
    let (host, inner) = isolated_addresses(port);
    let result = (|| {
        run("ip", &["netns", "add", &ns], None)?;
        let host_if = host_link(port);
        let inner_if = instance_link(port);
        run(
            "ip",
            &["-batch", "-"],
            Some(&format!(
                "link add {host_if} type veth peer name {inner_if} netns {ns}\n\
                 addr add {host}/31 dev {host_if}\n\
                 link set {host_if} up\n"
            )),
        )?;
        run(
            "ip",
            &["-n", &ns, "-batch", "-"],
            Some(&format!(
                "link set lo up\n\
                 addr add {inner}/31 dev {inner_if}\n\
                 link set {inner_if} up\n\
                 route add default via {host}\n"
            )),
        )?;
        apply_rules(port, egress)?;
        enable_forwarding()
    })();
    if let Err(e) = result {
        tear_down(port);
        return Err(err(e));
    }
    Ok(())
}

/// Flows reach the outside through the host, which must forward. Like
/// Docker, Redwall turns IPv4 forwarding on; its table lets nothing be
/// forwarded into an instance.
fn enable_forwarding() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    tracing::warn!("turning on IPv4 forwarding (net.ipv4.ip_forward) so isolated instances reach the outside network");
    std::fs::write(path, "1").map_err(|e| format!("enabling IPv4 forwarding: {e}"))
}

/// Replaces the instance's table in one nftables transaction, so the
/// instance is never without rules.
pub(crate) fn apply_rules(port: u16, egress: &[EgressRule]) -> Result<(), String> {
    let t = table(port);
    let text = format!(
        "table inet {t}\ndelete table inet {t}\n{}",
        ruleset(port, egress)
    );
    run("nft", &["-f", "-"], Some(&text))
}

/// The instance's nftables table.
pub(crate) fn ruleset(port: u16, egress: &[EgressRule]) -> String {
    let t = table(port);
    let hif = host_link(port);
    let (_, inner) = isolated_addresses(port);
    let (block, block_len) = ISOLATED_BLOCK;
    let reject = "reject with icmpx type admin-prohibited";
    let mut allow = String::new();
    for rule in egress {
        let _ = writeln!(allow, "\t\tiifname \"{hif}\" {} accept", rule_match(rule));
    }
    format!(
        "table inet {t} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 5; policy accept;\n\
         \t\tiifname \"{hif}\" ct state established,related accept\n\
         {allow}\
         \t\tiifname \"{hif}\" meta l4proto tcp reject with tcp reset\n\
         \t\tiifname \"{hif}\" {reject}\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 5; policy accept;\n\
         \t\toifname \"{hif}\" ct state established,related accept\n\
         \t\toifname \"{hif}\" drop\n\
         \t\tiifname \"{hif}\" ct state established,related accept\n\
         {allow}\
         \t\tiifname \"{hif}\" ip daddr {{ 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4, {block}/{block_len} }} {reject}\n\
         \t\tiifname \"{hif}\" meta nfproto ipv6 {reject}\n\
         \t\tiifname \"{hif}\" ip saddr != {inner} drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {inner} oifname != \"{hif}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

fn rule_match(rule: &EgressRule) -> String {
    let family = match rule.network {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    };
    let proto = match rule.protocol {
        EgressProtocol::Tcp => "tcp",
        EgressProtocol::Udp => "udp",
    };
    let ports = match rule.ports {
        Some((a, b)) if a == b => format!(" {proto} dport {a}"),
        Some((a, b)) => format!(" {proto} dport {a}-{b}"),
        None => format!(" meta l4proto {proto}"),
    };
    format!("{family} daddr {}/{}{ports}", rule.network, rule.prefix_len)
}

/// Removes the table, the link and the namespace of `port`; what is already
/// gone is fine.
pub(crate) fn tear_down(port: u16) {
    let _ = run("nft", &["delete", "table", "inet", &table(port)], None);
    let _ = run("ip", &["link", "del", &host_link(port)], None);
    let _ = run("ip", &["netns", "del", &netns_name(port)], None);
}

/// What this machine allows for isolated instances; empty when everything
/// needed is there. Used by `redwall config check` and to refuse starting.
pub fn isolation_problems() -> Vec<String> {
    let mut problems = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        problems.push(
            "Redwall does not run as root, so it cannot create network, mount and PID namespaces for instances".to_owned(),
        );
        return problems;
    }
    if let Err(e) = run("ip", &["-V"], None) {
        problems.push(format!("{e} (install iproute2)"));
    }
    if let Err(e) = run("nft", &["--version"], None) {
        problems.push(format!("{e} (install nftables)"));
    } else if let Err(e) = run(
        "nft",
        &["--check", "-f", "-"],
        Some(&ruleset(
            1024,
            &[EgressRule {
                network: IpAddr::from([192, 0, 2, 0]),
                prefix_len: 24,
                protocol: EgressProtocol::Tcp,
                ports: Some((80, 443)),
            }],
        )),
    ) {
        problems.push(format!(
            "this kernel's nftables lacks what instances need (filter, nat, reject): {e}"
        ));
    }
    if let Err(e) = run(
        "unshare",
        &["--net", "--mount", "--pid", "--fork", "true"],
        None,
    ) {
        problems.push(format!(
            "this kernel refuses new network, mount or PID namespaces: {e}"
        ));
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_table_refuses_the_host_and_allows_egress_rules_first() {
        let rules = [
            EgressRule {
                network: IpAddr::from([169, 254, 169, 254]),
                prefix_len: 32,
                protocol: EgressProtocol::Tcp,
                ports: Some((80, 80)),
            },
            EgressRule {
                network: "2001:db8::".parse().unwrap(),
                prefix_len: 32,
                protocol: EgressProtocol::Udp,
                ports: None,
            },
        ];
        let text = ruleset(20000, &rules);
        let input = text.split("chain forward").next().unwrap();
        let allow = input
            .find("ip daddr 169.254.169.254/32 tcp dport 80 accept")
            .unwrap();
        let refuse = input.find("reject with icmpx").unwrap();
        assert!(allow < refuse, "{text}");
        assert!(text.contains("ip6 daddr 2001:db8::/32 meta l4proto udp accept"));
        assert!(text.contains("169.254.0.0/16"));
        assert!(text.contains("127.0.0.0/8"));
        assert!(text.contains("10.254.0.0/15"));
        assert!(text.contains("oifname \"rwh20000\" drop"));
        assert!(text.contains("ip saddr 10.254.156.65 oifname != \"rwh20000\" masquerade"));
    }
}
