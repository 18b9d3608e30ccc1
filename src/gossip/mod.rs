//! Gossip: SWIM/Lifeguard membership and the authenticated datagram format, as sans-IO state machines.
