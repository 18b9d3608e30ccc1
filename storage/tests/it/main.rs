//! The one integration-test binary of `starling-storage` (modules share the helpers in `common`).

mod basic;
mod common;
mod corruption;
mod crash;
mod enospc;
mod group_commit;
mod limits;
mod memory;
mod model;
