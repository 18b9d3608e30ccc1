//! The client-facing interfaces: RESP2 (the Redis protocol) and the admin HTTP port.
//!
//! Everything here is sans-IO except [`admin`], which owns the admin socket; the connection
//! loop that feeds [`resp`] lives in `runtime`.

pub mod admin;
pub mod command;
pub mod metrics;
pub mod resp;
