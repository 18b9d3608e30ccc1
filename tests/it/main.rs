//! Integration tests: one binary, one module per area. Every test starts real `starling`
//! processes (see `support`) and talks to them over loopback.

mod auth;
mod cluster;
mod commands;
mod persistence;
mod protocol;
mod sharding;
mod startup;
mod support;
