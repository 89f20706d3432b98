//! Reading and exporting the audit log.

use crate::api::body::Query;
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use futures::StreamExt;
use redwall_policy::audit_event::AuditEvent;
use redwall_store::{AuditFilter, AuditRecord};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Username or user id of the actor.
    actor: Option<String>,
    /// An event name, or a prefix ending in `*` (for example `auth.*`).
    event: Option<String>,
    /// RFC 3339 times.
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub event: String,
    pub target: Option<String>,
    pub outcome: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `cursor` for older entries; absent on the last page.
    pub next_cursor: Option<String>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(r: AuditRecord) -> Self {
        AuditEntryView {
            seq: r.seq,
            id: r.id,
            at: rfc3339(r.at),
            actor_id: r.actor_id,
            actor_name: r.actor_name,
            client_ip: r.client_ip,
            user_agent: r.user_agent,
            event: r.event,
            target: r.target,
            outcome: r.outcome,
            details: r.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

fn filter(q: AuditQuery) -> ApiResult<AuditFilter> {
    let time = |name: &str, v: Option<String>| -> ApiResult<Option<i64>> {
        v.map(|s| {
            parse_rfc3339(&s).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("{name} must be an RFC 3339 time"))
            })
        })
        .transpose()
    };
    let before_seq = q
        .cursor
        .map(|c| {
            decode_cursor(&c)
                .ok_or_else(|| ApiError::bad_request("invalid_cursor", "the cursor is not valid"))
        })
        .transpose()?;
    if q.actor.as_ref().is_some_and(|a| a.len() > 256)
        || q.event.as_ref().is_some_and(|e| e.len() > 256)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "filter values are too long",
        ));
    }
    Ok(AuditFilter {
        actor: q.actor,
        event: q.event,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        team_id: None,
        before_seq,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    })
}

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s{seq}"))
}

fn decode_cursor(c: &str) -> Option<i64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix('s')?
        .parse()
        .ok()
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    page(&state, filter(q)?).await
}

/// The team's own log: the same filters, only entries of this team.
pub async fn list_team(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let mut f = filter(q)?;
    f.team_id = Some(principal.team()?.team_id.clone());
    page(&state, f).await
}

async fn page(state: &AppState, f: AuditFilter) -> ApiResult<Json<AuditPage>> {
    let limit = f.limit;
    let records = state.hub.audit_page(&f).await?;
    let next_cursor = (records.len() as i64 == limit)
        .then(|| records.last().map(|r| encode_cursor(r.seq)))
        .flatten();
    Ok(Json(AuditPage {
        entries: records.into_iter().map(AuditEntryView::from).collect(),
        next_cursor,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChainCheck {
    /// True when every entry recomputes and links to the one before.
    pub ok: bool,
    pub entries_checked: u64,
    pub last_seq: Option<i64>,
    /// The first entry where the chain breaks, if any.
    pub first_problem: Option<ChainBreak>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChainBreak {
    pub seq: i64,
    /// altered, removed or inserted.
    pub kind: &'static str,
    pub message: String,
}

/// Recomputes the whole hash chain now (as `redwall audit verify` does) and
/// records that it was checked, with the result.
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> ApiResult<Json<ChainCheck>> {
    let caller = Caller::of(&principal, &client);
    let report = state.hub.verify_audit_log(caller.who()).await?;
    let first_problem = report.problem.map(|p| ChainBreak {
        seq: p.seq,
        kind: match p.kind {
            redwall_store::ChainProblemKind::Altered => "altered",
            redwall_store::ChainProblemKind::Removed => "removed",
            redwall_store::ChainProblemKind::Inserted => "inserted",
        },
        message: p.message,
    });
    let check = ChainCheck {
        ok: first_problem.is_none(),
        entries_checked: report.checked,
        last_seq: report.last_seq,
        first_problem,
    };
    Ok(Json(check))
}

/// JSON Lines, oldest first, streamed so memory stays flat however long the log.
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    export_filtered(
        state,
        principal,
        client,
        filter(q)?,
        AuditEvent::AuditExported,
    )
    .await
}

pub async fn export_team(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let mut f = filter(q)?;
    f.team_id = Some(principal.team()?.team_id.clone());
    export_filtered(state, principal, client, f, AuditEvent::TeamAuditExported).await
}

async fn export_filtered(
    state: AppState,
    principal: Principal,
    client: ClientInfo,
    f: AuditFilter,
    event: AuditEvent,
) -> ApiResult<Response> {
    let caller = Caller::of(&principal, &client);
    let stream = state.hub.export_audit(caller.who(), f, event).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let line = match item {
                Ok(r) => serde_json::to_string(&AuditEntryView::from(r))
                    .map(|mut s| {
                        s.push('\n');
                        s
                    })
                    .map_err(std::io::Error::other),
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed");
                    Err(std::io::Error::other("audit export failed"))
                }
            };
            let stop = line.is_err();
            if tx.send(line).await.is_err() || stop {
                break;
            }
        }
    });
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"redwall-audit.jsonl\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(""), None);
    }
}
