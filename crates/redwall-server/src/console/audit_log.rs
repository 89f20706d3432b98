//! The audit log pages' filters (platform and team logs share them).

use super::client::Failure;
use super::models::AuditPage;
use super::page::Ctx;
use axum::http::StatusCode;

/// The audit filters, as typed, and as a query string for the API.
pub struct AuditFilters {
    pub actor: String,
    pub event: String,
    pub since: String,
    pub until: String,
    pub cursor: String,
}

impl AuditFilters {
    pub fn read(ctx: &Ctx) -> AuditFilters {
        let q = |name| ctx.query_param(name).unwrap_or_default().trim().to_string();
        AuditFilters {
            actor: q("actor"),
            event: q("event"),
            since: q("since"),
            until: q("until"),
            cursor: q("cursor"),
        }
    }

    /// The non-empty filters (without the cursor) as a query string.
    pub fn query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &self.actor),
            ("event", &self.event),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.finish()
    }

    pub fn with_cursor(&self, cursor: &str) -> String {
        let base = self.query();
        let c: String = form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
        if base.is_empty() {
            format!("cursor={c}")
        } else {
            format!("{base}&cursor={c}")
        }
    }
}

impl AuditFilters {
    /// One page of the log at `api_path` with these filters. A filter the
    /// API refuses (a malformed time, say) gives an empty page and the
    /// reason, so the form can be corrected.
    pub async fn load(
        &self,
        ctx: &Ctx,
        api_path: &str,
    ) -> Result<(AuditPage, Option<String>), Failure> {
        let query = if self.cursor.is_empty() {
            self.query()
        } else {
            self.with_cursor(&self.cursor)
        };
        match ctx
            .api
            .get::<AuditPage>(&format!("{api_path}?{query}"))
            .await
        {
            Ok(p) => Ok((p, None)),
            Err(f) if f.status == StatusCode::BAD_REQUEST => Ok((
                AuditPage {
                    entries: Vec::new(),
                    next_cursor: None,
                },
                Some(super::auth::describe(&f)),
            )),
            Err(f) => Err(f),
        }
    }
}
