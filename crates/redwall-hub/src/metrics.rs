//! Counters served at /metrics in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use redwall_store::AuditHealth;

#[derive(Default)]
pub struct Metrics {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    logins_succeeded: AtomicU64,
    logins_failed: AtomicU64,
    logins_throttled: AtomicU64,
    /// The team broker (`redwall-broker`), when it runs in this process.
    pub broker: BrokerMetrics,
}

/// The embedded broker's counters.
#[derive(Default)]
pub struct BrokerMetrics {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_closed: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_delivered: AtomicU64,
    pub publish_denied: AtomicU64,
    pub subscribe_denied: AtomicU64,
    pub revocation_kicks: AtomicU64,
}

impl BrokerMetrics {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now: accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.connections_accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.connections_closed.load(Ordering::Relaxed))
    }
}

impl Metrics {
    pub fn request_done(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if (400..500).contains(&status) {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn login_succeeded(&self) {
        self.logins_succeeded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn login_failed(&self) {
        self.logins_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn login_throttled(&self) {
        self.logins_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, with the audit writer's from `audit` and the number
    /// of entries the hub recorded.
    pub fn render(&self, audit: &AuditHealth, audit_entries: u64) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {}", value.load(Ordering::Relaxed));
            }
        };
        counter(
            "redwall_http_requests_total",
            "HTTP requests answered, by status class.",
            &[
                ("", &self.requests),
                ("{class=\"4xx\"}", &self.client_errors),
                ("{class=\"5xx\"}", &self.server_errors),
            ],
        );
        counter(
            "redwall_logins_total",
            "Login attempts by outcome.",
            &[
                ("{outcome=\"success\"}", &self.logins_succeeded),
                ("{outcome=\"failure\"}", &self.logins_failed),
                ("{outcome=\"throttled\"}", &self.logins_throttled),
            ],
        );
        let b = &self.broker;
        counter(
            "redwall_broker_connections_total",
            "MQTT connections to the team broker, by outcome of their CONNECT.",
            &[
                ("{outcome=\"accepted\"}", &b.connections_accepted),
                ("{outcome=\"refused\"}", &b.connections_refused),
            ],
        );
        counter(
            "redwall_broker_messages_total",
            "MQTT messages: received from publishers, delivered to subscribers.",
            &[
                ("{direction=\"received\"}", &b.messages_received),
                ("{direction=\"delivered\"}", &b.messages_delivered),
            ],
        );
        counter(
            "redwall_broker_acl_denials_total",
            "Publishes and subscriptions the topic rules refused.",
            &[
                ("{action=\"publish\"}", &b.publish_denied),
                ("{action=\"subscribe\"}", &b.subscribe_denied),
            ],
        );
        counter(
            "redwall_broker_revocation_disconnects_total",
            "Connections closed because their client was revoked, rotated or re-ruled.",
            &[("", &b.revocation_kicks)],
        );
        counter(
            "redwall_audit_entries_total",
            "Audit entries written by this process.",
            &[("", &AtomicU64::new(audit_entries))],
        );
        let refused = AtomicU64::new(audit.entries_refused());
        let attempts = AtomicU64::new(audit.attempts_failed());
        counter(
            "redwall_audit_append_failures_total",
            "Audit entries that could not be written (their requests were refused), \
             and failed append transactions, retries included.",
            &[
                ("{kind=\"entry\"}", &refused),
                ("{kind=\"attempt\"}", &attempts),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP redwall_broker_connections_open MQTT connections open now.\n\
             # TYPE redwall_broker_connections_open gauge\nredwall_broker_connections_open {}",
            b.open()
        );
        let failing = u8::from(audit.fault().is_some());
        let _ = writeln!(
            out,
            "# HELP redwall_audit_writer_failing 1 while audit entries cannot be written \
             (security actions are refused).\n# TYPE redwall_audit_writer_failing gauge\n\
             redwall_audit_writer_failing {failing}"
        );
        out
    }
}
