//! Set reconciliation (CPISync over the prime field 2^61 − 1): pure, sans-IO code.
