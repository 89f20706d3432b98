//! A real OpenLDAP server for the LDAP login tests: slapd on free loopback
//! ports (plain/StartTLS and LDAPS) with a test CA, an mdb database in a
//! temporary directory, the memberof overlay, and a small directory:
//!
//! - `cn=redwall,ou=services` the service account (password `SERVICE_PASSWORD`)
//! - alice (nr-editors, nr-viewers), bob (nr-viewers), carol (nr-admins),
//!   dave (no group), every one with password `<name>-directory-pw`
//!
//! slapd and ldap-utils are installed with apt on first use, once per
//! machine, under a file lock (nextest runs tests as parallel processes).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use redwall_crypto::keyring::Keyring;
use redwall_server::sso::config::{LdapProvider, ProviderPolicyFields, SecretRef};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=org";
pub const SERVICE_DN: &str = "cn=redwall,ou=services,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "service-account-pw";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "root-pw";

pub fn password_of(user: &str) -> String {
    format!("{user}-directory-pw")
}

pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},ou=groups,{BASE}")
}

pub fn user_dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{BASE}")
}

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";

/// Installs slapd and ldap-utils if missing. `false` when that is not
/// possible here (not root, no apt): the tests then skip, except under CI.
pub fn ensure_installed() -> bool {
    let present = || Path::new(SLAPD).exists() && Path::new("/usr/bin/ldapmodify").exists();
    if present() {
        return true;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("redwall-slapd-install.lock"))
        .expect("install lock file");
    lock.lock().expect("install lock");
    if !present() {
        eprintln!("installing slapd and ldap-utils with apt-get (once per machine)");
        let status = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && apt-get install -y -qq slapd ldap-utils >/dev/null")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("could not install slapd");
        }
    }
    let ok = present();
    drop(lock);
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("slapd is required under CI and could not be installed");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Slapd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ldaps_port: u16,
    /// The CA that signed slapd's certificate.
    pub ca_file: PathBuf,
    /// A CA that signed nothing slapd serves.
    pub other_ca_file: PathBuf,
}

impl Slapd {
    /// Stops the server, keeping its files (the CA stays readable), as
    /// when a directory goes down.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_certs(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Redwall LDAP test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    other
        .distinguished_name
        .push(DnType::CommonName, "Some other CA");
    let other_cert = other.self_signed(&other_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

fn person(uid: &str) -> String {
    format!(
        "dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {pw}\n\n",
        dn = user_dn(uid),
        pw = password_of(uid)
    )
}

fn group(cn: &str, members: &[&str]) -> String {
    let mut s = format!(
        "dn: {}\nobjectClass: groupOfNames\ncn: {cn}\n",
        group_dn(cn)
    );
    for m in members {
        s.push_str(&format!("member: {}\n", user_dn(m)));
    }
    s.push('\n');
    s
}

impl Slapd {
    /// `None` when slapd is not available (and this is not CI).
    pub fn start() -> Option<Slapd> {
        if !ensure_installed() {
            eprintln!("skipping: slapd is not installed");
            return None;
        }
        // A port picked here may be taken before slapd binds it: try again.
        for _ in 0..5 {
            if let Some(s) = Self::try_start() {
                return Some(s);
            }
        }
        panic!("slapd did not start");
    }

    fn try_start() -> Option<Slapd> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_certs(d);
        std::fs::create_dir(d.join("db")).unwrap();
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {d}/slapd.pid
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
database mdb
maxsize 33554432
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {d}/db
overlay memberof
memberof-refint TRUE
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
"#,
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let base = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: redwall\nuserPassword: {SERVICE_PASSWORD}\n\n{}{}{}{}",
            person("alice"),
            person("bob"),
            person("carol"),
            person("dave"),
        );
        std::fs::write(d.join("base.ldif"), base).unwrap();
        let out = Command::new(SLAPADD)
            .args(["-q", "-f"])
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("base.ldif"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (port, ldaps_port) = (free_port(), free_port());
        let child = Command::new(SLAPD)
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"
            ))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("slapd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut slapd = Slapd {
            child,
            ca_file: d.join("ca.pem"),
            other_ca_file: d.join("other-ca.pem"),
            dir,
            port,
            ldaps_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = [port, ldaps_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                break;
            }
            if slapd.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let err =
                    std::fs::read_to_string(slapd.dir.path().join("slapd.log")).unwrap_or_default();
                eprintln!("slapd did not come up: {err}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Groups are added through the server, so the memberof overlay
        // writes memberOf on the members (slapadd bypasses overlays).
        slapd.modify(
            "ldapadd",
            &format!(
                "{}{}{}",
                group("nr-editors", &["alice"]),
                group("nr-viewers", &["alice", "bob"]),
                group("nr-admins", &["carol"])
            ),
        );
        Some(slapd)
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// Runs ldapadd or ldapmodify as the directory manager.
    pub fn modify(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(format!("/usr/bin/{tool}"))
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A provider for this server, plain LDAP on loopback, with the service
    /// password sealed by `keyring`.
    pub fn provider(&self, name: &str, keyring: &Keyring) -> LdapProvider {
        LdapProvider {
            name: name.into(),
            label: Some(format!("Directory {name}")),
            url: self.url(),
            starttls: false,
            ca_file: Some(self.ca_file.clone()),
            bind_dn: SERVICE_DN.into(),
            bind_password: SecretRef {
                env: None,
                sealed: Some(redwall_server::sso::secrets::seal(
                    keyring,
                    SERVICE_PASSWORD,
                )),
            },
            user_base: format!("ou=people,{BASE}"),
            user_filter: "(&(objectClass=inetOrgPerson)(uid={username}))".into(),
            group_attribute: "memberOf".into(),
            group_base: None,
            group_filter: "(&(objectClass=groupOfNames)(member={dn}))".into(),
            subject_attribute: "entryUUID".into(),
            username_attribute: "uid".into(),
            timeout_secs: 5,
            policy: ProviderPolicyFields::default(),
        }
    }
}

/// Puts a master key into a data directory before the server starts, so a
/// test can seal provider secrets for it.
pub fn install_master_key(data_dir: &Path) -> Keyring {
    let keyring = Keyring::generate();
    std::fs::create_dir_all(data_dir).unwrap();
    redwall_server::files::write_private(
        &data_dir.join("master.key"),
        keyring.to_base64().expose().as_bytes(),
    )
    .unwrap();
    keyring
}
