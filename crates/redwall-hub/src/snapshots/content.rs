//! What a snapshot holds and the statement the hub signs about it: the
//! shared format (`redwall_policy::snapshot_format`, which remote agents
//! check too), with the hub's error type.

use serde_json::{Map, Value};

use crate::{HubError, HubResult};

pub use redwall_policy::snapshot_format::{
    canonical, flows_sha256, sha256_hex, Content, Statement, STATEMENT_CONTEXT,
};

/// The digest of everything a snapshot holds.
pub fn content_sha256(content: &Content, credentials: &Map<String, Value>) -> HubResult<String> {
    redwall_policy::snapshot_format::content_sha256(content, credentials)
        .map_err(HubError::internal)
}

/// The canonical text of a snapshot's content.
pub fn content_canonical(content: &Content) -> HubResult<String> {
    content.to_canonical().map_err(HubError::internal)
}

/// The canonical text of a statement, as signed.
pub fn statement_canonical(statement: &Statement) -> HubResult<String> {
    statement.to_canonical().map_err(HubError::internal)
}
