//! The member record and the values the state machine hands to its driver (events, transmits).

use std::net::SocketAddr;

use crate::gossip::wire::{Kind, NodeId};

/// This node, as it introduces itself to the cluster.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalNode {
    /// Our node id (persisted by the runtime, unique in the cluster).
    pub id: NodeId,
    /// Address of our shard 0 gossip socket; shard `i` listens on `port + i`.
    pub addr: SocketAddr,
    /// Number of shards (cores) we run.
    pub shards: u16,
    /// Partition count of the cluster as recorded in our data dir.
    pub partitions: u32,
}

/// What the cluster believes about a member (SWIM states plus graceful leave).
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemberState {
    /// Answering probes.
    Alive = 0,
    /// Missed a probe; declared dead unless it refutes within the suspicion timeout.
    Suspect = 1,
    /// Declared failed.
    Dead = 2,
    /// Left gracefully.
    Left = 3,
}

impl MemberState {
    /// Decodes the wire byte.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Alive),
            1 => Some(Self::Suspect),
            2 => Some(Self::Dead),
            3 => Some(Self::Left),
            _ => None,
        }
    }

    /// Alive or Suspect: still taking part (probed, gossiped to, replicated to).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// One member as this node sees it.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Shard 0 gossip address.
    pub addr: SocketAddr,
    /// Shard count of that node.
    pub shards: u16,
    /// Partition count it reported.
    pub partitions: u32,
    /// Its incarnation: only the member itself raises it, to refute suspicion.
    pub incarnation: u32,
    /// Current state.
    pub state: MemberState,
}

impl Member {
    /// The member record of a local node at an incarnation.
    pub fn from_local(local: &LocalNode, incarnation: u32, state: MemberState) -> Self {
        Self {
            id: local.id,
            addr: local.addr,
            shards: local.shards,
            partitions: local.partitions,
            incarnation,
            state,
        }
    }
}

/// A change in the member list, in the order it happened here.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member we did not know, alive.
    Joined(Member),
    /// Address, shard count or partition count of a live member changed.
    Updated(Member),
    /// A member became suspect.
    Suspected(Member),
    /// A suspect, dead or departed member is alive again (refutation or restart).
    Recovered(Member),
    /// A member was declared dead.
    Died(Member),
    /// A member left gracefully.
    Left(Member),
}

impl MemberEvent {
    /// The member the event is about.
    pub fn member(&self) -> &Member {
        match self {
            Self::Joined(member)
            | Self::Updated(member)
            | Self::Suspected(member)
            | Self::Recovered(member)
            | Self::Died(member)
            | Self::Left(member) => member,
        }
    }
}

/// A datagram body to send: seal it with [`crate::gossip::wire::Sealer::seal`] using `kind`.
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (a member's shard 0 gossip address, or a seed).
    pub to: SocketAddr,
    /// Message kind for the header.
    pub kind: Kind,
    /// Body, at most [`crate::gossip::wire::BODY_BYTES_MAX`] bytes.
    pub body: Vec<u8>,
}
