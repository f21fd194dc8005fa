//! The demo application protocol carried by the ring: echo, one-way data streams, stop/stats.
//!
//! Every ring message is a 24-byte little-endian [`Header`] followed by `payload_len` payload
//! bytes:
//!
//! | offset | field         | meaning                                         |
//! |--------|---------------|-------------------------------------------------|
//! | 0      | `op: u32`     | [`Op`]                                          |
//! | 4      | `payload_len` | bytes after the header (= message length - 24)  |
//! | 8      | `seq: u64`    | sequence number, per direction and per op       |
//! | 16     | `checksum`    | CRC-32/IEEE of the payload ([`checksum`])       |
//! | 20     | `reserved`    | 0                                               |
//!
//! Payloads of [`Op::EchoRequest`], [`Op::EchoReply`] and [`Op::Data`] are the pattern
//! [`pattern_word`] of their `seq`, so a receiver checks both the checksum and the bytes.

use crate::error::SendError;
use crate::memory::SharedMemory;
use crate::ring::{ReadSlot, WriteSlot};

/// Size of the message header.
pub const HEADER_LEN: usize = 24;
/// Payload size of [`Op::StreamRequest`].
pub const STREAM_REQUEST_LEN: usize = 16;
/// Payload size of [`Op::Stats`].
pub const STATS_LEN: usize = 40;
/// Payload size of [`Op::FloorRequest`].
pub const FLOOR_REQUEST_LEN: usize = 8;
/// Region offset of the floor's peer flag word (line 8 of the header page, which ABI §2
/// leaves unused otherwise; written by the peer only, during a [`Op::FloorRequest`]).
pub const FLOOR_PEER_FLAG: usize = 0x200;
/// Region offset of the floor's guest flag word (line 9, written by the guest only, while it
/// serves a [`Op::FloorRequest`]). Every `data_offset` is at least 4096 (ABI §2.2), so both
/// lines lie outside the rings in every valid geometry.
pub const FLOOR_GUEST_FLAG: usize = 0x240;
/// Size of the stack buffer used to move payloads in pieces.
pub(crate) const CHUNK: usize = 256;

/// Message operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Peer → guest: answer with [`Op::EchoReply`], same `seq` and payload.
    EchoRequest = 1,
    /// Guest → peer: the answer to an [`Op::EchoRequest`].
    EchoReply = 2,
    /// Either direction: one message of a one-way stream.
    Data = 3,
    /// Peer → guest: payload [`StreamRequest`]; the guest sends `count` [`Op::Data`]
    /// messages of `size` payload bytes, `seq` 0..count.
    StreamRequest = 4,
    /// Peer → guest: send [`Op::Stats`] and stop.
    Stop = 5,
    /// Guest → peer: payload [`Stats`], the guest's counters.
    Stats = 6,
    /// Peer → guest: payload [`FloorRequest`]; the guest leaves the rings for a bare-flag
    /// ping-pong of `count` rounds on [`FLOOR_PEER_FLAG`]/[`FLOOR_GUEST_FLAG`] (the platform's
    /// round-trip floor), then serves again. No reply message.
    FloorRequest = 7,
}

impl Op {
    /// Decodes an op number.
    pub fn from_u32(value: u32) -> Option<Op> {
        Some(match value {
            1 => Op::EchoRequest,
            2 => Op::EchoReply,
            3 => Op::Data,
            4 => Op::StreamRequest,
            5 => Op::Stop,
            6 => Op::Stats,
            7 => Op::FloorRequest,
            _ => return None,
        })
    }
}

/// The 24-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`Op`] as a number (kept raw so that unknown ops can be reported).
    pub op: u32,
    /// Payload bytes after the header.
    pub payload_len: u32,
    /// Sequence number.
    pub seq: u64,
    /// CRC-32/IEEE of the payload.
    pub checksum: u32,
    /// Zero.
    pub reserved: u32,
}

impl Header {
    /// A header for `op` with `payload`'s length and checksum.
    pub fn for_payload(op: Op, seq: u64, payload: &[u8]) -> Header {
        Header {
            op: op as u32,
            payload_len: payload.len() as u32,
            seq,
            checksum: checksum(payload),
            reserved: 0,
        }
    }

    /// The little-endian encoding.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[0..4].copy_from_slice(&self.op.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.seq.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.checksum.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.reserved.to_le_bytes());
        bytes
    }

    /// Decodes the first [`HEADER_LEN`] bytes of `bytes`; `None` if there are fewer.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            op: u32_at(bytes, 0),
            payload_len: u32_at(bytes, 4),
            seq: u64_at(bytes, 8),
            checksum: u32_at(bytes, 16),
            reserved: u32_at(bytes, 20),
        })
    }

    /// The op, if known.
    pub fn op(&self) -> Option<Op> {
        Op::from_u32(self.op)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32_at(bytes, at)) | (u64::from(u32_at(bytes, at + 4)) << 32)
}

/// CRC-32/IEEE (polynomial 0x04C11DB7 reflected, init and final xor 0xFFFFFFFF), as zlib
/// and `crc32fast` compute it: `checksum(b"123456789") == 0xCBF43926`.
pub fn checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// Word `index` of the payload pattern of message `seq`:
/// `seq * 0x9E3779B97F4A7C15 + (index + 1) * 0xD6E8FEB86659FD93 (mod 2^64)`.
/// Payload byte `i` is byte `i % 8` (little-endian) of word `i / 8`.
pub fn pattern_word(seq: u64, index: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Fills `buf` with payload bytes `offset..offset + buf.len()` of message `seq`'s pattern.
pub fn fill_payload_at(seq: u64, offset: usize, buf: &mut [u8]) {
    let lead = ((8 - offset % 8) % 8).min(buf.len());
    let (head, body) = buf.split_at_mut(lead);
    for (position, byte) in (offset..).zip(head.iter_mut()) {
        *byte = pattern_byte(seq, position);
    }
    let mut index = ((offset + lead) / 8) as u64;
    let mut words = body.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&pattern_word(seq, index).to_le_bytes());
        index += 1;
    }
    let tail = pattern_word(seq, index).to_le_bytes();
    let rest = words.into_remainder();
    let count = rest.len();
    rest.copy_from_slice(&tail[..count]);
}

/// Fills `buf` with the payload pattern of message `seq` (from payload byte 0).
pub fn fill_payload(seq: u64, buf: &mut [u8]) {
    fill_payload_at(seq, 0, buf);
}

/// Whether `chunk` equals payload bytes `offset..offset + chunk.len()` of `seq`'s pattern.
pub fn check_payload_at(seq: u64, offset: usize, chunk: &[u8]) -> bool {
    let lead = ((8 - offset % 8) % 8).min(chunk.len());
    let (head, body) = chunk.split_at(lead);
    if !(offset..)
        .zip(head)
        .all(|(position, byte)| *byte == pattern_byte(seq, position))
    {
        return false;
    }
    let mut index = ((offset + lead) / 8) as u64;
    let mut words = body.chunks_exact(8);
    for word in &mut words {
        if *word != pattern_word(seq, index).to_le_bytes() {
            return false;
        }
        index += 1;
    }
    let rest = words.remainder();
    *rest == pattern_word(seq, index).to_le_bytes()[..rest.len()]
}

/// Whether `payload` is exactly the pattern of message `seq`.
pub fn check_payload(seq: u64, payload: &[u8]) -> bool {
    check_payload_at(seq, 0, payload)
}

/// Payload byte `position` of message `seq`'s pattern.
pub fn pattern_byte(seq: u64, position: usize) -> u8 {
    pattern_word(seq, (position / 8) as u64).to_le_bytes()[position % 8]
}

/// An 8-aligned scratch buffer, so that slot copies through it use whole words.
#[repr(C, align(8))]
pub(crate) struct Chunk(pub(crate) [u8; CHUNK]);

impl Chunk {
    pub(crate) const fn new() -> Self {
        Chunk([0; CHUNK])
    }
}

/// CRC-32 of the `len`-byte pattern payload of `seq`, without a buffer of that size.
pub fn pattern_checksum(seq: u64, len: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut scratch = Chunk::new();
    let chunk = &mut scratch.0;
    let mut offset = 0;
    while offset < len {
        let count = CHUNK.min(len - offset);
        fill_payload_at(seq, offset, &mut chunk[..count]);
        hasher.update(&chunk[..count]);
        offset += count;
    }
    hasher.finalize()
}

/// Writes a pattern message (`op`, `seq`, `size` pattern bytes) into `slot`, which must have
/// room for `HEADER_LEN + size` bytes; returns false (writing nothing useful) otherwise.
pub fn write_pattern_message<M: SharedMemory>(
    slot: &mut WriteSlot<'_, M>,
    op: Op,
    seq: u64,
    size: usize,
) -> bool {
    if slot.capacity() - slot.written() < HEADER_LEN + size || size > u32::MAX as usize {
        return false;
    }
    let header = Header {
        op: op as u32,
        payload_len: size as u32,
        seq,
        checksum: pattern_checksum(seq, size),
        reserved: 0,
    };
    slot.write(&header.encode());
    let mut scratch = Chunk::new();
    let chunk = &mut scratch.0;
    let mut offset = 0;
    while offset < size {
        let count = CHUNK.min(size - offset);
        fill_payload_at(seq, offset, &mut chunk[..count]);
        slot.write(&chunk[..count]);
        offset += count;
    }
    true
}

/// What [`verify_pattern_payload`] (or [`verify_pattern_message`]) found in a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Header consistent, checksum and pattern right.
    Intact(Header),
    /// Header consistent, but the checksum or the payload pattern is wrong.
    Corrupted(Header),
    /// Shorter than a header, `payload_len` disagrees with the message length, or
    /// `reserved != 0`.
    Malformed,
}

/// Checks the pattern payload (checksum and bytes) of `slot` against `header`, the header
/// the caller already decoded from this slot with [`read_header`].
///
/// **Read each shared value once.** The message lives in shared memory that the other side
/// can still write (a buggy or hostile peer may rewrite it while we look at it). A receiver
/// that decodes the header once to decide what the message is (its op, the `seq` it counts)
/// and then decodes it again for the verdict may act on two different headers. So the header
/// is decoded once, by the caller, and this function takes that copy: it never loads the
/// header from the slot again, and it loads each payload word once (the checksum and the
/// pattern check see the same bytes). The verdict is therefore about exactly the `header`
/// the caller counts.
///
/// `Malformed` if `header` does not describe this slot (its `payload_len` is not the
/// message length minus [`HEADER_LEN`], or `reserved != 0`); [`read_header`] never returns
/// such a header. The returned `Intact`/`Corrupted` carry a copy of `header`.
pub fn verify_pattern_payload<M: SharedMemory>(slot: &ReadSlot<'_, M>, header: &Header) -> Verdict {
    let header = *header;
    if slot.len() < HEADER_LEN
        || header.payload_len as usize != slot.len() - HEADER_LEN
        || header.reserved != 0
    {
        return Verdict::Malformed;
    }
    let size = header.payload_len as usize;
    let mut hasher = crc32fast::Hasher::new();
    let mut scratch = Chunk::new();
    let chunk = &mut scratch.0;
    let mut pattern_ok = true;
    let mut offset = 0;
    while offset < size {
        let count = slot.read(HEADER_LEN + offset, &mut chunk[..CHUNK.min(size - offset)]);
        hasher.update(&chunk[..count]);
        pattern_ok &= check_payload_at(header.seq, offset, &chunk[..count]);
        offset += count;
    }
    if pattern_ok && hasher.finalize() == header.checksum {
        Verdict::Intact(header)
    } else {
        Verdict::Corrupted(header)
    }
}

/// Decodes the header of `slot` (one read of the shared header) and checks a pattern payload
/// (checksum and bytes) with [`verify_pattern_payload`].
///
/// Use it only when the header is not needed otherwise; use the header inside the returned
/// verdict, never a second [`read_header`] of the same slot (see the rule on
/// [`verify_pattern_payload`]). A caller that has already decoded the header must call
/// [`verify_pattern_payload`] with it instead.
pub fn verify_pattern_message<M: SharedMemory>(slot: &ReadSlot<'_, M>) -> Verdict {
    match read_header(slot) {
        Some(header) => verify_pattern_payload(slot, &header),
        None => Verdict::Malformed,
    }
}

/// The header of a received message, if the message is long enough, its `payload_len`
/// matches and `reserved` is zero.
pub fn read_header<M: SharedMemory>(slot: &ReadSlot<'_, M>) -> Option<Header> {
    let mut bytes = [0u8; HEADER_LEN];
    if slot.read(0, &mut bytes) != HEADER_LEN {
        return None;
    }
    let header = Header::decode(&bytes)?;
    (header.payload_len as usize == slot.len() - HEADER_LEN && header.reserved == 0)
        .then_some(header)
}

/// Sends a message made of `header` (its `payload_len` and `checksum` are set from
/// `payload`) and `payload` on `producer`, publishing it.
pub fn send_message<M: SharedMemory>(
    producer: &mut crate::Producer<M>,
    op: Op,
    seq: u64,
    payload: &[u8],
) -> Result<(), SendError> {
    let mut slot = producer.reserve(HEADER_LEN + payload.len())?;
    slot.write(&Header::for_payload(op, seq, payload).encode());
    slot.write(payload);
    slot.commit();
    producer.publish();
    Ok(())
}

/// Payload of [`Op::StreamRequest`]: `count: u64, size: u32, reserved: u32 (0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRequest {
    /// Number of [`Op::Data`] messages to send.
    pub count: u64,
    /// Payload bytes of each.
    pub size: u32,
}

impl StreamRequest {
    /// The little-endian encoding.
    pub fn encode(&self) -> [u8; STREAM_REQUEST_LEN] {
        let mut bytes = [0; STREAM_REQUEST_LEN];
        bytes[0..8].copy_from_slice(&self.count.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.size.to_le_bytes());
        bytes
    }

    /// Decodes exactly [`STREAM_REQUEST_LEN`] bytes with `reserved == 0`.
    pub fn decode(bytes: &[u8]) -> Option<StreamRequest> {
        if bytes.len() != STREAM_REQUEST_LEN || u32_at(bytes, 12) != 0 {
            return None;
        }
        Some(StreamRequest {
            count: u64_at(bytes, 0),
            size: u32_at(bytes, 8),
        })
    }
}

/// Payload of [`Op::FloorRequest`]: `count: u32, start: u32`.
///
/// Round `r` (1..=count) is the peer storing `start + r` (wrapping) into [`FLOOR_PEER_FLAG`]
/// and the guest, once it reads that value there, storing it into [`FLOOR_GUEST_FLAG`]. The
/// peer picks `start` as the guest flag's current value, so no round's value is already in
/// either word when the request arrives (the peer stores `start` into its own word first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorRequest {
    /// Rounds to play.
    pub count: u32,
    /// The value before the first round.
    pub start: u32,
}

impl FloorRequest {
    /// The little-endian encoding.
    pub fn encode(&self) -> [u8; FLOOR_REQUEST_LEN] {
        let mut bytes = [0; FLOOR_REQUEST_LEN];
        bytes[0..4].copy_from_slice(&self.count.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.start.to_le_bytes());
        bytes
    }

    /// Decodes exactly [`FLOOR_REQUEST_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Option<FloorRequest> {
        if bytes.len() != FLOOR_REQUEST_LEN {
            return None;
        }
        Some(FloorRequest {
            count: u32_at(bytes, 0),
            start: u32_at(bytes, 4),
        })
    }

    /// The value of round `round` (1-based).
    pub fn value(&self, round: u32) -> u32 {
        self.start.wrapping_add(round)
    }
}

/// Counters of one side; the payload of [`Op::Stats`] (five little-endian `u64`s in this
/// order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received (every message read from the ring, valid or not).
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages whose checksum or payload pattern was wrong.
    pub corrupted: u64,
    /// Messages missing according to sequence-number gaps.
    pub lost: u64,
    /// Messages that broke the demo protocol (malformed, unknown op, wrong direction,
    /// sequence going backwards, impossible request).
    pub protocol_errors: u64,
}

impl Stats {
    /// Adds `missing` messages (a [`Sequence::Gap`]) to `lost`, saturating at `u64::MAX`.
    ///
    /// The gap comes from the sender's sequence numbers, which are untrusted: two jumps of
    /// close to 2^64 would overflow a plain `+=` (a panic in debug builds, a wrapped and
    /// meaningless count in release builds).
    pub fn add_lost(&mut self, missing: u64) {
        self.lost = self.lost.saturating_add(missing);
    }

    /// The little-endian encoding.
    pub fn encode(&self) -> [u8; STATS_LEN] {
        let mut bytes = [0; STATS_LEN];
        for (at, value) in [
            self.received,
            self.sent,
            self.corrupted,
            self.lost,
            self.protocol_errors,
        ]
        .into_iter()
        .enumerate()
        {
            bytes[at * 8..at * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Decodes exactly [`STATS_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Option<Stats> {
        if bytes.len() != STATS_LEN {
            return None;
        }
        Some(Stats {
            received: u64_at(bytes, 0),
            sent: u64_at(bytes, 8),
            corrupted: u64_at(bytes, 16),
            lost: u64_at(bytes, 24),
            protocol_errors: u64_at(bytes, 32),
        })
    }
}

/// What a sequence number says, see [`SequenceTracker::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// The expected number.
    InOrder,
    /// 0 while a higher number was expected: a new stream starts (not an error).
    Restart,
    /// Higher than expected: this many messages are missing.
    Gap(u64),
    /// Lower than expected (but not 0): a duplicate or reordering, a protocol error.
    Backwards,
}

/// Follows one stream of sequence numbers (one direction, one op).
///
/// Streams start at 0 and increase by 1. A 0 restarts the stream (a new peer run, a new
/// [`Op::StreamRequest`]); a jump forward counts the skipped numbers as lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceTracker {
    next: u64,
}

impl SequenceTracker {
    /// A tracker expecting 0.
    pub const fn new() -> Self {
        SequenceTracker { next: 0 }
    }

    /// The next expected number.
    pub fn expected(&self) -> u64 {
        self.next
    }

    /// Classifies `seq` and expects `seq + 1` next.
    pub fn observe(&mut self, seq: u64) -> Sequence {
        let verdict = if seq == self.next {
            Sequence::InOrder
        } else if seq == 0 {
            Sequence::Restart
        } else if seq > self.next {
            // `seq > next`, so this cannot wrap; `seq` is the sender's (untrusted) value, and
            // whoever adds the gap to a counter must saturate (see [`Stats::add_lost`]).
            Sequence::Gap(seq - self.next)
        } else {
            Sequence::Backwards
        };
        self.next = seq.wrapping_add(1);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_crc32_ieee() {
        assert_eq!(checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn header_round_trips() {
        let header = Header {
            op: 3,
            payload_len: 100,
            seq: 0x0102_0304_0506_0708,
            checksum: 0xdead_beef,
            reserved: 0,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(Header::decode(&bytes), Some(header));
        assert_eq!(Header::decode(&bytes[..23]), None);
        assert_eq!(header.op(), Some(Op::Data));
    }

    #[test]
    fn pattern_is_consistent_across_helpers() {
        let mut whole = [0u8; 45];
        fill_payload(7, &mut whole);
        let mut piece = [0u8; 13];
        fill_payload_at(7, 19, &mut piece);
        assert_eq!(&whole[19..32], &piece);
        assert!(check_payload(7, &whole));
        assert!(!check_payload(8, &whole));
        assert_eq!(pattern_checksum(7, 45), checksum(&whole));
        assert_eq!(
            u64::from_le_bytes(whole[8..16].try_into().unwrap()),
            pattern_word(7, 1)
        );
        // Documented values (docs/ABI.md).
        assert_eq!(pattern_word(0, 0), 0xD6E8_FEB8_6659_FD93);
        assert_eq!(
            pattern_word(1, 0),
            0x9E37_79B9_7F4A_7C15u64.wrapping_add(0xD6E8_FEB8_6659_FD93)
        );
    }

    #[test]
    fn word_wise_pattern_matches_the_byte_formula() {
        for offset in 0..20 {
            for len in 0..30 {
                let mut buf = [0u8; 30];
                fill_payload_at(9, offset, &mut buf[..len]);
                for (index, byte) in buf[..len].iter().enumerate() {
                    assert_eq!(*byte, pattern_byte(9, offset + index));
                }
                assert!(check_payload_at(9, offset, &buf[..len]));
                if len > 0 {
                    buf[len - 1] ^= 0x40;
                    assert!(!check_payload_at(9, offset, &buf[..len]));
                    buf[len - 1] ^= 0x40;
                    buf[0] ^= 1;
                    assert!(!check_payload_at(9, offset, &buf[..len]));
                }
            }
        }
    }

    #[test]
    fn floor_request_round_trips_and_its_values_wrap() {
        let request = FloorRequest {
            count: 3,
            start: u32::MAX,
        };
        assert_eq!(FloorRequest::decode(&request.encode()), Some(request));
        assert_eq!(FloorRequest::decode(&request.encode()[..7]), None);
        assert_eq!((request.value(1), request.value(2)), (0, 1));
        assert_eq!(Op::from_u32(7), Some(Op::FloorRequest));
    }

    #[test]
    fn stream_request_and_stats_round_trip() {
        let request = StreamRequest {
            count: 1 << 40,
            size: 4096,
        };
        assert_eq!(StreamRequest::decode(&request.encode()), Some(request));
        let mut bad = request.encode();
        bad[12] = 1;
        assert_eq!(StreamRequest::decode(&bad), None);
        let stats = Stats {
            received: 1,
            sent: 2,
            corrupted: 3,
            lost: 4,
            protocol_errors: 5,
        };
        assert_eq!(Stats::decode(&stats.encode()), Some(stats));
        assert_eq!(Stats::decode(&[0; 39]), None);
    }

    #[test]
    fn sequence_tracker_classifies() {
        let mut tracker = SequenceTracker::new();
        assert_eq!(tracker.observe(0), Sequence::InOrder);
        assert_eq!(tracker.observe(1), Sequence::InOrder);
        assert_eq!(tracker.observe(4), Sequence::Gap(2));
        assert_eq!(tracker.observe(3), Sequence::Backwards);
        assert_eq!(tracker.observe(0), Sequence::Restart);
        assert_eq!(tracker.expected(), 1);
    }

    #[test]
    fn huge_sequence_gaps_saturate_the_lost_count() {
        let mut tracker = SequenceTracker::new();
        let mut stats = Stats::default();
        // Two gaps of 2^64 - 2 each (0 -> u64::MAX, restart at 0, again): together they
        // exceed u64::MAX.
        for _ in 0..2 {
            assert_eq!(tracker.observe(0), Sequence::InOrder);
            match tracker.observe(u64::MAX) {
                Sequence::Gap(missing) => {
                    assert_eq!(missing, u64::MAX - 1);
                    stats.add_lost(missing);
                }
                other => panic!("expected a gap, got {other:?}"),
            }
            // After u64::MAX the tracker expects 0 (wrapped), not a panic.
            assert_eq!(tracker.expected(), 0);
        }
        assert_eq!(stats.lost, u64::MAX);
    }
}
