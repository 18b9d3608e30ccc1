//! Replication: hybrid logical clocks, rumor dissemination, anti-entropy and write acks (sans-IO).

pub mod hlc;
