//! The ABI: byte layout of the region header and records, with compile-time offset checks.
//!
//! ```text
//! region offset
//! 0x000 ┌──────────────────────────────────────────────┐
//!       │ magic, version, sizes, ring descriptors      │ line 0 (written once by the guest)
//! 0x040 ├──────────────────────────────────────────────┤
//!       │ guest_state, peer_state                      │ line 1
//! 0x080 ├──────────────────────────────────────────────┤
//!       │ ring 0 (guest → peer) producer index         │ line 2, written by the guest
//! 0x0c0 ├──────────────────────────────────────────────┤
//!       │ ring 0 (guest → peer) consumer index         │ line 3, written by the peer
//! 0x100 ├──────────────────────────────────────────────┤
//!       │ ring 1 (peer → guest) producer index         │ line 4, written by the peer
//! 0x140 ├──────────────────────────────────────────────┤
//!       │ ring 1 (peer → guest) consumer index         │ line 5, written by the guest
//! 0x180 ├──────────────────────────────────────────────┤
//!       │ generation, heartbeat, session ack, event    │ line 6 (1.1), written by the guest
//!       │ port, waiting flag                           │
//! 0x1c0 ├──────────────────────────────────────────────┤
//!       │ session request, heartbeat, waiting flag     │ line 7 (1.1), written by the peer
//! 0x200 ├──────────────────────────────────────────────┤
//!       │ unused up to the first data area             │
//! 0x1000├──────────────────────────────────────────────┤ (4 KiB aligned)
//!       │ ring 0 data (power of two bytes)             │
//!       ├──────────────────────────────────────────────┤ (4 KiB aligned)
//!       │ ring 1 data (power of two bytes)             │
//!       └──────────────────────────────────────────────┘
//! ```
//!
//! The structs below are never instantiated over shared memory (all accesses go through
//! [`crate::SharedMemory`] at the offsets derived from them); they exist so that the offsets
//! are computed by the compiler and checked against the numbers in `docs/ABI.md`.

use core::mem::{offset_of, size_of};

/// `"SRAMLINK"` read as a little-endian `u64` (bytes `53 52 41 4d 4c 49 4e 4b` at offset 0).
pub const MAGIC: u64 = u64::from_le_bytes(*b"SRAMLINK");
/// ABI major version: a reader rejects any other major version.
pub const VERSION_MAJOR: u16 = 1;
/// ABI minor version: compatible additions; a reader accepts any minor version. 1.1 adds
/// sessions, liveness, the memory-attribute flag and the notification words (lines 6 and 7).
pub const VERSION_MINOR: u16 = 1;
/// The smallest `header_bytes` a reader accepts (version 1.0's header, six lines).
pub const MIN_HEADER_BYTES: usize = 0x180;
/// `flags` bit 0: the creator maps the region Normal write-back cacheable; clear: uncached
/// (Device, or Normal non-cacheable). The other side must map it the same way (ABI §1.1).
pub const FLAG_CACHEABLE: u32 = 1 << 0;
/// `event_port` value when the guest publishes no event channel: both sides poll.
pub const NO_EVENT_PORT: u32 = 0;
/// Number of rings (one per direction).
pub const RING_COUNT: u32 = 2;
/// Size of the cache line each shared index has to itself.
pub const LINE_BYTES: usize = 64;
/// Alignment of each ring's data area.
pub const DATA_ALIGN: usize = 4096;
/// Smallest data area (bytes).
pub const MIN_RING_BYTES: usize = 64;
/// Largest data area (bytes): free-running `u32` indices need `size <= 2^31`.
pub const MAX_RING_BYTES: usize = 1 << 31;
/// Record alignment and size of the record header.
pub const RECORD_ALIGN: usize = 8;
/// Size of a record header `{len: u32, kind: u32}`.
pub const RECORD_HEADER_BYTES: usize = 8;
/// Record kind: a message of `len` payload bytes.
pub const KIND_MESSAGE: u32 = 0;
/// Record kind: padding from here to the end of the data area; `len` = bytes after the header.
pub const KIND_PADDING: u32 = 1;

/// State word value: the side has not started (the creator writes it for both sides).
pub const STATE_OFFLINE: u32 = 0;
/// State word value: the side serves its rings.
pub const STATE_READY: u32 = 1;
/// State word value: the side stopped and will not touch its rings again.
pub const STATE_STOPPED: u32 = 2;

/// One entry of the ring table (16 bytes), written once by the creator.
#[repr(C)]
pub struct RingDescriptor {
    /// Offset of the data area from the start of the region; multiple of [`DATA_ALIGN`].
    pub data_offset: u64,
    /// Size of the data area in bytes; a power of two in
    /// [`MIN_RING_BYTES`]`..=`[`MAX_RING_BYTES`].
    pub data_bytes: u32,
    /// Zero.
    pub reserved: u32,
}

/// A shared index alone on its 64-byte line.
#[repr(C, align(64))]
pub struct IndexLine {
    /// Free-running byte index (wraps at 2^32); always a multiple of 8.
    pub value: u32,
    /// Zero; never written after creation.
    pub reserved: [u32; 15],
}

/// The producer and consumer index lines of one ring.
#[repr(C)]
pub struct RingIndices {
    /// Bytes ever published by the producer (written only by the producing side).
    pub producer: IndexLine,
    /// Bytes ever released by the consumer (written only by the consuming side).
    pub consumer: IndexLine,
}

/// The header at offset 0 of the region.
#[repr(C)]
pub struct RegionHeader {
    /// [`MAGIC`], stored last by the creator (behind a barrier).
    pub magic: u64,
    /// [`VERSION_MAJOR`].
    pub version_major: u16,
    /// [`VERSION_MINOR`].
    pub version_minor: u16,
    /// `size_of::<RegionHeader>()` as written by the creator (0x180 in version 1.0).
    pub header_bytes: u32,
    /// Bytes of the region covered by this header (all data areas lie inside).
    pub region_bytes: u64,
    /// [`RING_COUNT`].
    pub ring_count: u32,
    /// Zero (no flags defined).
    pub flags: u32,
    /// Ring 0: guest → peer; ring 1: peer → guest.
    pub rings: [RingDescriptor; 2],
    /// State of the guest side: [`STATE_OFFLINE`], [`STATE_READY`] or [`STATE_STOPPED`].
    pub guest_state: u32,
    /// State of the peer side, same values.
    pub peer_state: u32,
    /// Zero; pads the state words to their own line.
    pub reserved: [u32; 14],
    /// Shared indices of ring 0 and ring 1.
    pub indices: [RingIndices; 2],
    /// Line 6 (1.1): written by the guest.
    pub guest_line: GuestLine,
    /// Line 7 (1.1): written by the peer.
    pub peer_line: PeerLine,
}

/// Line 6 (version 1.1): the guest's session, liveness and notification words.
#[repr(C, align(64))]
pub struct GuestLine {
    /// Creation number of this header: differs from the previous header's (ABI §5.2).
    pub generation: u32,
    /// Advanced by the guest on every pass of its serving loop (ABI §5.8).
    pub heartbeat: u32,
    /// The session the guest serves (0: none yet); stored after `session_ring0_start`.
    pub session_ack: u32,
    /// Ring 0 position where the acknowledged session's messages start.
    pub session_ring0_start: u32,
    /// The guest's event-channel port for the peer to bind, or [`NO_EVENT_PORT`].
    pub event_port: u32,
    /// 1 while the guest is going to sleep or asleep (notify it); 0 while it polls.
    pub waiting: u32,
    /// Zero.
    pub reserved: [u32; 10],
}

/// Line 7 (version 1.1): the peer's session, liveness and notification words.
#[repr(C, align(64))]
pub struct PeerLine {
    /// The session the peer asks for (0: none); stored after the two words below.
    pub session_request: u32,
    /// The `generation` of the header the request is for.
    pub session_generation: u32,
    /// Ring 1 position where the requested session's messages start.
    pub session_ring1_start: u32,
    /// Advanced by the peer on every pass of its loop (ABI §5.8).
    pub heartbeat: u32,
    /// 1 while the peer is going to sleep or asleep (notify it); 0 while it polls.
    pub waiting: u32,
    /// Zero.
    pub reserved: [u32; 11],
}

/// Offset of [`RegionHeader::magic`].
pub const OFF_MAGIC: usize = offset_of!(RegionHeader, magic);
/// Offset of [`RegionHeader::version_major`].
pub const OFF_VERSION_MAJOR: usize = offset_of!(RegionHeader, version_major);
/// Offset of [`RegionHeader::version_minor`].
pub const OFF_VERSION_MINOR: usize = offset_of!(RegionHeader, version_minor);
/// Offset of [`RegionHeader::header_bytes`].
pub const OFF_HEADER_BYTES: usize = offset_of!(RegionHeader, header_bytes);
/// Offset of [`RegionHeader::region_bytes`].
pub const OFF_REGION_BYTES: usize = offset_of!(RegionHeader, region_bytes);
/// Offset of [`RegionHeader::ring_count`].
pub const OFF_RING_COUNT: usize = offset_of!(RegionHeader, ring_count);
/// Offset of [`RegionHeader::flags`].
pub const OFF_FLAGS: usize = offset_of!(RegionHeader, flags);
/// Offset of [`RegionHeader::rings`].
pub const OFF_RINGS: usize = offset_of!(RegionHeader, rings);
/// Size of one [`RingDescriptor`].
pub const RING_DESCRIPTOR_BYTES: usize = size_of::<RingDescriptor>();
/// Offset of [`RingDescriptor::data_offset`] within a descriptor.
pub const OFF_DESC_DATA_OFFSET: usize = offset_of!(RingDescriptor, data_offset);
/// Offset of [`RingDescriptor::data_bytes`] within a descriptor.
pub const OFF_DESC_DATA_BYTES: usize = offset_of!(RingDescriptor, data_bytes);
/// Offset of [`RegionHeader::guest_state`].
pub const OFF_GUEST_STATE: usize = offset_of!(RegionHeader, guest_state);
/// Offset of [`RegionHeader::peer_state`].
pub const OFF_PEER_STATE: usize = offset_of!(RegionHeader, peer_state);
/// Offset of [`RegionHeader::indices`].
pub const OFF_INDICES: usize = offset_of!(RegionHeader, indices);
/// Size of [`RegionHeader`]: the value of `header_bytes` this version writes.
pub const HEADER_BYTES: usize = size_of::<RegionHeader>();
/// Offset of [`GuestLine::generation`].
pub const OFF_GENERATION: usize = offset_of!(RegionHeader, guest_line);
/// Offset of [`GuestLine::heartbeat`].
pub const OFF_GUEST_HEARTBEAT: usize = OFF_GENERATION + offset_of!(GuestLine, heartbeat);
/// Offset of [`GuestLine::session_ack`].
pub const OFF_SESSION_ACK: usize = OFF_GENERATION + offset_of!(GuestLine, session_ack);
/// Offset of [`GuestLine::session_ring0_start`].
pub const OFF_SESSION_RING0_START: usize =
    OFF_GENERATION + offset_of!(GuestLine, session_ring0_start);
/// Offset of [`GuestLine::event_port`].
pub const OFF_EVENT_PORT: usize = OFF_GENERATION + offset_of!(GuestLine, event_port);
/// Offset of [`GuestLine::waiting`].
pub const OFF_GUEST_WAITING: usize = OFF_GENERATION + offset_of!(GuestLine, waiting);
/// Offset of [`PeerLine::session_request`].
pub const OFF_SESSION_REQUEST: usize = offset_of!(RegionHeader, peer_line);
/// Offset of [`PeerLine::session_generation`].
pub const OFF_SESSION_GENERATION: usize =
    OFF_SESSION_REQUEST + offset_of!(PeerLine, session_generation);
/// Offset of [`PeerLine::session_ring1_start`].
pub const OFF_SESSION_RING1_START: usize =
    OFF_SESSION_REQUEST + offset_of!(PeerLine, session_ring1_start);
/// Offset of [`PeerLine::heartbeat`].
pub const OFF_PEER_HEARTBEAT: usize = OFF_SESSION_REQUEST + offset_of!(PeerLine, heartbeat);
/// Offset of [`PeerLine::waiting`].
pub const OFF_PEER_WAITING: usize = OFF_SESSION_REQUEST + offset_of!(PeerLine, waiting);

/// Offset of ring `ring`'s descriptor.
pub const fn ring_descriptor_offset(ring: usize) -> usize {
    OFF_RINGS + ring * RING_DESCRIPTOR_BYTES
}

/// Offset of ring `ring`'s shared producer index.
pub const fn producer_index_offset(ring: usize) -> usize {
    OFF_INDICES + ring * size_of::<RingIndices>() + offset_of!(RingIndices, producer)
}

/// Offset of ring `ring`'s shared consumer index.
pub const fn consumer_index_offset(ring: usize) -> usize {
    OFF_INDICES + ring * size_of::<RingIndices>() + offset_of!(RingIndices, consumer)
}

/// Bytes a record with `payload_len` payload bytes occupies (header + payload padded to 8).
pub const fn record_bytes(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + ((payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1))
}

/// Largest message payload a ring of `data_bytes` bytes accepts: `data_bytes / 2 - 8`.
///
/// A record of at most half the ring always fits into an empty ring, whatever the position:
/// either before the end of the data area or, after padding, at its start.
pub const fn max_message_len(data_bytes: usize) -> usize {
    data_bytes / 2 - RECORD_HEADER_BYTES
}

// The numbers in docs/ABI.md, checked.
const _: () = assert!(OFF_MAGIC == 0x00);
const _: () = assert!(OFF_VERSION_MAJOR == 0x08);
const _: () = assert!(OFF_VERSION_MINOR == 0x0a);
const _: () = assert!(OFF_HEADER_BYTES == 0x0c);
const _: () = assert!(OFF_REGION_BYTES == 0x10);
const _: () = assert!(OFF_RING_COUNT == 0x18);
const _: () = assert!(OFF_FLAGS == 0x1c);
const _: () = assert!(OFF_RINGS == 0x20);
const _: () = assert!(RING_DESCRIPTOR_BYTES == 16);
const _: () = assert!(OFF_DESC_DATA_OFFSET == 0);
const _: () = assert!(OFF_DESC_DATA_BYTES == 8);
const _: () = assert!(offset_of!(RingDescriptor, reserved) == 12);
const _: () = assert!(ring_descriptor_offset(1) == 0x30);
const _: () = assert!(OFF_GUEST_STATE == 0x40);
const _: () = assert!(OFF_PEER_STATE == 0x44);
const _: () = assert!(offset_of!(RegionHeader, reserved) == 0x48);
const _: () = assert!(size_of::<IndexLine>() == LINE_BYTES);
const _: () = assert!(offset_of!(IndexLine, value) == 0);
const _: () = assert!(size_of::<RingIndices>() == 2 * LINE_BYTES);
const _: () = assert!(OFF_INDICES == 0x80);
const _: () = assert!(producer_index_offset(0) == 0x080);
const _: () = assert!(consumer_index_offset(0) == 0x0c0);
const _: () = assert!(producer_index_offset(1) == 0x100);
const _: () = assert!(consumer_index_offset(1) == 0x140);
const _: () = assert!(OFF_GENERATION == 0x180);
const _: () = assert!(OFF_GUEST_HEARTBEAT == 0x184);
const _: () = assert!(OFF_SESSION_ACK == 0x188);
const _: () = assert!(OFF_SESSION_RING0_START == 0x18c);
const _: () = assert!(OFF_EVENT_PORT == 0x190);
const _: () = assert!(OFF_GUEST_WAITING == 0x194);
const _: () = assert!(size_of::<GuestLine>() == LINE_BYTES);
const _: () = assert!(OFF_SESSION_REQUEST == 0x1c0);
const _: () = assert!(OFF_SESSION_GENERATION == 0x1c4);
const _: () = assert!(OFF_SESSION_RING1_START == 0x1c8);
const _: () = assert!(OFF_PEER_HEARTBEAT == 0x1cc);
const _: () = assert!(OFF_PEER_WAITING == 0x1d0);
const _: () = assert!(size_of::<PeerLine>() == LINE_BYTES);
const _: () = assert!(HEADER_BYTES == 0x200);
const _: () = assert!(HEADER_BYTES <= DATA_ALIGN);
const _: () = assert!(MAGIC == 0x4b4e_494c_4d41_5253);
const _: () = assert!(record_bytes(0) == 8 && record_bytes(1) == 16 && record_bytes(8) == 16);
const _: () = assert!(max_message_len(MIN_RING_BYTES) == 24);
