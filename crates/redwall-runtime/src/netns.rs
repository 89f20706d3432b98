//! The network of isolated instances: one namespace per instance, all
//! behind one Redwall namespace that routes and filters for them.
//!
//! The host sees a single link, `rwhub`, to the Redwall namespace
//! `redwall-net`; it is made once (at Redwall's start) and then never
//! changes. Each instance's veth pair runs between its own namespace and
//! `redwall-net`, so starting and stopping instances adds and removes links
//! only there. That matters: a browser on the same host watches the host's
//! links and aborts its requests in flight on every change
//! (`ERR_NETWORK_CHANGED` in Chromium).
//!
//! Everything per instance is named after its port, which is unique on the
//! host: namespace `redwall-<port>`, links `rwh<port>` (in `redwall-net`)
//! and `rwi<port>` (in the instance), and table `inet redwall_<port>` both
//! in `redwall-net` and on the host. A new supervisor can remove what a
//! killed one left (see [`tear_down`]) with no record but the port.
//!
//! What the tables enforce for an instance:
//! - in `redwall-net` (every packet of the instance passes there): only its
//!   own address as source; to loopback, "this network", link-local
//!   (metadata), multicast, other instances and the host's link: refused,
//!   except egress rules; anything else is routed to the host. Nothing may
//!   open a connection into it but the host, to its port (Redwall's proxy).
//! - on the host: to any address of the host itself (input hook): refused,
//!   except egress rules; what leaves the host is masqueraded, so flows
//!   reach the outside network. Nothing forwarded enters `rwhub` but
//!   answers.
//!
//! Refusals are `reject` (ICMP administratively prohibited, or a TCP reset),
//! so a flow gets a quick, clear error instead of a hang.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::spec::{isolated_addresses, EgressProtocol, EgressRule, ISOLATED_BLOCK};
use crate::RuntimeError;

/// The namespace all instance links end in.
const HUB: &str = "redwall-net";
/// The host's end of the one link to [`HUB`], and the hub's end.
const HUB_HOST_LINK: &str = "rwhub";
const HUB_UPLINK: &str = "rwup";
/// The host's table for what is common to all instances.
const HUB_TABLE: &str = "redwall";

/// (host, hub) addresses of the hub's link: the pair of port 0, which no
/// instance uses (their ports are 1024 and above).
fn hub_addresses() -> (Ipv4Addr, Ipv4Addr) {
    isolated_addresses(0)
}

pub(crate) fn netns_name(port: u16) -> String {
    format!("redwall-{port}")
}

fn hub_link(port: u16) -> String {
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
    output(program, args, stdin).map(drop)
}

fn output(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
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
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// nftables inside the hub namespace.
fn hub_nft(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut all = vec!["netns", "exec", HUB, "nft"];
    all.extend_from_slice(args);
    run("ip", &all, stdin)
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

/// A veth pair from `outer_ns` (the host's when None) into `inner_ns`, a
/// /31 between them, and the inner side's default route through the outer.
fn veth_pair(
    outer_ns: Option<&str>,
    outer_if: &str,
    outer_addr: Ipv4Addr,
    inner_ns: &str,
    inner_if: &str,
    inner_addr: Ipv4Addr,
) -> Result<(), String> {
    let mut outer = vec!["-batch", "-"];
    if let Some(ns) = outer_ns {
        outer.splice(0..0, ["-n", ns]);
    }
    run(
        "ip",
        &outer,
        Some(&format!(
            "link add {outer_if} type veth peer name {inner_if} netns {inner_ns}\n\
             addr add {outer_addr}/31 dev {outer_if}\n\
             link set {outer_if} up\n"
        )),
    )?;
    run(
        "ip",
        &["-n", inner_ns, "-batch", "-"],
        Some(&format!(
            "link set lo up\n\
             addr add {inner_addr}/31 dev {inner_if}\n\
             link set {inner_if} up\n\
             route add default via {outer_addr}\n"
        )),
    )
}

/// What of the host already uses `addr`, which the instance's route would
/// take over: a resolver in `/etc/resolv.conf` (one at 10.255.255.53 was
/// seen), or a route of the host other than the default one.
fn host_uses(addr: Ipv4Addr) -> Option<String> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if resolv_names(&resolv, addr) {
        return Some("the DNS resolver".into());
    }
    let routes = output(
        "ip",
        &["-4", "route", "show", "match", &addr.to_string()],
        None,
    )
    .ok()?;
    routes
        .lines()
        .map(str::trim)
        .find(|r| !r.is_empty() && !r.starts_with("default") && !r.contains(HUB_HOST_LINK))
        .map(|r| format!("routed by `{r}`"))
}

fn resolv_names(resolv: &str, addr: Ipv4Addr) -> bool {
    resolv.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver") && words.next() == Some(addr.to_string().as_str())
    })
}

/// Serialises making the hub: instances start concurrently, and so may
/// several Redwalls (or test processes) on one host, hence a file lock
/// besides the one for this process's threads.
static HUB_LOCK: Mutex<()> = Mutex::new(());
const HUB_LOCK_FILE: &str = "/run/redwall-net.lock";

fn lock_hub_across_processes() -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(HUB_LOCK_FILE)
        .map_err(|e| format!("opening {HUB_LOCK_FILE}: {e}"))?;
    // SAFETY: flock on a descriptor we own; released when `file` closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "locking {HUB_LOCK_FILE}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// Makes the hub namespace, its link to the host
/// and the host's common table, where missing; what exists is left alone,
/// so the host's links change only the first time. Redwall calls it at
/// start, before any browser is at work, and before each isolated start.
pub fn prepare_network() -> Result<(), RuntimeError> {
    let _guard = HUB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    lock_hub_across_processes()
        .and_then(|_held| prepare_hub())
        .map_err(|e| RuntimeError::Sandbox(format!("network isolation: {e}")))
}

fn prepare_hub() -> Result<(), String> {
    let (host, hub) = hub_addresses();
    if !Path::new(&format!("/run/netns/{HUB}")).exists() {
        run("ip", &["netns", "add", HUB], None)?;
    }
    if run("ip", &["link", "show", "dev", HUB_HOST_LINK], None).is_err() {
        // A hub without its link (the link was deleted by hand): its old
        // end went with it, so make both again.
        veth_pair(None, HUB_HOST_LINK, host, HUB, HUB_UPLINK, hub)?;
    }
    enable_hub_forwarding()?;
    run(
        "nft",
        &["-f", "-"],
        Some(&format!(
            "table inet {HUB_TABLE}\ndelete table inet {HUB_TABLE}\n{}",
            hub_host_ruleset()
        )),
    )?;
    enable_forwarding()
}

/// The hub routes between instances' links and the host. `/proc/sys/net`
/// shows the namespace of the thread that opens it, so a thread of its own
/// enters the hub to write it (`setns` moves only the calling thread).
fn enable_hub_forwarding() -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), String> {
                let ns = std::fs::File::open(format!("/run/netns/{HUB}"))
                    .map_err(|e| format!("opening the namespace {HUB}: {e}"))?;
                // SAFETY: setns on a descriptor we own; only this thread moves.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "entering the namespace {HUB}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                    .map_err(|e| format!("enabling forwarding in {HUB}: {e}"))
            })
            .join()
            .unwrap_or_else(|_| Err("the thread entering the hub namespace panicked".into()))
    })
}

/// The host's table common to all instances: nothing forwarded opens a
/// connection towards the hub; what instances send out is masqueraded.
fn hub_host_ruleset() -> String {
    let (block, block_len) = ISOLATED_BLOCK;
    format!(
        "table inet {HUB_TABLE} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 5; policy accept;\n\
         \t\toifname \"{HUB_HOST_LINK}\" ct state established,related accept\n\
         \t\toifname \"{HUB_HOST_LINK}\" drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {block}/{block_len} oifname != \"{HUB_HOST_LINK}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Creates the namespace, the link and the tables for the instance on
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
    prepare_network()?;
    let ns = netns_name(port);
    let (gateway, inner) = isolated_addresses(port);
    if let Some(user) = host_uses(inner) {
        return Err(err(format!(
            "the instance's address {inner} (from its port {port}) is already {user} on this host; give the instance another port"
        )));
    }
    let result = (|| {
        run("ip", &["netns", "add", &ns], None)?;
        veth_pair(
            Some(HUB),
            &hub_link(port),
            gateway,
            &ns,
            &instance_link(port),
            inner,
        )?;
        apply_rules(port, egress)?;
        // One host route per instance, not one for the whole block: the
        // host may use other addresses of 10.254.0.0/15 (a resolver at
        // 10.255.255.53 was seen), and a route adds no link or address, so
        // the host's link watchers see nothing.
        let (_, hub) = hub_addresses();
        run(
            "ip",
            &[
                "route",
                "replace",
                &format!("{inner}/32"),
                "via",
                &hub.to_string(),
                "dev",
                HUB_HOST_LINK,
            ],
            None,
        )
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

/// Replaces the instance's tables, each in one nftables transaction, so
/// the instance is never without rules. The hub's goes first: it alone
/// decides what leaves the instance for anywhere but the host.
pub(crate) fn apply_rules(port: u16, egress: &[EgressRule]) -> Result<(), String> {
    let t = table(port);
    let replace = |text: String| format!("table inet {t}\ndelete table inet {t}\n{text}");
    hub_nft(&["-f", "-"], Some(&replace(hub_ruleset(port, egress))))?;
    run(
        "nft",
        &["-f", "-"],
        Some(&replace(host_ruleset(port, egress))),
    )
}

/// The instance's table in the hub namespace: what it may send where, and
/// who may connect to it.
pub(crate) fn hub_ruleset(port: u16, egress: &[EgressRule]) -> String {
    let t = table(port);
    let link = hub_link(port);
    let (_, inner) = isolated_addresses(port);
    let (host, _) = hub_addresses();
    let (block, block_len) = ISOLATED_BLOCK;
    let reject = "reject with icmpx type admin-prohibited";
    let mut allow = String::new();
    for rule in egress {
        let _ = writeln!(allow, "\t\tiifname \"{link}\" {} accept", rule_match(rule));
    }
    format!(
        "table inet {t} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 5; policy accept;\n\
         \t\toifname \"{link}\" ct state established,related accept\n\
         \t\toifname \"{link}\" iifname \"{HUB_UPLINK}\" ip saddr {host} tcp dport {port} accept\n\
         \t\toifname \"{link}\" drop\n\
         \t\tiifname \"{link}\" ip saddr != {inner} drop\n\
         \t\tiifname \"{link}\" ct state established,related accept\n\
         {allow}\
         \t\tiifname \"{link}\" ip daddr {{ 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4, {block}/{block_len} }} {reject}\n\
         \t\tiifname \"{link}\" meta nfproto ipv6 {reject}\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 5; policy accept;\n\
         \t\tiifname \"{link}\" meta l4proto tcp reject with tcp reset\n\
         \t\tiifname \"{link}\" {reject}\n\
         \t}}\n\
         }}\n"
    )
}

/// The instance's table on the host: which of the host's own addresses it
/// may reach (only what egress rules name). Its packets arrive on the hub's
/// link with its own address, which the hub guarantees.
pub(crate) fn host_ruleset(port: u16, egress: &[EgressRule]) -> String {
    let t = table(port);
    let (_, inner) = isolated_addresses(port);
    let from = format!("iifname \"{HUB_HOST_LINK}\" ip saddr {inner}");
    let reject = "reject with icmpx type admin-prohibited";
    let mut allow = String::new();
    for rule in egress.iter().filter(|r| r.network.is_ipv4()) {
        let _ = writeln!(allow, "\t\t{from} {} accept", rule_match(rule));
    }
    format!(
        "table inet {t} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 5; policy accept;\n\
         \t\t{from} ct state established,related accept\n\
         {allow}\
         \t\t{from} meta l4proto tcp reject with tcp reset\n\
         \t\t{from} {reject}\n\
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

/// Removes the tables, the link and the namespace of `port`; what is
/// already gone is fine. The hub and its link to the host stay.
pub(crate) fn tear_down(port: u16) {
    let _ = run("nft", &["delete", "table", "inet", &table(port)], None);
    if Path::new(&format!("/run/netns/{HUB}")).exists() {
        let _ = hub_nft(&["delete", "table", "inet", &table(port)], None);
        let _ = run("ip", &["-n", HUB, "link", "del", &hub_link(port)], None);
    }
    let (_, inner) = isolated_addresses(port);
    let (_, hub) = hub_addresses();
    let _ = run(
        "ip",
        &[
            "route",
            "del",
            &format!("{inner}/32"),
            "via",
            &hub.to_string(),
        ],
        None,
    );
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
    } else if let Err(e) = {
        let rules = [EgressRule {
            network: IpAddr::from([192, 0, 2, 0]),
            prefix_len: 24,
            protocol: EgressProtocol::Tcp,
            ports: Some((80, 443)),
        }];
        let all = format!(
            "{}{}{}",
            hub_host_ruleset(),
            hub_ruleset(1024, &rules),
            host_ruleset(1024, &rules)
        );
        run("nft", &["--check", "-f", "-"], Some(&all))
    } {
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

    fn rules() -> [EgressRule; 2] {
        [
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
        ]
    }

    #[test]
    fn the_hub_table_allows_egress_rules_before_its_refusals() {
        let text = hub_ruleset(20000, &rules());
        let forward = text.split("chain input").next().unwrap();
        let allow = forward
            .find("iifname \"rwh20000\" ip daddr 169.254.169.254/32 tcp dport 80 accept")
            .unwrap();
        let refuse = forward.find("reject with icmpx").unwrap();
        assert!(allow < refuse, "{text}");
        assert!(text.contains("ip6 daddr 2001:db8::/32 meta l4proto udp accept"));
        for refused in ["169.254.0.0/16", "127.0.0.0/8", "10.254.0.0/15"] {
            assert!(forward.contains(refused), "{refused}: {text}");
        }
        // Only its own address leaves it; only the host's proxy enters.
        assert!(text.contains("iifname \"rwh20000\" ip saddr != 10.254.156.65 drop"));
        let proxy = text
            .find(
                "oifname \"rwh20000\" iifname \"rwup\" ip saddr 10.254.0.0 tcp dport 20000 accept",
            )
            .unwrap();
        let closed = text.find("oifname \"rwh20000\" drop").unwrap();
        assert!(proxy < closed, "{text}");
    }

    #[test]
    fn the_host_table_refuses_the_host_but_what_egress_rules_name() {
        let text = host_ruleset(20000, &rules());
        let from = "iifname \"rwhub\" ip saddr 10.254.156.65";
        let allow = text
            .find(&format!(
                "{from} ip daddr 169.254.169.254/32 tcp dport 80 accept"
            ))
            .unwrap();
        let refuse = text.find(&format!("{from} reject with icmpx")).unwrap();
        assert!(allow < refuse, "{text}");
        // The instance has no IPv6 route to the host.
        assert!(!text.contains("ip6"), "{text}");
    }

    #[test]
    fn an_instance_address_that_is_the_hosts_resolver_is_noticed() {
        let resolv = "# generated\nnameserver 10.255.255.53\nsearch example\n";
        assert!(resolv_names(resolv, Ipv4Addr::new(10, 255, 255, 53)));
        assert!(!resolv_names(resolv, Ipv4Addr::new(10, 255, 255, 5)));
        assert!(!resolv_names(
            "# nameserver 10.255.255.53",
            Ipv4Addr::new(10, 255, 255, 53)
        ));
    }

    #[test]
    fn the_common_table_masquerades_instances_and_lets_nothing_forwarded_in() {
        let text = hub_host_ruleset();
        assert!(text.contains("oifname \"rwhub\" ct state established,related accept"));
        assert!(text.contains("oifname \"rwhub\" drop"));
        assert!(text.contains("ip saddr 10.254.0.0/15 oifname != \"rwhub\" masquerade"));
    }
}
