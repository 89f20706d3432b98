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
