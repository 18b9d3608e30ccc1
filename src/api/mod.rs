//! The client-facing interfaces: RESP2 (the Redis protocol) and the admin HTTP port.
