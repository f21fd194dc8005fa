//! One ring's producer and consumer: reserve/commit/publish and read/release/publish.
//!
//! Shared state of a ring is two `u32` words: the producer index `P` (bytes ever published)
//! and the consumer index `C` (bytes ever released), both free-running and multiples of 8.
//! `P - C` (wrapping) is the number of used bytes: `0` empty, `size` full. Everything else —
//! the producer's unpublished head, the consumer's unreleased tail, the cached copy of the
//! other side's index — is local to one side.

use crate::error::{Error, RecvError, SendError};
use crate::layout::{self, KIND_MESSAGE, KIND_PADDING, RECORD_HEADER_BYTES};
use crate::memory::{Fence, SharedMemory};
use crate::region::{Direction, RingGeometry};

/// The validated, local description of one ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingLayout {
    direction: Direction,
    /// Region offset of the data area.
    data_offset: usize,
    /// Data area size, a power of two `<= 2^31`.
    size: u32,
    /// `size - 1`.
    mask: u32,
    /// Largest payload: `size / 2 - 8`.
    max_message: u32,
    producer_index: usize,
    consumer_index: usize,
}

impl RingLayout {
    /// The layout of `direction`'s ring; `ring` comes from a validated [`crate::Geometry`].
    pub(crate) fn new(direction: Direction, ring: &RingGeometry) -> Self {
        let size = ring.data_bytes as u32;
        RingLayout {
            direction,
            data_offset: ring.data_offset,
            size,
            mask: size - 1,
            max_message: layout::max_message_len(ring.data_bytes) as u32,
            producer_index: layout::producer_index_offset(direction.index()),
            consumer_index: layout::consumer_index_offset(direction.index()),
        }
    }

    /// Region offset of the shared producer index.
    pub(crate) fn producer_index(&self) -> usize {
        self.producer_index
    }

    /// Region offset of the shared consumer index.
    pub(crate) fn consumer_index(&self) -> usize {
        self.consumer_index
    }

    fn bad_index(&self, which: &'static str, value: u32, previous: u32) -> Error {
        Error::BadIndex {
            ring: self.direction,
            which,
            value,
            previous,
        }
    }
}

/// Which end of a ring is starting: the other end's index is the one blamed when the two
/// are more than `size` apart (our own index is whatever we, or our predecessor, published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Producer,
    Consumer,
}

/// Checks the indices an endpoint starts from: aligned, and at most `size` bytes in use.
/// A misaligned index is blamed on itself; a distance over `size` on the other end's index.
fn check_start(ring: &RingLayout, starting: End, producer: u32, consumer: u32) -> Option<Error> {
    if producer % 8 != 0 {
        Some(ring.bad_index("producer", producer, consumer))
    } else if consumer % 8 != 0 {
        Some(ring.bad_index("consumer", consumer, producer))
    } else if producer.wrapping_sub(consumer) > ring.size {
        Some(match starting {
            End::Producer => ring.bad_index("consumer", consumer, producer),
            End::Consumer => ring.bad_index("producer", producer, consumer),
        })
    } else {
        None
    }
}

/// The producing end of one ring.
#[derive(Debug)]
pub struct Producer<M> {
    memory: M,
    ring: RingLayout,
    /// Local write position: bytes committed (published or not). `head - cached_consumer` is
    /// in `0..=size`.
    head: u32,
    /// The value last stored to the shared producer index.
    published: u32,
    /// Last consumer index read (and validated): between the previous one and `published`.
    cached_consumer: u32,
    /// The first protocol error; once set, every operation returns it.
    fault: Option<Error>,
}

impl<M: SharedMemory> Producer<M> {
    /// A producer that starts at `producer` (its head, already published) and takes the
    /// consumer to be at `consumer`, without loading either index: the caller loaded them (or,
    /// at a session start, took them from the handshake, `docs/ABI.md` §5.7) and ordered those
    /// loads before our first store with an acquire barrier.
    pub(crate) fn starting_at(memory: M, ring: RingLayout, producer: u32, consumer: u32) -> Self {
        let fault = check_start(&ring, End::Producer, producer, consumer);
        Producer {
            memory,
            ring,
            head: producer,
            published: producer,
            cached_consumer: consumer,
            fault,
        }
    }

    /// Largest payload [`Producer::send`]/[`Producer::reserve`] accept: `data_bytes / 2 - 8`.
    pub fn max_message_len(&self) -> usize {
        self.ring.max_message as usize
    }

    /// Copies `msg` into the ring as one record and publishes it.
    #[inline(always)]
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut slot = self.reserve(msg.len())?;
        let written = slot.write(msg);
        debug_assert_eq!(written, msg.len());
        slot.commit();
        self.publish();
        Ok(())
    }

    /// Reserves room for a message of up to `len` payload bytes, without publishing.
    ///
    /// Fill the slot with [`WriteSlot::write`] and [`WriteSlot::commit`] it; commits become
    /// visible to the consumer at the next [`Producer::publish`]. A slot dropped without
    /// commit leaves no message (only, possibly, a padding record, which is harmless).
    #[inline(always)]
    pub fn reserve(&mut self, len: usize) -> Result<WriteSlot<'_, M>, SendError> {
        if let Some(error) = self.fault {
            return Err(SendError::Protocol(error));
        }
        if len > self.max_message_len() {
            return Err(SendError::TooLarge {
                len,
                max: self.max_message_len(),
            });
        }
        // <= size / 2, so the u32 arithmetic below cannot overflow.
        let record = layout::record_bytes(len) as u32;
        let mut offset = self.head & self.ring.mask;
        let contiguous = self.ring.size - offset;
        let needed = if record <= contiguous {
            record
        } else {
            contiguous + record
        };
        if self.free() < needed {
            self.refresh_consumer()?;
            if self.free() < needed {
                return Err(SendError::Full);
            }
        }
        if record > contiguous {
            // The record would cross the end: pad to the end, start at offset 0.
            let padding = u64::from(contiguous - RECORD_HEADER_BYTES as u32)
                | (u64::from(KIND_PADDING) << 32);
            self.memory
                .store_u64(self.ring.data_offset + offset as usize, padding);
            self.head = self.head.wrapping_add(contiguous);
            offset = 0;
        }
        debug_assert!(offset + record <= self.ring.size);
        Ok(WriteSlot {
            record: self.ring.data_offset + offset as usize,
            capacity: len,
            written: 0,
            partial: 0,
            producer: self,
        })
    }

    /// Makes every committed record visible to the consumer: one barrier and one store of the
    /// producer index, and nothing at all when nothing was committed since the last publish.
    #[inline(always)]
    pub fn publish(&mut self) {
        if self.fault.is_some() || self.head == self.published {
            return;
        }
        // Barrier: the payload and record-header stores before the producer-index store that
        // hands them over; the consumer pairs it with an acquire barrier after loading the
        // index. Store→store suffices (`dmb ishst`); ISH because the consumer is a PE in our
        // inner-shareable domain.
        self.memory.fence(Fence::StoreStore);
        self.memory.store_u32(self.ring.producer_index, self.head);
        self.published = self.head;
    }

    /// Bytes committed but not yet published.
    pub fn unpublished_bytes(&self) -> usize {
        self.head.wrapping_sub(self.published) as usize
    }

    /// Free bytes according to the cached consumer index.
    #[inline(always)]
    fn free(&self) -> u32 {
        let used = self.head.wrapping_sub(self.cached_consumer);
        debug_assert!(used <= self.ring.size);
        self.ring.size - used
    }

    /// Reads the shared consumer index (once), validates it, and caches it.
    fn refresh_consumer(&mut self) -> Result<(), Error> {
        let consumer = self.memory.load_u32(self.ring.consumer_index);
        if consumer == self.cached_consumer {
            // Nothing released since the last look: no new space, so no stores to order after
            // this load and no barrier (a full ring polled in a loop costs loads only).
            return Ok(());
        }
        // The consumer can only release what we published, and never goes back.
        let advance = consumer.wrapping_sub(self.cached_consumer);
        if consumer % 8 != 0 || advance > self.published.wrapping_sub(self.cached_consumer) {
            let error = self
                .ring
                .bad_index("consumer", consumer, self.cached_consumer);
            self.fault = Some(error);
            return Err(error);
        }
        // Barrier: the consumer-index load before our stores into the bytes it released (the
        // consumer's reads of them happened before its index store). `dmb ishld` orders a
        // load before later stores; ISH because the consumer is a PE in our domain.
        self.memory.fence(Fence::Acquire);
        self.cached_consumer = consumer;
        Ok(())
    }
}

/// Room for one message in the ring, filled front to back with aligned `u64` stores.
#[derive(Debug)]
pub struct WriteSlot<'a, M: SharedMemory> {
    producer: &'a mut Producer<M>,
    /// Region offset of the record header (8-aligned).
    record: usize,
    /// Reserved payload bytes.
    capacity: usize,
    /// Payload bytes written so far.
    written: usize,
    /// The bytes of the current, incomplete word (`written % 8` of them, little-endian).
    partial: u64,
}

impl<M: SharedMemory> WriteSlot<'_, M> {
    /// Payload bytes reserved.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Payload bytes written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Appends `bytes` to the payload; returns how many fit (all, unless the capacity ends).
    ///
    /// Bytes that complete a word begun by an earlier call go first, then every whole word in
    /// one [`SharedMemory::store_words`] (one range check, and a plain copy on Normal
    /// memory), then the last 0–7 bytes wait in a register for the next call or
    /// [`WriteSlot::commit`]. Each shared word is stored once.
    #[inline(always)]
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let count = bytes.len().min(self.capacity - self.written);
        let mut bytes = &bytes[..count];
        while self.written % 8 != 0 {
            let Some((byte, rest)) = bytes.split_first() else {
                return count;
            };
            self.push_byte(*byte);
            bytes = rest;
        }
        let (words, tail) = bytes.split_at(bytes.len() & !7);
        if !words.is_empty() {
            let at = self.record + RECORD_HEADER_BYTES + self.written;
            self.producer.memory.store_words(at, words);
            self.written += words.len();
        }
        for byte in tail {
            self.push_byte(*byte);
        }
        count
    }

    /// Appends the 8 bytes of `word` (little-endian); `false` (nothing written) when fewer
    /// than 8 bytes of capacity remain.
    pub fn write_u64(&mut self, word: u64) -> bool {
        if self.capacity - self.written < 8 {
            return false;
        }
        self.push_word(word);
        true
    }

    /// Appends one byte (capacity checked by the caller).
    #[inline(always)]
    fn push_byte(&mut self, byte: u8) {
        let filled = self.written % 8;
        self.partial |= u64::from(byte) << (8 * filled);
        self.written += 1;
        if filled == 7 {
            let at = self.record + RECORD_HEADER_BYTES + self.written - 8;
            self.memory().store_u64(at, self.partial);
            self.partial = 0;
        }
    }

    /// Appends 8 bytes (capacity checked by the caller): one shared store.
    #[inline(always)]
    fn push_word(&mut self, word: u64) {
        let filled = self.written % 8;
        let at = self.record + RECORD_HEADER_BYTES + self.written - filled;
        if filled == 0 {
            self.memory().store_u64(at, word);
        } else {
            let shift = 8 * filled as u32;
            self.memory().store_u64(at, self.partial | (word << shift));
            self.partial = word >> (64 - shift);
        }
        self.written += 8;
    }

    /// Finishes the record with the bytes written so far (its `len` is [`Self::written`]).
    /// Visible to the consumer after the next [`Producer::publish`].
    #[inline(always)]
    pub fn commit(self) {
        let payload = self.record + RECORD_HEADER_BYTES;
        if self.written % 8 != 0 {
            // The last, partial word, zero-padded.
            self.memory()
                .store_u64(payload + (self.written & !7), self.partial);
        }
        let header = self.written as u64 | (u64::from(KIND_MESSAGE) << 32);
        self.memory().store_u64(self.record, header);
        let record = layout::record_bytes(self.written) as u32;
        let producer = self.producer;
        producer.head = producer.head.wrapping_add(record);
        debug_assert!(producer.head.wrapping_sub(producer.cached_consumer) <= producer.ring.size);
    }

    fn memory(&self) -> &M {
        &self.producer.memory
    }
}

/// The consuming end of one ring.
#[derive(Debug)]
pub struct Consumer<M> {
    memory: M,
    ring: RingLayout,
    /// Local read position: bytes released (published or not). `cached_producer - tail` is in
    /// `0..=size`.
    tail: u32,
    /// The value last stored to the shared consumer index.
    released: u32,
    /// Last producer index read (and validated): `released <= tail <= cached_producer`.
    cached_producer: u32,
    /// The first protocol error; once set, every operation returns it.
    fault: Option<Error>,
}

impl<M: SharedMemory> Consumer<M> {
    /// A consumer that starts at `consumer` (its tail, already published) with the producer
    /// known to be at `producer`, without loading either index (see [`Producer::starting_at`]:
    /// the caller's acquire barrier orders its index loads before our record loads). With
    /// `producer == consumer` its first read loads and acquires the producer index itself.
    pub(crate) fn starting_at(memory: M, ring: RingLayout, producer: u32, consumer: u32) -> Self {
        let fault = check_start(&ring, End::Consumer, producer, consumer);
        Consumer {
            memory,
            ring,
            tail: consumer,
            released: consumer,
            cached_producer: if fault.is_some() { consumer } else { producer },
            fault,
        }
    }

    /// Largest payload the producer may send on this ring.
    pub fn max_message_len(&self) -> usize {
        self.ring.max_message as usize
    }

    /// Copies the next message into `buf`, releases it and publishes the consumer index.
    /// `Ok(None)`: nothing published. A message longer than `buf` stays in the ring.
    #[inline(always)]
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RecvError> {
        let result = match self.read()? {
            None => Ok(None),
            Some(slot) if slot.len() > buf.len() => {
                Err(RecvError::BufferTooSmall { needed: slot.len() })
            }
            Some(slot) => {
                let count = slot.read(0, buf);
                slot.release();
                Ok(Some(count))
            }
        };
        self.publish();
        result
    }

    /// The next message, in place, or `None` when nothing is published.
    ///
    /// The slot's bytes stay valid (the producer cannot reuse them) until
    /// [`ReadSlot::release`] and the next [`Consumer::publish`]. Dropping the slot without
    /// release leaves the message to be read again.
    #[inline(always)]
    pub fn read(&mut self) -> Result<Option<ReadSlot<'_, M>>, Error> {
        if let Some(error) = self.fault {
            return Err(error);
        }
        // Two passes at most: a padding record is never at offset 0, so after skipping one the
        // next record (at offset 0) is a message or an error.
        loop {
            if self.tail == self.cached_producer && !self.refresh_producer()? {
                return Ok(None);
            }
            let offset = self.tail & self.ring.mask;
            let contiguous = self.ring.size - offset;
            let available = self.cached_producer.wrapping_sub(self.tail);
            debug_assert!(available >= 8 && available <= self.ring.size);
            let header = self
                .memory
                .load_u64(self.ring.data_offset + offset as usize);
            let (len, kind) = (header as u32, (header >> 32) as u32);
            let reason = match kind {
                KIND_MESSAGE if len > self.ring.max_message => "longer than the maximum message",
                KIND_MESSAGE => {
                    let record = layout::record_bytes(len as usize) as u32;
                    if record > available {
                        "extends past the producer index"
                    } else if record > contiguous {
                        "crosses the end of the data area"
                    } else {
                        return Ok(Some(ReadSlot {
                            payload: self.ring.data_offset + offset as usize + RECORD_HEADER_BYTES,
                            len: len as usize,
                            record,
                            consumer: self,
                        }));
                    }
                }
                KIND_PADDING if offset == 0 => "padding at the start of the data area",
                KIND_PADDING if len != contiguous - RECORD_HEADER_BYTES as u32 => {
                    "padding does not end at the end of the data area"
                }
                KIND_PADDING if contiguous > available => "extends past the producer index",
                KIND_PADDING => {
                    self.tail = self.tail.wrapping_add(contiguous);
                    continue;
                }
                _ => "unknown record kind",
            };
            let error = Error::BadRecord {
                ring: self.ring.direction,
                offset,
                len,
                kind,
                reason,
            };
            self.fault = Some(error);
            return Err(error);
        }
    }

    /// Hands every released byte back to the producer: one barrier and one store of the
    /// consumer index, nothing when nothing was released since the last publish.
    #[inline(always)]
    pub fn publish(&mut self) {
        if self.fault.is_some() || self.tail == self.released {
            return;
        }
        // Barrier: our loads of the released records before the consumer-index store that lets
        // the producer overwrite them. Load→store ordering: `dmb ishld`; ISH because the
        // producer is a PE in our inner-shareable domain.
        self.memory.fence(Fence::LoadStore);
        self.memory.store_u32(self.ring.consumer_index, self.tail);
        self.released = self.tail;
    }

    /// Reads the shared producer index (once), validates it, caches it; `true` if there is
    /// something to read.
    fn refresh_producer(&mut self) -> Result<bool, Error> {
        let producer = self.memory.load_u32(self.ring.producer_index);
        if producer == self.cached_producer {
            // Nothing published since the last look (the caller found `tail == cached_producer`):
            // empty, no record loads to order after this load, so no barrier. An empty poll
            // costs one load.
            return Ok(false);
        }
        // Bytes the producer claims are in use, counted from what we published: at most the
        // ring size, and never fewer than it already claimed (indices only move forward).
        let in_use = producer.wrapping_sub(self.released);
        let known = self.cached_producer.wrapping_sub(self.released);
        if producer % 8 != 0 || in_use > self.ring.size || in_use < known {
            let error = self
                .ring
                .bad_index("producer", producer, self.cached_producer);
            self.fault = Some(error);
            return Err(error);
        }
        // Barrier: the producer-index load before our loads of the records it publishes
        // (pairs with the producer's store barrier before its index store). `dmb ishld`;
        // ISH because the producer is a PE in our inner-shareable domain.
        self.memory.fence(Fence::Acquire);
        self.cached_producer = producer;
        Ok(producer != self.tail)
    }
}

/// One received message, in place in the ring; read with aligned `u64` loads.
#[derive(Debug)]
pub struct ReadSlot<'a, M: SharedMemory> {
    consumer: &'a mut Consumer<M>,
    /// Region offset of the payload (8-aligned).
    payload: usize,
    /// Payload length (validated: the record lies inside the published bytes).
    len: usize,
    /// Record size (header + padded payload).
    record: u32,
}

impl<M: SharedMemory> ReadSlot<'_, M> {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies payload bytes starting at `offset` into `buf`; returns how many (fewer than
    /// `buf.len()` when the payload ends first, 0 when `offset >= len`).
    #[inline(always)]
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let count = buf.len().min(self.len - offset);
        copy_out(
            &self.consumer.memory,
            self.payload,
            offset,
            &mut buf[..count],
        );
        count
    }

    /// Reads the little-endian `u64` at payload `offset` (a multiple of 8, `offset + 8 <=
    /// len`), or `None` when it is not such an offset.
    pub fn read_u64(&self, offset: usize) -> Option<u64> {
        if offset % 8 != 0 || offset.checked_add(8).is_none_or(|end| end > self.len) {
            return None;
        }
        Some(self.consumer.memory.load_u64(self.payload + offset))
    }

    /// Consumes the message; its bytes go back to the producer at the next
    /// [`Consumer::publish`].
    #[inline(always)]
    pub fn release(self) {
        let consumer = self.consumer;
        consumer.tail = consumer.tail.wrapping_add(self.record);
        debug_assert!(consumer.cached_producer.wrapping_sub(consumer.tail) <= consumer.ring.size);
    }
}

/// Copies `buf.len()` bytes from payload byte `start` on (payload at region offset `payload`,
/// 8-aligned), each shared word loaded once: the bytes before the first word boundary from one
/// `load_u64`, the whole words in one [`SharedMemory::load_words`], the last 0–7 bytes from one
/// `load_u64` (that word may extend into the record's padding, never past the record).
#[inline(always)]
fn copy_out<M: SharedMemory>(memory: &M, payload: usize, start: usize, buf: &mut [u8]) {
    let mut position = start;
    let mut buf = buf;
    let within = position % 8;
    if within != 0 && !buf.is_empty() {
        let word = memory.load_u64(payload + position - within);
        let count = (8 - within).min(buf.len());
        let (head, rest) = buf.split_at_mut(count);
        for (index, byte) in head.iter_mut().enumerate() {
            *byte = (word >> (8 * (within + index))) as u8;
        }
        position += count;
        buf = rest;
    }
    let whole = buf.len() & !7;
    let (words, tail) = buf.split_at_mut(whole);
    if !words.is_empty() {
        memory.load_words(payload + position, words);
        position += whole;
    }
    if !tail.is_empty() {
        let word = memory.load_u64(payload + position);
        for (index, byte) in tail.iter_mut().enumerate() {
            *byte = (word >> (8 * index)) as u8;
        }
    }
}
