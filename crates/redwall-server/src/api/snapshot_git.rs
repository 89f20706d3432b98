//! Placeholder: routes arrive with their handlers.

use crate::api::Route;

pub fn routes() -> Vec<Route> {
    Vec::new()
}
