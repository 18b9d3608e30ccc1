//! Set reconciliation (CPISync over the prime field 2^61 − 1): pure, sans-IO code.
pub mod decode;
pub mod element;
pub mod field;
pub mod kernel;
pub mod poly;
pub mod sketch;
