//! What an agent reports of its site, on the console: a line on the agents
//! page (its MQTT store-and-forward and what it still keeps for the hub),
//! and a page of the site's log lines (`/teams/{team}/agents/{agent}/logs`)
//! through `GET /api/v1/teams/{team}/agents/{agent}/logs`, with the lines
//! the agent kept while its link was down marked as such.

use super::models::{short_time, Team};
use super::page::{render_status, Ctx, Layout};
use crate::api::agents::{AgentLogLineView, AgentView};
use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use redwall_policy::site_events::SiteReport;

/// Lines the page shows.
const LINES: u32 = 500;
/// A line stored this much later than the site wrote it was kept at the
/// site (the link was down), and is marked so.
const KEPT_AFTER_MS: i64 = 10_000;

/// The site's figures in a few words each; empty when the agent reports
/// none. `warn` when something was lost or waits.
pub struct SiteSummary {
    pub parts: Vec<String>,
    pub warn: bool,
}

pub fn summary(site: Option<&SiteReport>) -> SiteSummary {
    let mut parts = Vec::new();
    let mut warn = false;
    let Some(site) = site else {
        return SiteSummary { parts, warn };
    };
    if let Some(b) = &site.bridge {
        let team = if b.team_connected {
            "connected"
        } else {
            "not connected"
        };
        parts.push(format!(
            "MQTT to the team broker {team}: {} queued, {} delivered",
            b.queued, b.delivered
        ));
        if !b.local_connected {
            parts.push("not connected to the site's broker".into());
            warn = true;
        }
        let lost = b.dropped + b.refused;
        if lost > 0 {
            parts.push(format!("{lost} messages dropped when the outbox was full"));
            warn = true;
        }
        if b.resent_after_session_loss > 0 {
            parts.push(format!(
                "{} sent again after the team broker lost the session (may have arrived twice)",
                b.resent_after_session_loss
            ));
            warn = true;
        }
        warn |= b.queued > 0 && !b.team_connected;
    }
    if let Some(j) = &site.journal {
        if j.audit_pending + j.log_pending > 0 {
            parts.push(format!(
                "kept for the hub: {} audit events, {} log lines",
                j.audit_pending, j.log_pending
            ));
        }
        if j.audit_dropped + j.log_dropped > 0 {
            parts.push(format!(
                "dropped when the journal was full: {} audit events, {} log lines",
                j.audit_dropped, j.log_dropped
            ));
            warn = true;
        }
    }
    SiteSummary { parts, warn }
}

pub struct LogRow {
    pub at: String,
    pub source: String,
    pub text: String,
    /// "arrived 2026-12-05 06:10:00 UTC" for a line kept while offline.
    pub kept: Option<String>,
}

fn millis(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn log_row(l: &AgentLogLineView) -> LogRow {
    let kept = match (millis(&l.at), millis(&l.received_at)) {
        (Some(at), Some(received)) if received - at > KEPT_AFTER_MS => {
            Some(format!("arrived {}", short_time(&l.received_at)))
        }
        _ => None,
    };
    LogRow {
        at: short_time(&l.at),
        source: l.source.clone(),
        text: l.text.clone(),
        kept,
    }
}

#[derive(Template)]
#[template(path = "console/agent_logs.html")]
struct LogsPage {
    layout: Layout,
    team: Team,
    agent: AgentView,
    site: SiteSummary,
    lines: Vec<LogRow>,
    shown: u32,
}

pub async fn logs_page(ctx: Ctx, Path((team_id, agent)): Path<(String, String)>) -> Response {
    let (me, team) = match super::instances::team_of(&ctx, &team_id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let base = format!("/api/v1/teams/{team_id}/agents/{agent}");
    let logs = format!("{base}/logs?lines={LINES}");
    let (found, lines) = futures::join!(
        ctx.api.get::<AgentView>(&base),
        ctx.api.get::<Vec<AgentLogLineView>>(&logs)
    );
    let agent = match found {
        Ok(a) => a,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let lines = match lines {
        Ok(l) => l,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let layout = Layout::new(format!("{} · Site logs", agent.name), Some(&me), "home");
    render_status(
        StatusCode::OK,
        &LogsPage {
            layout,
            site: summary(agent.site.as_ref()),
            team,
            agent,
            lines: lines.iter().map(log_row).collect(),
            shown: LINES,
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use redwall_policy::site_events::{BridgeReport, JournalReport};

    #[test]
    fn the_summary_says_what_waits_and_what_was_lost() {
        assert!(summary(None).parts.is_empty());
        let calm = SiteReport {
            bridge: Some(BridgeReport {
                local_connected: true,
                team_connected: true,
                delivered: 12,
                ..Default::default()
            }),
            journal: Some(JournalReport::default()),
        };
        let s = summary(Some(&calm));
        assert_eq!(
            s.parts,
            ["MQTT to the team broker connected: 0 queued, 12 delivered"]
        );
        assert!(!s.warn);

        let offline = SiteReport {
            bridge: Some(BridgeReport {
                local_connected: true,
                queued: 40,
                dropped: 2,
                refused: 1,
                ..Default::default()
            }),
            journal: Some(JournalReport {
                audit_pending: 1,
                log_pending: 9,
                log_dropped: 4,
                ..Default::default()
            }),
        };
        let s = summary(Some(&offline));
        assert!(s.warn);
        assert_eq!(
            s.parts,
            [
                "MQTT to the team broker not connected: 40 queued, 0 delivered",
                "3 messages dropped when the outbox was full",
                "kept for the hub: 1 audit events, 9 log lines",
                "dropped when the journal was full: 0 audit events, 4 log lines",
            ]
        );
    }

    #[test]
    fn lines_kept_offline_are_marked() {
        let line = |at: &str, received: &str| AgentLogLineView {
            at: at.into(),
            received_at: received.into(),
            source: "node-red".into(),
            text: "x".into(),
        };
        let live = log_row(&line(
            "2026-12-05T06:00:00.000Z",
            "2026-12-05T06:00:01.500Z",
        ));
        assert_eq!(live.kept, None);
        assert_eq!(live.at, "2026-12-05 06:00:00 UTC");
        let kept = log_row(&line(
            "2026-12-05T06:00:00.000Z",
            "2026-12-05T06:05:00.000Z",
        ));
        assert_eq!(
            kept.kept.as_deref(),
            Some("arrived 2026-12-05 06:05:00 UTC")
        );
    }
}
