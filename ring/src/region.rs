//! The region: geometry, creation by the guest, validated attachment by the peer, state words.

use core::fmt;

use crate::error::Error;
use crate::layout::{
    self, DATA_ALIGN, FLAG_CACHEABLE, HEADER_BYTES, KIND_MESSAGE, MAGIC, MAX_RING_BYTES,
    MIN_HEADER_BYTES, MIN_RING_BYTES, OFF_FLAGS, OFF_GENERATION, OFF_GUEST_HEARTBEAT,
    OFF_GUEST_STATE, OFF_HEADER_BYTES, OFF_MAGIC, OFF_PEER_HEARTBEAT, OFF_PEER_STATE,
    OFF_REGION_BYTES, OFF_RING_COUNT, OFF_VERSION_MAJOR, RING_COUNT, STATE_OFFLINE, STATE_READY,
    STATE_STOPPED, VERSION_MAJOR, VERSION_MINOR,
};
use crate::memory::{Fence, SharedMemory};
use crate::ring::{Consumer, Producer, RingLayout};

/// The two sides of the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The bare-metal guest: creates the region, produces on ring 0, consumes ring 1.
    Guest,
    /// The Linux peer: attaches, produces on ring 1, consumes ring 0.
    Peer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Guest => "guest",
            Role::Peer => "peer",
        })
    }
}

/// A side's state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SideState {
    /// Not started (or not yet attached).
    Offline = STATE_OFFLINE,
    /// Serving its rings.
    Ready = STATE_READY,
    /// Stopped for good; it will not touch its rings again.
    Stopped = STATE_STOPPED,
}

impl SideState {
    /// Decodes a state word.
    pub fn from_word(value: u32) -> Option<Self> {
        match value {
            STATE_OFFLINE => Some(SideState::Offline),
            STATE_READY => Some(SideState::Ready),
            STATE_STOPPED => Some(SideState::Stopped),
            _ => None,
        }
    }
}

/// The two rings, named by direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ring 0: the guest produces, the peer consumes.
    GuestToPeer = 0,
    /// Ring 1: the peer produces, the guest consumes.
    PeerToGuest = 1,
}

impl Direction {
    /// The ring's number in the ABI (0 or 1).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::GuestToPeer => "0 (guest->peer)",
            Direction::PeerToGuest => "1 (peer->guest)",
        })
    }
}

/// Placement of one ring's data area in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Offset of the data area from the region start; a multiple of 4096, at least 4096.
    pub data_offset: usize,
    /// Size of the data area: a power of two, 64 ..= 2^31 bytes.
    pub data_bytes: usize,
}

impl RingGeometry {
    /// Largest message payload this ring carries (`data_bytes / 2 - 8`).
    pub fn max_message_len(&self) -> usize {
        layout::max_message_len(self.data_bytes)
    }
}

/// Placement of the header and both rings in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of the region the header describes (from offset 0).
    pub region_bytes: usize,
    /// Ring 0 (guest → peer) and ring 1 (peer → guest).
    pub rings: [RingGeometry; 2],
}

impl Geometry {
    /// The default geometry for a region of `len` bytes: the header page, then two rings of
    /// the same size, the largest power of two that fits (at most 2^31 bytes each).
    ///
    /// A 16 MiB region gets two 4 MiB rings at 0x1000 and 0x401000.
    pub fn for_region(len: usize) -> Result<Self, Error> {
        let needed = 3 * DATA_ALIGN;
        if len < needed {
            return Err(Error::RegionTooSmall {
                len: len as u64,
                needed: needed as u64,
            });
        }
        let half = (len - DATA_ALIGN) / 2;
        // Largest power of two <= half; half >= DATA_ALIGN here, so this is >= 4096.
        let ring_bytes = (1usize << (usize::BITS - 1 - half.leading_zeros())).min(MAX_RING_BYTES);
        Self::with_ring_bytes(len, [ring_bytes, ring_bytes])
    }

    /// A geometry with the given ring sizes: ring 0 at 0x1000, ring 1 at the next 4096-byte
    /// boundary after it. `region_bytes` is the size the header will announce.
    pub fn with_ring_bytes(region_bytes: usize, ring_bytes: [usize; 2]) -> Result<Self, Error> {
        let second = ring_bytes[0]
            .checked_add(DATA_ALIGN + DATA_ALIGN - 1)
            .map(|end| end & !(DATA_ALIGN - 1))
            .ok_or(Error::BadGeometry {
                reason: "size overflows",
                ring: Some(0),
                value: ring_bytes[0] as u64,
            })?;
        let geometry = Geometry {
            region_bytes,
            rings: [
                RingGeometry {
                    data_offset: DATA_ALIGN,
                    data_bytes: ring_bytes[0],
                },
                RingGeometry {
                    data_offset: second,
                    data_bytes: ring_bytes[1],
                },
            ],
        };
        geometry.validate()?;
        Ok(geometry)
    }

    /// Checks every rule of the ABI: each data area 4096-aligned, after the header, a power of
    /// two between 64 bytes and 2^31 bytes, inside `region_bytes`, and the two not overlapping.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason, ring: Option<u8>, value: usize| Error::BadGeometry {
            reason,
            ring,
            value: value as u64,
        };
        if self.region_bytes < HEADER_BYTES {
            return Err(Error::RegionTooSmall {
                len: self.region_bytes as u64,
                needed: HEADER_BYTES as u64,
            });
        }
        for (index, ring) in self.rings.iter().enumerate() {
            let which = Some(index as u8);
            if ring.data_offset % DATA_ALIGN != 0 {
                return Err(bad(
                    "data offset not a multiple of 4096",
                    which,
                    ring.data_offset,
                ));
            }
            if ring.data_offset < HEADER_BYTES {
                return Err(bad(
                    "data offset overlaps the header",
                    which,
                    ring.data_offset,
                ));
            }
            if !ring.data_bytes.is_power_of_two()
                || ring.data_bytes < MIN_RING_BYTES
                || ring.data_bytes > MAX_RING_BYTES
            {
                return Err(bad(
                    "data size not a power of two between 64 and 2^31",
                    which,
                    ring.data_bytes,
                ));
            }
            match ring.data_offset.checked_add(ring.data_bytes) {
                Some(end) if end <= self.region_bytes => {}
                _ => {
                    return Err(Error::RegionTooSmall {
                        len: self.region_bytes as u64,
                        needed: (ring.data_offset as u64).saturating_add(ring.data_bytes as u64),
                    });
                }
            }
        }
        let [first, second] = self.rings;
        if first.data_offset < second.data_offset + second.data_bytes
            && second.data_offset < first.data_offset + first.data_bytes
        {
            return Err(bad("data areas overlap", None, second.data_offset));
        }
        Ok(())
    }

    /// The ring carrying `direction`.
    pub fn ring(&self, direction: Direction) -> &RingGeometry {
        &self.rings[direction.index()]
    }
}

/// How the creator maps the region, and what keeps its generation apart from the last one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creation {
    /// The creator maps the region Normal write-back cacheable (recorded as `flags` bit 0).
    pub cacheable: bool,
    /// Used as the generation when the memory holds no valid previous header (e.g. the low
    /// bits of a free-running counter); otherwise the previous generation plus one is used.
    pub seed: u32,
}

/// What the header says beyond the geometry (read once at attach, written once at create).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// `version_minor`.
    pub minor: u16,
    /// `flags` as written by the creator.
    pub flags: u32,
    /// The header's generation; `None` for a header without the 1.1 lines (a 1.0 guest).
    pub generation: Option<u32>,
}

impl HeaderInfo {
    /// Whether the creator speaks sessions (minor >= 1 with the 1.1 lines present).
    pub fn sessions(&self) -> bool {
        self.generation.is_some()
    }

    /// Whether the creator maps the region cacheable (`flags` bit 0; always clear in 1.0).
    pub fn creator_cacheable(&self) -> bool {
        self.flags & FLAG_CACHEABLE != 0
    }
}

/// The shared region with a validated header: what both sides hold after create/attach.
///
/// The geometry is read once (attach) or written once (create) and kept locally; nothing in
/// this value is re-read from the header later (except the magic and generation, by
/// [`Region::check_generation`]).
#[derive(Debug, Clone)]
pub struct Region<M> {
    memory: M,
    geometry: Geometry,
    info: HeaderInfo,
}

/// The generation a creator writes: the previous header's plus one when one was valid, else
/// `seed`; never 0 and never the value the word held before.
fn next_generation(previous_valid: bool, previous: u32, seed: u32) -> u32 {
    let mut generation = if previous_valid {
        previous.wrapping_add(1)
    } else {
        seed
    };
    for _ in 0..2 {
        if generation == 0 || generation == previous {
            generation = generation.wrapping_add(1);
        }
    }
    generation
}

impl<M: SharedMemory + Clone> Region<M> {
    /// Creates the region (guest side): invalidates the magic, writes version, geometry,
    /// state words (both Offline) and zero indices, then — behind a store barrier — the magic.
    ///
    /// Data areas are not cleared (the indices say they are empty).
    pub fn create(memory: M, geometry: Geometry) -> Result<Self, Error> {
        Self::create_with(memory, geometry, Creation::default())
    }

    /// [`Region::create`] with the creator's memory attributes recorded in `flags` and the
    /// generation chosen as [`Creation`] says (ABI §5.2).
    pub fn create_with(memory: M, geometry: Geometry, creation: Creation) -> Result<Self, Error> {
        geometry.validate()?;
        if memory.len() < geometry.region_bytes {
            return Err(Error::RegionTooSmall {
                len: memory.len() as u64,
                needed: geometry.region_bytes as u64,
            });
        }
        // Whatever header was there before (a previous boot of ours, or garbage).
        let previous_valid = memory.load_u64(OFF_MAGIC) == MAGIC;
        let generation = next_generation(
            previous_valid,
            memory.load_u32(OFF_GENERATION),
            creation.seed,
        );
        memory.store_u64(OFF_MAGIC, 0);
        memory.store_u32(OFF_GENERATION, generation);
        // Barrier: the magic's invalidation and the new generation before any other header
        // store. An attacher re-checks magic and generation after reading the header (the
        // seqlock of `attach`), so it never keeps a mix of the old and the new header. Without
        // it loom's `recreating_over_an_old_header` attaches a torn header (checked by removing
        // it). Store→store only; ISH because the peer is a PE in our inner-shareable domain.
        memory.fence(Fence::StoreStore);
        // Line 0 after the magic is written field by field below (each word once); zero the
        // rest: states, indices, lines 6 and 7 and every reserved word.
        let mut offset = OFF_GUEST_STATE;
        while offset < HEADER_BYTES {
            if offset == OFF_GENERATION {
                // Generation already written; the heartbeat shares its u64.
                memory.store_u32(OFF_GUEST_HEARTBEAT, 0);
            } else {
                memory.store_u64(offset, 0);
            }
            offset += 8;
        }
        memory.store_u32(
            OFF_VERSION_MAJOR,
            u32::from(VERSION_MAJOR) | (u32::from(VERSION_MINOR) << 16),
        );
        memory.store_u32(OFF_HEADER_BYTES, HEADER_BYTES as u32);
        memory.store_u64(OFF_REGION_BYTES, geometry.region_bytes as u64);
        memory.store_u32(OFF_RING_COUNT, RING_COUNT);
        let flags = if creation.cacheable {
            FLAG_CACHEABLE
        } else {
            0
        };
        memory.store_u32(OFF_FLAGS, flags);
        for (index, ring) in geometry.rings.iter().enumerate() {
            let descriptor = layout::ring_descriptor_offset(index);
            memory.store_u64(
                descriptor + layout::OFF_DESC_DATA_OFFSET,
                ring.data_offset as u64,
            );
            // `data_bytes` and the descriptor's reserved word (0) in one u64.
            memory.store_u64(
                descriptor + layout::OFF_DESC_DATA_BYTES,
                ring.data_bytes as u64,
            );
            // A zero record header at the start of each ring, for readable hex dumps only.
            memory.store_u64(ring.data_offset, u64::from(KIND_MESSAGE));
        }
        // Barrier: every header store above before the magic store below, so whoever sees the
        // magic sees the whole header (the attacher pairs this with an acquire barrier).
        // Store→store only; ISH: the peer is a PE in our domain. Note: loom's
        // `attach_sees_a_complete_header` was seen to pass with this barrier removed, so it is
        // justified by the ordering argument, not yet by a failing model.
        memory.fence(Fence::StoreStore);
        memory.store_u64(OFF_MAGIC, MAGIC);
        let info = HeaderInfo {
            minor: VERSION_MINOR,
            flags,
            generation: Some(generation),
        };
        Ok(Region {
            memory,
            geometry,
            info,
        })
    }

    /// Attaches to a region created by the other side (peer): checks magic, version, header
    /// size, region size, ring count and the geometry, once, and keeps a local copy.
    ///
    /// A header being re-created while it is read (the magic or, with 1.1 lines, the
    /// generation differs after the reads) gives [`Error::BadMagic`] or [`Error::Restarted`]:
    /// try again.
    pub fn attach(memory: M) -> Result<Self, Error> {
        if memory.len() < HEADER_BYTES {
            return Err(Error::RegionTooSmall {
                len: memory.len() as u64,
                needed: HEADER_BYTES as u64,
            });
        }
        let magic = memory.load_u64(OFF_MAGIC);
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        // Barrier: the magic load before the loads of the header it publishes (pairs with the
        // creator's store barrier before the magic). ISH: the creator is a PE in our domain.
        memory.fence(Fence::Acquire);
        // The generation word as it is now (whatever a 1.0 creator left there: it never
        // changes under a 1.0 header), for the re-check after the reads.
        let generation_word = memory.load_u32(OFF_GENERATION);
        let result = Self::read_header(memory.clone(), generation_word);
        // Barrier: the header loads before the re-check loads below (a seqlock read: the
        // creator stores magic 0 and the new generation, a store barrier, the header, a store
        // barrier, the magic). Load→load; ISH: the creator is a PE in our domain. A header
        // re-created under us is "not there yet" (retry), never a mix or a spurious error.
        memory.fence(Fence::Acquire);
        let magic_again = memory.load_u64(OFF_MAGIC);
        if magic_again != MAGIC {
            return Err(Error::BadMagic { found: magic_again });
        }
        let found = memory.load_u32(OFF_GENERATION);
        if found != generation_word {
            return Err(Error::Restarted {
                attached: generation_word,
                found: Some(found),
            });
        }
        result
    }

    /// The header reads and checks of [`Region::attach`], after the magic and its barrier.
    fn read_header(memory: M, generation_word: u32) -> Result<Self, Error> {
        let version = memory.load_u32(OFF_VERSION_MAJOR);
        let (major, minor) = (version as u16, (version >> 16) as u16);
        if major != VERSION_MAJOR {
            return Err(Error::VersionMismatch { major, minor });
        }
        let header_bytes = memory.load_u32(OFF_HEADER_BYTES) as usize;
        if !(MIN_HEADER_BYTES..=DATA_ALIGN).contains(&header_bytes) {
            return Err(Error::BadHeader {
                field: "header_bytes",
                value: header_bytes as u64,
            });
        }
        let region_bytes = memory.load_u64(OFF_REGION_BYTES);
        if region_bytes > memory.len() as u64 {
            return Err(Error::RegionTooSmall {
                len: memory.len() as u64,
                needed: region_bytes,
            });
        }
        let ring_count = memory.load_u32(OFF_RING_COUNT);
        if ring_count != RING_COUNT {
            return Err(Error::BadHeader {
                field: "ring_count",
                value: u64::from(ring_count),
            });
        }
        let mut rings = [RingGeometry {
            data_offset: 0,
            data_bytes: 0,
        }; 2];
        for (index, ring) in rings.iter_mut().enumerate() {
            let descriptor = layout::ring_descriptor_offset(index);
            let data_offset = memory.load_u64(descriptor + layout::OFF_DESC_DATA_OFFSET);
            let data_bytes = memory.load_u32(descriptor + layout::OFF_DESC_DATA_BYTES);
            // region_bytes <= memory.len(), so an offset inside the region fits in usize.
            if data_offset > region_bytes {
                return Err(Error::BadGeometry {
                    reason: "data offset beyond the region",
                    ring: Some(index as u8),
                    value: data_offset,
                });
            }
            *ring = RingGeometry {
                data_offset: data_offset as usize,
                data_bytes: data_bytes as usize,
            };
        }
        let geometry = Geometry {
            region_bytes: region_bytes as usize,
            rings,
        };
        geometry.validate()?;
        if geometry
            .rings
            .iter()
            .any(|ring| ring.data_offset < header_bytes)
        {
            return Err(Error::BadHeader {
                field: "header_bytes",
                value: header_bytes as u64,
            });
        }
        let flags = memory.load_u32(OFF_FLAGS);
        // The 1.1 lines exist when the creator says 1.1 or later and its header holds them.
        let sessions = minor >= 1 && header_bytes >= HEADER_BYTES;
        let generation = sessions.then_some(generation_word);
        Ok(Region {
            memory,
            geometry,
            info: HeaderInfo {
                minor,
                flags,
                generation,
            },
        })
    }

    /// What the header says beyond the geometry (local copy).
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }

    /// Refuses a mapping whose cacheability differs from the creator's (`flags` bit 0).
    pub fn check_attributes(&self, ours_cacheable: bool) -> Result<(), Error> {
        let name = |cacheable| {
            if cacheable {
                "Normal write-back cacheable"
            } else {
                "uncached (Device or Normal non-cacheable)"
            }
        };
        let creator = self.info.creator_cacheable();
        if creator == ours_cacheable {
            Ok(())
        } else {
            Err(Error::AttributeMismatch {
                creator: name(creator),
                ours: name(ours_cacheable),
            })
        }
    }

    /// Checks that the header this side attached to is still the one in memory: the magic is
    /// valid and the generation unchanged (always `Ok` for a header without generation).
    ///
    /// A side calls it before storing to the region after a wait, so that it does not write
    /// into a header a restarted guest has re-created; see `docs/ABI.md` §5.9.
    pub fn check_generation(&self) -> Result<(), Error> {
        let Some(attached) = self.info.generation else {
            return Ok(());
        };
        let magic = self.memory.load_u64(OFF_MAGIC);
        let found = self.memory.load_u32(OFF_GENERATION);
        // Barrier: these loads before whatever this side loads or stores next, so a store that
        // follows a passing check is not ordered before it. Load→load/store; ISH.
        self.memory.fence(Fence::Acquire);
        if magic != MAGIC {
            Err(Error::Restarted {
                attached,
                found: None,
            })
        } else if found != attached {
            Err(Error::Restarted {
                attached,
                found: Some(found),
            })
        } else {
            Ok(())
        }
    }

    /// Stores `role`'s heartbeat word (ABI §5.8); no barrier (it orders nothing).
    pub fn beat(&self, role: Role, value: u32) {
        self.memory.store_u32(heartbeat_offset(role), value);
    }

    /// Loads `role`'s heartbeat word (0 in a header without the 1.1 lines).
    pub fn heartbeat(&self, role: Role) -> u32 {
        if self.info.sessions() {
            self.memory.load_u32(heartbeat_offset(role))
        } else {
            0
        }
    }

    /// The geometry (a local copy, validated).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The memory handle.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Stores `role`'s state word, after a full barrier so that everything this side did
    /// before (creating the header, publishing its last index) is visible first.
    pub fn set_state(&self, role: Role, state: SideState) {
        // Barrier: all earlier loads and stores (header, indices, payload) before the state
        // store, so a side that sees Ready/Stopped sees what came before it. ISH: the other
        // side is a PE in our inner-shareable domain. Without it loom's
        // `stopped_comes_after_the_last_reply` sees Stopped before the last reply (checked by
        // removing it).
        self.memory.fence(Fence::Full);
        self.memory.store_u32(state_offset(role), state as u32);
    }

    /// Loads `role`'s state word; an unknown value is an error.
    pub fn state(&self, role: Role) -> Result<SideState, Error> {
        let value = self.memory.load_u32(state_offset(role));
        // Barrier: the state load before the loads that follow (e.g. the final indices after
        // seeing Stopped). ISH: the other side is a PE in our inner-shareable domain. Without
        // it loom's `stopped_comes_after_the_last_reply` misses the last reply (checked by
        // removing it).
        self.memory.fence(Fence::Acquire);
        SideState::from_word(value).ok_or(Error::BadState { role, value })
    }

    /// The endpoints of `role`: the producer of its outgoing ring and the consumer of its
    /// incoming ring. Call once per role: two producers on one ring break the protocol.
    ///
    /// Both start from the shared indices as they are now (zero after create), so a side can
    /// re-attach and continue where its previous incarnation stopped. Inconsistent indices
    /// are reported by the endpoints' first operation.
    pub fn endpoints(&self, role: Role) -> (Producer<M>, Consumer<M>) {
        let (outgoing, incoming) = match role {
            Role::Guest => (Direction::GuestToPeer, Direction::PeerToGuest),
            Role::Peer => (Direction::PeerToGuest, Direction::GuestToPeer),
        };
        let outgoing = RingLayout::new(outgoing, self.geometry.ring(outgoing));
        let incoming = RingLayout::new(incoming, self.geometry.ring(incoming));
        let positions = |ring: &RingLayout| {
            (
                self.memory.load_u32(ring.producer_index()),
                self.memory.load_u32(ring.consumer_index()),
            )
        };
        let (out_producer, out_consumer) = positions(&outgoing);
        let (in_producer, in_consumer) = positions(&incoming);
        // Barrier: the four index loads before our stores into the space the outgoing ring's
        // consumer released and before our loads of the records the incoming ring's producer
        // published (one barrier serves both rings). ISH: the other side is a PE in our domain.
        // Without it loom's `producer_attach_waits_for_released_space` (a store racing the
        // consumer's last read) and `consumer_attach_races_a_live_producer` (a record load
        // racing its store) fail (checked by removing it).
        self.memory.fence(Fence::Acquire);
        (
            Producer::starting_at(self.memory.clone(), outgoing, out_producer, out_consumer),
            Consumer::starting_at(self.memory.clone(), incoming, in_producer, in_consumer),
        )
    }
}

fn heartbeat_offset(role: Role) -> usize {
    match role {
        Role::Guest => OFF_GUEST_HEARTBEAT,
        Role::Peer => OFF_PEER_HEARTBEAT,
    }
}

fn state_offset(role: Role) -> usize {
    match role {
        Role::Guest => OFF_GUEST_STATE,
        Role::Peer => OFF_PEER_STATE,
    }
}
