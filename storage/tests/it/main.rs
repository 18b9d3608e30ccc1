//! The one integration-test binary of `starling-storage` (modules share the helpers in `common`).

mod basic;
mod common;
