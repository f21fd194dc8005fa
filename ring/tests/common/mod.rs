//! Helpers shared by the integration tests: heap-backed regions and small geometries.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use sramlink_ring::{AtomicMemory, Geometry, Region, Role, SideState};

/// Shared memory over a heap buffer of atomic words (free of data races across threads).
pub type HeapMemory = AtomicMemory<Arc<[AtomicU32]>>;

/// A zeroed heap region of `len` bytes.
pub fn heap_memory(len: usize) -> HeapMemory {
    AtomicMemory::new((0..len / 4).map(|_| AtomicU32::new(0)).collect())
}

/// A small geometry: rings of `ring_bytes` at 0x1000 and 0x2000 (or later if bigger).
pub fn small_geometry(ring_bytes: usize) -> Geometry {
    let region_bytes = 0x1000 + 2 * ring_bytes.next_multiple_of(0x1000);
    Geometry::with_ring_bytes(region_bytes, [ring_bytes, ring_bytes]).unwrap()
}

/// A created guest region and the peer's attachment to the same memory, both Ready.
pub fn linked_pair(ring_bytes: usize) -> (Region<HeapMemory>, Region<HeapMemory>) {
    let geometry = small_geometry(ring_bytes);
    let memory = heap_memory(geometry.region_bytes);
    let guest = Region::create(memory.clone(), geometry).unwrap();
    guest.set_state(Role::Guest, SideState::Ready);
    let peer = Region::attach(memory).unwrap();
    peer.set_state(Role::Peer, SideState::Ready);
    (guest, peer)
}

/// A small deterministic generator (xorshift64*), so tests need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
