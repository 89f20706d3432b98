//! Managed Node-RED instances: the server side of `redwall-runtime`.
//!
//! `manager` turns stored instances into runtime specs (opening their sealed
//! secrets) and drives the supervisor; `runtime` installs Node-RED once, in
//! the background; `sealing` keeps secrets at rest;
//! `model` holds the validated shapes the API stores as JSON; `events`
//! carries what the supervisor reports into the audit log.

pub mod events;
pub mod manager;
pub mod model;
pub mod rotation;
pub mod runtime;
pub mod sealing;

pub use manager::InstanceManager;
