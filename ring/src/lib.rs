//! sramlink-ring: the versioned shared-memory message ring between the guest and its peer.
//!
//! One region of shared memory holds a small header and two single-producer/single-consumer
//! byte rings, one per direction (ring 0: guest → peer, ring 1: peer → guest). The exact byte
//! layout and the ordering protocol are specified in `docs/ABI.md`; [`layout`] is its Rust
//! transcription, checked at compile time.
//!
//! # Contract
//!
//! - Exactly one [`Producer`] and one [`Consumer`] per ring (one per side and direction), as
//!   handed out by [`Region::endpoints`]. Their operations take `&mut self`; each may move
//!   to another thread when the memory handle is `Send`.
//! - [`Producer::send`] returns [`SendError::Full`] when the message does not fit *now*;
//!   [`Consumer::recv`] returns `Ok(None)` when nothing is published. Neither blocks.
//! - Full/empty encoding: free-running `u32` byte indices, masked by `size - 1`;
//!   `producer - consumer` (wrapping) is the number of used bytes, `0` is empty, `size` is full.
//! - Records are 8-byte aligned: an 8-byte header `{len: u32, kind: u32}` then the payload
//!   padded to 8 bytes. A record never wraps: when it does not fit before the end of the data
//!   area, a padding record (kind 1) fills the rest and the message starts at offset 0.
//! - The other side is never trusted: each shared index and record header is read once per
//!   operation, validated, then used. Bad values give [`Error`] (a protocol error), never a
//!   panic or an out-of-bounds access; after one, the endpoint keeps returning it.
//!
//! # Speed
//!
//! Each side caches the other side's index and reads the shared one only when the cached value
//! says full (producer) or empty (consumer); each shared index sits alone on its 64-byte line;
//! [`Producer::reserve`]/[`WriteSlot::commit`] and [`Consumer::read`]/[`ReadSlot::release`]
//! work locally and [`Producer::publish`]/[`Consumer::publish`] store the index (one barrier,
//! one store) once per batch. The hot path uses masks, never division.
//!
//! # Memory access
//!
//! Every shared access goes through [`SharedMemory`]: indices, state words and record headers
//! as aligned `u32`/`u64` loads and stores, payloads as one whole-word copy per record
//! ([`SharedMemory::store_words`]/[`SharedMemory::load_words`], range checked once).
//! [`VolatileMemory`] has two backends, chosen by the mapping ([`MemoryType`]): on Device memory
//! every access is an aligned `read_volatile`/`write_volatile` (no `memcpy`, no unaligned or
//! `DC ZVA` accesses); on Normal (cacheable) memory payloads longer than 64 bytes are copied
//! with `copy_nonoverlapping`. The ring algorithm and its barriers are the same on both.
//!
//! # Modules
//!
//! [`layout`] (ABI constants), [`memory`] (access and barriers), [`region`] (create/attach),
//! [`ring`] (producer and consumer), [`session`] (sessions and notification words, ABI 1.1),
//! [`error`], [`proto`] (demo application protocol) and [`service`] (the guest's serving loop).
#![no_std]
#![deny(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!(
    "the sramlink ABI is little-endian and this crate loads it with native word accesses"
);

pub mod error;
pub mod layout;
pub mod memory;
pub mod proto;
pub mod region;
pub mod ring;
pub mod service;
pub mod session;

pub use error::{Error, RecvError, SendError};
pub use memory::{AtomicMemory, Fence, MemoryType, SharedMemory, VolatileMemory};
pub use region::{
    Creation, Direction, Geometry, HeaderInfo, Region, RingGeometry, Role, SideState,
};
pub use ring::{Consumer, Producer, ReadSlot, WriteSlot};
pub use session::{PendingSession, SessionRequest, SessionStart};
