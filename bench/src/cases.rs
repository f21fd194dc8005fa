//! The measured cases: the two-flag floor, rtrb, crossbeam-queue and the sramlink ring, each
//! run by two pinned threads that check every message they receive.

use std::array;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use sramlink_ring::{
    Consumer, Geometry, MemoryType, Producer, Region, Role, SendError, VolatileMemory,
};

/// Bytes of queue per direction, the same for every contender (the 32 KiB).
pub const QUEUE_BYTES: usize = 32 * 1024;
/// Messages per batch (publish / chunk) in the batched cases.
pub const BATCH: usize = 64;

/// What a case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// One message there and back, `count` times: nanoseconds per round trip.
    RoundTrip,
    /// `count` 8-byte messages one way: nanoseconds per message.
    Stream8,
    /// `count` 64-byte messages one way: nanoseconds per message.
    Stream64,
}

impl Group {
    /// Name used in the table, the JSON and the figure.
    pub fn name(self) -> &'static str {
        match self {
            Group::RoundTrip => "round trip, 8-byte messages",
            Group::Stream8 => "streaming, 8-byte messages",
            Group::Stream64 => "streaming, 64-byte messages",
        }
    }

    /// Short key for the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Group::RoundTrip => "round_trip",
            Group::Stream8 => "stream_8",
            Group::Stream64 => "stream_64",
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Stable identifier (`ring-normal-batch64-8B`, …).
    pub id: &'static str,
    /// What it measures.
    pub group: Group,
    /// Human description.
    pub label: &'static str,
    run: fn(u64, &Cores) -> Result<Duration, String>,
}

impl Case {
    /// Runs the case for `count` operations and returns the elapsed time.
    pub fn run(&self, count: u64, cores: &Cores) -> Result<Duration, String> {
        (self.run)(count, cores)
    }
}

/// Every case, in display order. The first of each group is the reference its ratios use.
pub fn all() -> Vec<Case> {
    use Group::*;
    let case = |id, group, label, run| Case {
        id,
        group,
        label,
        run,
    };
    vec![
        case(
            "floor",
            RoundTrip,
            "two padded flags (floor)",
            floor_round_trip,
        ),
        case("rtrb", RoundTrip, "rtrb u64", rtrb_round_trip),
        case(
            "crossbeam",
            RoundTrip,
            "crossbeam ArrayQueue u64",
            crossbeam_round_trip,
        ),
        case(
            "ring-device",
            RoundTrip,
            "sramlink send/recv, Device",
            |n, c| ring_round_trip(n, c, MemoryType::Device),
        ),
        case(
            "ring-normal",
            RoundTrip,
            "sramlink send/recv, Normal",
            |n, c| ring_round_trip(n, c, MemoryType::Normal),
        ),
        case("rtrb", Stream8, "rtrb u64 push/pop", |n, c| {
            rtrb_stream::<1>(n, c)
        }),
        case("rtrb-chunk64", Stream8, "rtrb u64 chunks of 64", |n, c| {
            rtrb_chunk_stream::<1>(n, c)
        }),
        case("crossbeam", Stream8, "crossbeam u64 push/pop", |n, c| {
            crossbeam_stream::<1>(n, c)
        }),
        case(
            "crossbeam-batch64",
            Stream8,
            "crossbeam [u64; 64] elements",
            crossbeam_batch_stream::<1>,
        ),
        case(
            "ring-device",
            Stream8,
            "sramlink send/recv, Device",
            |n, c| ring_stream::<1>(n, c, MemoryType::Device, 1),
        ),
        case(
            "ring-normal",
            Stream8,
            "sramlink send/recv, Normal",
            |n, c| ring_stream::<1>(n, c, MemoryType::Normal, 1),
        ),
        case(
            "ring-device-batch64",
            Stream8,
            "sramlink publish /64, Device",
            |n, c| ring_stream::<1>(n, c, MemoryType::Device, BATCH),
        ),
        case(
            "ring-normal-batch64",
            Stream8,
            "sramlink publish /64, Normal",
            |n, c| ring_stream::<1>(n, c, MemoryType::Normal, BATCH),
        ),
        case("rtrb", Stream64, "rtrb [u64; 8] push/pop", |n, c| {
            rtrb_stream::<8>(n, c)
        }),
        case(
            "rtrb-chunk64",
            Stream64,
            "rtrb [u64; 8] chunks of 64",
            rtrb_chunk_stream::<8>,
        ),
        case(
            "crossbeam",
            Stream64,
            "crossbeam [u64; 8] push/pop",
            crossbeam_stream::<8>,
        ),
        case(
            "crossbeam-batch64",
            Stream64,
            "crossbeam [[u64; 8]; 64] elements",
            crossbeam_batch_stream::<8>,
        ),
        case(
            "ring-device",
            Stream64,
            "sramlink send/recv, Device",
            |n, c| ring_stream::<8>(n, c, MemoryType::Device, 1),
        ),
        case(
            "ring-normal",
            Stream64,
            "sramlink send/recv, Normal",
            |n, c| ring_stream::<8>(n, c, MemoryType::Normal, 1),
        ),
        case(
            "ring-device-batch64",
            Stream64,
            "sramlink publish /64, Device",
            |n, c| ring_stream::<8>(n, c, MemoryType::Device, BATCH),
        ),
        case(
            "ring-normal-batch64",
            Stream64,
            "sramlink publish /64, Normal",
            |n, c| ring_stream::<8>(n, c, MemoryType::Normal, BATCH),
        ),
    ]
}

/// The two cores the threads are pinned to (`None`: fewer than two cores visible, unpinned).
#[derive(Debug, Clone)]
pub struct Cores(pub Option<[core_affinity::CoreId; 2]>);

impl Cores {
    /// The first two cores this process may run on.
    pub fn detect() -> Self {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        Cores(match ids.as_slice() {
            [first, second, ..] => Some([*first, *second]),
            _ => None,
        })
    }

    fn pin(&self, which: usize) {
        if let Some(ids) = &self.0 {
            core_affinity::set_for_current(ids[which]);
        }
    }
}

/// Runs `first` on core 0 (the calling thread) and `second` on core 1; both start together
/// and return the instant they finished. Elapsed: from the start to the later finish.
fn two_threads<A, B>(cores: &Cores, first: A, second: B) -> Result<Duration, String>
where
    A: FnOnce() -> Result<Instant, String>,
    B: FnOnce() -> Result<Instant, String> + Send,
{
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            cores.pin(1);
            start.wait();
            second()
        });
        cores.pin(0);
        start.wait();
        let started = Instant::now();
        let first_done = first();
        let second_done = other
            .join()
            .map_err(|_| "the second thread panicked".to_string())?;
        let finished = first_done?.max(second_done?);
        Ok(finished - started)
    })
}

/// The 8 words of 64-bit message `seq` (word 0 is `seq`): what the receiver expects.
#[inline(always)]
fn words<const W: usize>(seq: u64) -> [u64; W] {
    array::from_fn(|index| seq ^ ((index as u64) << 56))
}

fn mismatch<const W: usize>(what: &str, seq: u64, got: &[u64]) -> String {
    format!(
        "{what}: message {seq} arrived as {got:x?}, expected {:x?}",
        words::<W>(seq)
    )
}

/// A value alone on its (128-byte, two adjacent-line prefetch) cache line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// The floor: thread 0 stores `i` to one flag and waits for `i` in the other, which thread 1
/// stores after seeing `i` in the first. One line each way per round trip and nothing else.
fn floor_round_trip(count: u64, cores: &Cores) -> Result<Duration, String> {
    let (ping, pong) = (Padded::default(), Padded::default());
    two_threads(
        cores,
        || {
            for seq in 1..=count {
                ping.0.store(seq, Ordering::Release);
                while pong.0.load(Ordering::Acquire) != seq {
                    std::hint::spin_loop();
                }
            }
            Ok(Instant::now())
        },
        || {
            for seq in 1..=count {
                loop {
                    match ping.0.load(Ordering::Acquire) {
                        value if value == seq => break,
                        value if value == seq - 1 => std::hint::spin_loop(),
                        value => return Err(format!("floor: flag {value}, expected {seq}")),
                    }
                }
                pong.0.store(seq, Ordering::Release);
            }
            Ok(Instant::now())
        },
    )
}

fn rtrb_round_trip(count: u64, cores: &Cores) -> Result<Duration, String> {
    let capacity = QUEUE_BYTES / 8;
    let (mut to_echo, mut echo_in) = rtrb::RingBuffer::<u64>::new(capacity);
    let (mut echo_out, mut back) = rtrb::RingBuffer::<u64>::new(capacity);
    two_threads(
        cores,
        move || {
            for seq in 0..count {
                while to_echo.push(seq).is_err() {
                    std::hint::spin_loop();
                }
                let value = loop {
                    match back.pop() {
                        Ok(value) => break value,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                if value != seq {
                    return Err(mismatch::<1>("rtrb reply", seq, &[value]));
                }
            }
            Ok(Instant::now())
        },
        move || {
            for seq in 0..count {
                let value = loop {
                    match echo_in.pop() {
                        Ok(value) => break value,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                if value != seq {
                    return Err(mismatch::<1>("rtrb request", seq, &[value]));
                }
                while echo_out.push(value).is_err() {
                    std::hint::spin_loop();
                }
            }
            Ok(Instant::now())
        },
    )
}

fn crossbeam_round_trip(count: u64, cores: &Cores) -> Result<Duration, String> {
    let capacity = QUEUE_BYTES / 8;
    let there = Arc::new(ArrayQueue::<u64>::new(capacity));
    let back = Arc::new(ArrayQueue::<u64>::new(capacity));
    two_threads(
        cores,
        || {
            for seq in 0..count {
                while there.push(seq).is_err() {
                    std::hint::spin_loop();
                }
                let value = loop {
                    match back.pop() {
                        Some(value) => break value,
                        None => std::hint::spin_loop(),
                    }
                };
                if value != seq {
                    return Err(mismatch::<1>("crossbeam reply", seq, &[value]));
                }
            }
            Ok(Instant::now())
        },
        || {
            for seq in 0..count {
                let value = loop {
                    match there.pop() {
                        Some(value) => break value,
                        None => std::hint::spin_loop(),
                    }
                };
                if value != seq {
                    return Err(mismatch::<1>("crossbeam request", seq, &[value]));
                }
                while back.push(value).is_err() {
                    std::hint::spin_loop();
                }
            }
            Ok(Instant::now())
        },
    )
}

/// Per-element rtrb streaming of `[u64; W]` messages.
fn rtrb_stream<const W: usize>(count: u64, cores: &Cores) -> Result<Duration, String> {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; W]>::new(QUEUE_BYTES / (8 * W));
    two_threads(
        cores,
        move || {
            for seq in 0..count {
                while producer.push(words::<W>(seq)).is_err() {
                    std::hint::spin_loop();
                }
            }
            Ok(Instant::now())
        },
        move || {
            for seq in 0..count {
                let message = loop {
                    match consumer.pop() {
                        Ok(message) => break message,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                if message != words::<W>(seq) {
                    return Err(mismatch::<W>("rtrb", seq, &message));
                }
            }
            Ok(Instant::now())
        },
    )
}

/// rtrb's chunk API: up to [`BATCH`] messages per write chunk and per read chunk.
fn rtrb_chunk_stream<const W: usize>(count: u64, cores: &Cores) -> Result<Duration, String> {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; W]>::new(QUEUE_BYTES / (8 * W));
    two_threads(
        cores,
        move || {
            let mut seq = 0;
            while seq < count {
                let wanted = (producer.slots() as u64).min(BATCH as u64).min(count - seq);
                if wanted == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let chunk = producer
                    .write_chunk_uninit(wanted as usize)
                    .map_err(|error| format!("rtrb write chunk: {error}"))?;
                chunk.fill_from_iter((seq..seq + wanted).map(words::<W>));
                seq += wanted;
            }
            Ok(Instant::now())
        },
        move || {
            let mut seq = 0;
            while seq < count {
                let ready = consumer.slots().min(BATCH);
                if ready == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let chunk = consumer
                    .read_chunk(ready)
                    .map_err(|error| format!("rtrb read chunk: {error}"))?;
                let (first, second) = chunk.as_slices();
                for message in first.iter().chain(second) {
                    if *message != words::<W>(seq) {
                        return Err(mismatch::<W>("rtrb chunk", seq, message));
                    }
                    seq += 1;
                }
                chunk.commit_all();
            }
            Ok(Instant::now())
        },
    )
}

fn crossbeam_stream<const W: usize>(count: u64, cores: &Cores) -> Result<Duration, String> {
    let queue = ArrayQueue::<[u64; W]>::new(QUEUE_BYTES / (8 * W));
    two_threads(
        cores,
        || {
            for seq in 0..count {
                while queue.push(words::<W>(seq)).is_err() {
                    std::hint::spin_loop();
                }
            }
            Ok(Instant::now())
        },
        || {
            for seq in 0..count {
                let message = loop {
                    match queue.pop() {
                        Some(message) => break message,
                        None => std::hint::spin_loop(),
                    }
                };
                if message != words::<W>(seq) {
                    return Err(mismatch::<W>("crossbeam", seq, &message));
                }
            }
            Ok(Instant::now())
        },
    )
}

/// crossbeam has no batch API: batching is an element of [`BATCH`] messages.
fn crossbeam_batch_stream<const W: usize>(count: u64, cores: &Cores) -> Result<Duration, String> {
    let queue = ArrayQueue::<[[u64; W]; BATCH]>::new((QUEUE_BYTES / (8 * W * BATCH)).max(2));
    let batches = count.div_ceil(BATCH as u64);
    two_threads(
        cores,
        || {
            for batch in 0..batches {
                let first = batch * BATCH as u64;
                let mut element: [[u64; W]; BATCH] =
                    array::from_fn(|index| words::<W>(first + index as u64));
                loop {
                    match queue.push(element) {
                        Ok(()) => break,
                        Err(back) => {
                            element = back;
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            Ok(Instant::now())
        },
        || {
            for batch in 0..batches {
                let element = loop {
                    match queue.pop() {
                        Some(element) => break element,
                        None => std::hint::spin_loop(),
                    }
                };
                let first = batch * BATCH as u64;
                for (index, message) in element.iter().enumerate() {
                    let seq = first + index as u64;
                    if *message != words::<W>(seq) {
                        return Err(mismatch::<W>("crossbeam batch", seq, message));
                    }
                }
            }
            Ok(Instant::now())
        },
    )
}

/// A region with two [`QUEUE_BYTES`] rings over `backing`, as `memory_type`.
fn ring_region(backing: &mut [u64], memory_type: MemoryType) -> Region<VolatileMemory> {
    let geometry =
        Geometry::with_ring_bytes(region_bytes(), [QUEUE_BYTES, QUEUE_BYTES]).expect("geometry");
    assert!(backing.len() * 8 >= geometry.region_bytes);
    // SAFETY: `backing` is a heap buffer (Normal memory, so either memory type is right for
    // it) that the caller keeps alive, untouched, until both threads using the region end.
    let memory = unsafe {
        VolatileMemory::with_type(
            backing.as_mut_ptr().cast(),
            geometry.region_bytes,
            memory_type,
        )
    }
    .expect("aligned heap buffer");
    Region::create(memory, geometry).expect("region")
}

/// Header page plus two rings.
fn region_bytes() -> usize {
    0x1000 + 2 * QUEUE_BYTES
}

/// Writes `message` into the first `8 * W` bytes of `bytes` (little-endian words).
#[inline(always)]
fn to_bytes<const W: usize>(message: &[u64; W], bytes: &mut [u8; 64]) {
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(message) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
}

fn from_bytes<const W: usize>(bytes: &[u8]) -> [u64; W] {
    array::from_fn(|index| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[8 * index..8 * index + 8]);
        u64::from_le_bytes(word)
    })
}

fn send_spinning(producer: &mut Producer<VolatileMemory>, bytes: &[u8]) -> Result<(), String> {
    loop {
        match producer.send(bytes) {
            Ok(()) => return Ok(()),
            Err(SendError::Full) => std::hint::spin_loop(),
            Err(error) => return Err(format!("ring send: {error}")),
        }
    }
}

fn recv_spinning(consumer: &mut Consumer<VolatileMemory>, buf: &mut [u8]) -> Result<usize, String> {
    loop {
        match consumer.recv(buf) {
            Ok(Some(len)) => return Ok(len),
            Ok(None) => std::hint::spin_loop(),
            Err(error) => return Err(format!("ring recv: {error}")),
        }
    }
}

/// Guest sends 8 bytes on ring 0, the peer echoes them on ring 1, `count` times.
fn ring_round_trip(count: u64, cores: &Cores, memory_type: MemoryType) -> Result<Duration, String> {
    let mut backing = vec![0u64; region_bytes() / 8];
    let guest = ring_region(&mut backing, memory_type);
    let peer = Region::attach(guest.memory().clone()).map_err(|error| error.to_string())?;
    let (mut guest_tx, mut guest_rx) = guest.endpoints(Role::Guest);
    let (mut peer_tx, mut peer_rx) = peer.endpoints(Role::Peer);
    two_threads(
        cores,
        move || {
            let mut buf = [0u8; 8];
            for seq in 0..count {
                send_spinning(&mut guest_tx, &seq.to_le_bytes())?;
                let len = recv_spinning(&mut guest_rx, &mut buf)?;
                if len != 8 || u64::from_le_bytes(buf) != seq {
                    return Err(mismatch::<1>("ring reply", seq, &[u64::from_le_bytes(buf)]));
                }
            }
            Ok(Instant::now())
        },
        move || {
            let mut buf = [0u8; 8];
            for seq in 0..count {
                let len = recv_spinning(&mut peer_rx, &mut buf)?;
                if len != 8 || u64::from_le_bytes(buf) != seq {
                    return Err(mismatch::<1>(
                        "ring request",
                        seq,
                        &[u64::from_le_bytes(buf)],
                    ));
                }
                send_spinning(&mut peer_tx, &buf)?;
            }
            Ok(Instant::now())
        },
    )
}

/// `count` messages of `8 * W` bytes from the guest to the peer: `batch == 1` is send/recv
/// (one publish per message on both sides); otherwise reserve/write/commit up to `batch`
/// records per publish and read/release up to `batch` per consumer publish.
fn ring_stream<const W: usize>(
    count: u64,
    cores: &Cores,
    memory_type: MemoryType,
    batch: usize,
) -> Result<Duration, String> {
    let len = 8 * W;
    let mut backing = vec![0u64; region_bytes() / 8];
    let guest = ring_region(&mut backing, memory_type);
    let peer = Region::attach(guest.memory().clone()).map_err(|error| error.to_string())?;
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    two_threads(
        cores,
        move || {
            let mut bytes = [0u8; 64];
            let mut seq = 0;
            while seq < count {
                if batch == 1 {
                    to_bytes(&words::<W>(seq), &mut bytes);
                    send_spinning(&mut producer, &bytes[..len])?;
                    seq += 1;
                    continue;
                }
                let mut committed = 0;
                while committed < batch && seq < count {
                    match producer.reserve(len) {
                        Ok(mut slot) => {
                            to_bytes(&words::<W>(seq), &mut bytes);
                            slot.write(&bytes[..len]);
                            slot.commit();
                            seq += 1;
                            committed += 1;
                        }
                        Err(SendError::Full) => break,
                        Err(error) => return Err(format!("ring reserve: {error}")),
                    }
                }
                if committed == 0 {
                    std::hint::spin_loop();
                }
                producer.publish();
            }
            Ok(Instant::now())
        },
        move || {
            let mut buf = [0u8; 64];
            let mut seq = 0;
            while seq < count {
                if batch == 1 {
                    let got = recv_spinning(&mut consumer, &mut buf[..len])?;
                    let message = from_bytes::<W>(&buf);
                    if got != len || message != words::<W>(seq) {
                        return Err(mismatch::<W>("ring", seq, &message));
                    }
                    seq += 1;
                    continue;
                }
                let mut released = 0;
                while released < batch {
                    let slot = match consumer.read() {
                        Ok(Some(slot)) => slot,
                        Ok(None) => break,
                        Err(error) => return Err(format!("ring read: {error}")),
                    };
                    let got = slot.read(0, &mut buf[..len]);
                    let message = from_bytes::<W>(&buf);
                    if got != len || slot.len() != len || message != words::<W>(seq) {
                        return Err(mismatch::<W>("ring batch", seq, &message));
                    }
                    slot.release();
                    seq += 1;
                    released += 1;
                }
                if released == 0 {
                    std::hint::spin_loop();
                }
                consumer.publish();
            }
            Ok(Instant::now())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case runs a few hundred operations and checks them (a wrong message fails it).
    #[test]
    fn every_case_runs_and_checks_its_messages() {
        let cores = Cores::detect();
        for case in all() {
            let elapsed = case.run(300, &cores);
            assert!(
                elapsed.is_ok(),
                "{} {}: {:?}",
                case.group.key(),
                case.id,
                elapsed
            );
        }
    }

    /// The byte form the ring carries decodes to the same words, and neighbours differ in
    /// every word (so a message delivered twice or out of order fails the check).
    #[test]
    fn messages_round_trip_and_differ() {
        let message = words::<8>(7);
        let mut bytes = [0u8; 64];
        to_bytes(&message, &mut bytes);
        assert_eq!(from_bytes::<8>(&bytes), message);
        let next = words::<8>(8);
        assert!(message.iter().zip(&next).all(|(a, b)| a != b));
    }
}
