//! The guest's serving loop: answers echoes, checks and produces data streams, stops on request.
//!
//! Host-testable: it only needs a [`SharedMemory`], so tests run it on a thread over a heap
//! buffer and play the peer.

use crate::error::{Error, SendError};
use crate::memory::SharedMemory;
use crate::proto::{
    self, FLOOR_GUEST_FLAG, FLOOR_PEER_FLAG, FLOOR_REQUEST_LEN, FloorRequest, HEADER_LEN, Header,
    Op, STREAM_REQUEST_LEN, Sequence, SequenceTracker, StreamRequest, Verdict,
};
use crate::region::{Region, Role, SideState};
use crate::ring::{Consumer, Producer, ReadSlot};
use crate::session::SessionStart;

pub use crate::proto::Stats;

/// A peer started a new session (ABI §5.7): what the guest reports about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEvent {
    /// Where the new session starts.
    pub start: SessionStart,
    /// The session it replaces (0: the 1.0-style service before any session).
    pub previous: u32,
    /// The counters of the replaced session alone (the boot's totals go on).
    pub previous_stats: Stats,
    /// Bytes the replaced session left unread in ring 1, skipped without being read.
    pub skipped_bytes: u32,
}

/// How the serving loop waits when a pass found nothing to do, and how it notifies the peer.
///
/// With notifications (ABI §4.6, the hold-off) the loop, when [`Idle::pause`] asks to sleep,
/// arms the guest's waiting word, makes one more full pass (the re-check: anything the peer
/// published before seeing the word armed is found there), and only if that pass finds nothing
/// either calls [`Idle::sleep`]; it disarms when it wakes or finds work. After every pass that
/// published something it calls [`Idle::notify`] if the peer's waiting word is armed.
pub trait Idle {
    /// A pass found nothing to do (`progressed`: a message was sent or handled since the
    /// previous call): pause briefly and return `false`, or return `true` to sleep until
    /// notified (only when the guest can be notified).
    fn pause(&mut self, progressed: bool) -> bool;
    /// Sleeps until a notification (or any other wake-up: spurious ones are harmless).
    /// Called armed, after a re-check pass found nothing.
    fn sleep(&mut self);
    /// The peer is armed and something was published: wake it.
    fn notify(&mut self);
}

/// An [`Idle`] that never sleeps or notifies: it calls its closure on every idle pass.
struct Polling<F>(F);

impl<F: FnMut(bool)> Idle for Polling<F> {
    fn pause(&mut self, progressed: bool) -> bool {
        (self.0)(progressed);
        false
    }

    fn sleep(&mut self) {}

    fn notify(&mut self) {}
}

/// Messages handled (received or sent) per step before publishing and switching direction.
const BATCH: usize = 64;

/// An outgoing [`Op::Data`] stream in progress.
#[derive(Debug, Clone, Copy)]
struct Stream {
    next_seq: u64,
    count: u64,
    size: usize,
}

/// What handling one incoming message led to.
enum Handled {
    /// Processed and released.
    Done,
    /// Must wait (no room for the answer, or a stream to finish first); left in the ring.
    Blocked,
    /// A Stop was processed: send Stats and return.
    Stop,
    /// A valid FloorRequest was processed: play it.
    Floor(FloorRequest),
}

/// Polls of the peer's floor flag between two looks at its state word and session request.
const FLOOR_CHECK_EVERY: u32 = 4096;

/// The guest's end of the demo protocol over a created region.
///
/// [`Service::run`] does not change the guest's state word to Ready (the guest does that
/// after printing its banner); it sets Stopped when it returns normally.
#[derive(Debug)]
pub struct Service<M> {
    region: Region<M>,
    producer: Producer<M>,
    consumer: Consumer<M>,
    stats: Stats,
    echo_requests: SequenceTracker,
    data: SequenceTracker,
    stream_requests: SequenceTracker,
    stops: SequenceTracker,
    floors: SequenceTracker,
    stream: Option<Stream>,
    /// The acknowledged session (0 until a 1.1 peer asks for one: served as in 1.0).
    session: u32,
    /// The counters since the current session started.
    session_stats: Stats,
    /// The last heartbeat stored.
    heartbeat: u32,
    /// The guest's waiting word is armed (ABI §4.6).
    armed: bool,
}

impl<M: SharedMemory + Clone> Service<M> {
    /// The service on `region`'s guest endpoints.
    pub fn new(region: Region<M>) -> Self {
        let (producer, consumer) = region.endpoints(Role::Guest);
        Service {
            region,
            producer,
            consumer,
            stats: Stats::default(),
            echo_requests: SequenceTracker::new(),
            data: SequenceTracker::new(),
            stream_requests: SequenceTracker::new(),
            stops: SequenceTracker::new(),
            floors: SequenceTracker::new(),
            stream: None,
            session: 0,
            session_stats: Stats::default(),
            heartbeat: 0,
            armed: false,
        }
    }

    /// The acknowledged session (0: none yet).
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Starts the session the peer asked for, if any: the old session's last work is
    /// published, what it left in ring 1 is skipped, its stream and sequence numbers are
    /// forgotten, and the acknowledgement names where the new one starts in ring 0.
    fn switch_session(&mut self) -> Result<Option<SessionEvent>, Error> {
        let Some(request) = self.region.pending_session(self.session) else {
            return Ok(None);
        };
        self.producer.publish();
        self.consumer.publish();
        let released = self
            .region
            .memory()
            .load_u32(crate::layout::consumer_index_offset(1));
        let (start, producer, consumer) = self.region.acknowledge_session(request)?;
        let event = SessionEvent {
            start,
            previous: self.session,
            previous_stats: self.session_stats,
            skipped_bytes: start.ring1_start.wrapping_sub(released),
        };
        self.producer = producer;
        self.consumer = consumer;
        self.session = start.session;
        self.session_stats = Stats::default();
        self.stream = None;
        self.echo_requests = SequenceTracker::new();
        self.data = SequenceTracker::new();
        self.stream_requests = SequenceTracker::new();
        self.stops = SequenceTracker::new();
        self.floors = SequenceTracker::new();
        Ok(Some(event))
    }

    /// Advances the heartbeat word (ABI §5.8): once per pass of the loop.
    fn beat(&mut self) {
        self.heartbeat = self.heartbeat.wrapping_add(1);
        self.region.beat(Role::Guest, self.heartbeat);
    }

    /// Adds what the last pass counted to the session's counters too.
    fn count_session(&mut self, before: Stats) {
        let after = self.stats;
        let add = |total: &mut u64, now: u64, then: u64| {
            *total = total.saturating_add(now.saturating_sub(then))
        };
        let session = &mut self.session_stats;
        add(&mut session.received, after.received, before.received);
        add(&mut session.sent, after.sent, before.sent);
        add(&mut session.corrupted, after.corrupted, before.corrupted);
        add(&mut session.lost, after.lost, before.lost);
        add(
            &mut session.protocol_errors,
            after.protocol_errors,
            before.protocol_errors,
        );
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Serves until the peer sends Stop (answered with Stats) or its state word says Stopped;
    /// then sets the guest's state to Stopped and returns the counters (the snapshot sent in
    /// the Stats reply, which does not count that reply).
    ///
    /// `idle` is called whenever a pass found nothing to do (e.g. a `wfe`-based backoff), told
    /// whether any message was sent or handled since its previous call (or since the start),
    /// so that a backoff can start its spin phase over.
    /// Invalid shared-memory values (indices, record headers, state words, session words) end
    /// it with `Err`, after publishing whatever ring is still healthy and storing Stopped
    /// (ABI §5.4), so the peer sees why instead of timing out.
    ///
    /// It never waits for the peer without watching the peer's state word: if the peer sets
    /// Stopped while the Stats reply waits for room in a full ring, the reply is dropped and
    /// `run` returns the counters as after a normal stop.
    pub fn run(&mut self, idle: impl FnMut(bool)) -> Result<Stats, Error> {
        self.run_with(idle, |_| {})
    }

    /// [`Service::run`], calling `on_session` whenever a peer starts a new session.
    pub fn run_with(
        &mut self,
        idle: impl FnMut(bool),
        on_session: impl FnMut(&SessionEvent),
    ) -> Result<Stats, Error> {
        self.run_notified(&mut Polling(idle), on_session)
    }

    /// [`Service::run_with`] with notifications: `idle` may sleep, armed, and is asked to
    /// notify the peer when the peer is armed (see [`Idle`]).
    pub fn run_notified(
        &mut self,
        idle: &mut impl Idle,
        mut on_session: impl FnMut(&SessionEvent),
    ) -> Result<Stats, Error> {
        let result = self.serve(idle, &mut on_session);
        if self.armed {
            self.region.disarm(Role::Guest);
            self.armed = false;
        }
        if result.is_err() {
            // A faulted endpoint's publish does nothing: only the healthy ring's index goes
            // out, then Stopped (set_state's FULL barrier orders the two).
            self.producer.publish();
            self.consumer.publish();
            self.region.set_state(Role::Guest, SideState::Stopped);
        }
        result
    }

    fn serve(
        &mut self,
        idle: &mut impl Idle,
        on_session: &mut impl FnMut(&SessionEvent),
    ) -> Result<Stats, Error> {
        let mut progressed = false;
        loop {
            self.beat();
            if let Some(event) = self.switch_session()? {
                on_session(&event);
                // The acknowledgement is a publication the peer may be asleep for.
                if self.region.notify_needed(Role::Peer) {
                    idle.notify();
                }
            }
            let before = self.stats;
            let sent = self.pump_stream()?;
            let (received, stop) = self.serve_incoming()?;
            self.producer.publish();
            self.consumer.publish();
            self.count_session(before);
            if sent || received || stop {
                if self.armed {
                    self.region.disarm(Role::Guest);
                    self.armed = false;
                }
                // `notify_needed` orders the publishing stores above before its load of the
                // peer's waiting word (FULL barrier, ABI §4.6).
                if self.region.notify_needed(Role::Peer) {
                    idle.notify();
                }
            }
            if stop {
                let stats = self.stats;
                // Not delivered only if the peer stopped meanwhile: it no longer reads, and
                // the counters are still returned to our caller.
                let _delivered = self.send_stats(stats, idle)?;
                self.region.set_state(Role::Guest, SideState::Stopped);
                if self.region.notify_needed(Role::Peer) {
                    idle.notify();
                }
                return Ok(stats);
            }
            if !sent && !received {
                if self.region.state(Role::Peer)? == SideState::Stopped {
                    self.region.set_state(Role::Guest, SideState::Stopped);
                    return Ok(self.stats);
                }
                if self.armed {
                    // Armed, and the re-check pass found nothing: any later publication by
                    // the peer sees the word armed and notifies.
                    idle.sleep();
                    self.region.disarm(Role::Guest);
                    self.armed = false;
                } else if idle.pause(core::mem::take(&mut progressed)) {
                    // The next pass is the re-check.
                    self.region.arm(Role::Guest);
                    self.armed = true;
                }
            } else {
                progressed = true;
            }
        }
    }

    /// Sends up to [`BATCH`] messages of the current stream; whether it sent any.
    fn pump_stream(&mut self) -> Result<bool, Error> {
        let Some(mut stream) = self.stream else {
            return Ok(false);
        };
        let mut sent = false;
        for _ in 0..BATCH {
            if stream.next_seq == stream.count {
                break;
            }
            let mut slot = match self.producer.reserve(HEADER_LEN + stream.size) {
                Ok(slot) => slot,
                Err(SendError::Full) => break,
                Err(SendError::Protocol(error)) => return Err(error),
                // Checked against max_message_len when the request was accepted.
                Err(SendError::TooLarge { .. }) => break,
            };
            proto::write_pattern_message(&mut slot, Op::Data, stream.next_seq, stream.size);
            slot.commit();
            stream.next_seq += 1;
            self.stats.sent += 1;
            sent = true;
        }
        self.stream = (stream.next_seq < stream.count).then_some(stream);
        Ok(sent)
    }

    /// Handles up to [`BATCH`] incoming messages; (whether any was handled, whether Stop came).
    fn serve_incoming(&mut self) -> Result<(bool, bool), Error> {
        let mut any = false;
        for _ in 0..BATCH {
            let Some(slot) = self.consumer.read()? else {
                break;
            };
            match handle(
                slot,
                &mut self.producer,
                &mut self.stats,
                &mut Trackers {
                    echo_requests: &mut self.echo_requests,
                    data: &mut self.data,
                    stream_requests: &mut self.stream_requests,
                    stops: &mut self.stops,
                    floors: &mut self.floors,
                },
                &mut self.stream,
            )? {
                Handled::Done => any = true,
                Handled::Blocked => break,
                Handled::Stop => return Ok((true, true)),
                Handled::Floor(request) => {
                    // The request is released: say so before the peer starts the rounds.
                    self.consumer.publish();
                    self.floor(request)?;
                    return Ok((true, false));
                }
            }
        }
        Ok((any, false))
    }

    /// Plays a bare-flag ping-pong (ABI §7.4): for each round, polls the peer's flag word until
    /// it holds the round's value, then stores that value into the guest's flag word.
    ///
    /// No barrier: the words carry no other data, and each is a naturally aligned 32-bit word
    /// with one writer, so single-copy atomicity and per-location coherence are all a round
    /// relies on; nothing before or after a round is ordered by it (the rings keep their own
    /// barriers). Busy-polls (it is the floor), but every [`FLOOR_CHECK_EVERY`] polls it
    /// advances the heartbeat and looks at the peer's state word and session request: a
    /// peer that stopped, or started a new session, ends the floor early and the guest serves
    /// again, as it does after the last round.
    fn floor(&mut self, request: FloorRequest) -> Result<(), Error> {
        for round in 1..=request.count {
            let value = request.value(round);
            let mut polls = 0u32;
            while self.region.memory().load_u32(FLOOR_PEER_FLAG) != value {
                polls = polls.wrapping_add(1);
                if polls % FLOOR_CHECK_EVERY == 0 {
                    self.beat();
                    // `state` issues the acquire barrier after its load (see Region::state).
                    if self.region.state(Role::Peer)? == SideState::Stopped
                        || self.region.pending_session(self.session).is_some()
                    {
                        return Ok(());
                    }
                }
                core::hint::spin_loop();
            }
            self.region.memory().store_u32(FLOOR_GUEST_FLAG, value);
        }
        Ok(())
    }

    /// Sends the Stats reply, waiting (with `idle`) for room; whether it was sent.
    ///
    /// While the ring is full it checks the peer's state word on every attempt: a peer that
    /// sent Stop and then stopped (or died after writing Stopped) will never drain the ring,
    /// so `Stopped` ends the wait with `Ok(false)` (a normal stop, the Stats not delivered)
    /// and an invalid state word with `Err`. So does a new session request: the Stop's
    /// session is over and its Stats belong to nobody. Offline and Ready keep waiting.
    fn send_stats(&mut self, stats: Stats, idle: &mut impl Idle) -> Result<bool, Error> {
        let seq = 0;
        // The Stop just handled is progress; waiting for room is not.
        let mut progressed = true;
        loop {
            match proto::send_message(&mut self.producer, Op::Stats, seq, &stats.encode()) {
                Ok(()) => return Ok(true),
                Err(SendError::Full) => {
                    // `state` issues the acquire barrier after its load (see Region::state).
                    if self.region.state(Role::Peer)? == SideState::Stopped
                        || self.region.pending_session(self.session).is_some()
                    {
                        return Ok(false);
                    }
                    self.beat();
                    // Waits for room by polling: the Stats reply is the last message.
                    let _ = idle.pause(core::mem::take(&mut progressed));
                }
                Err(SendError::Protocol(error)) => return Err(error),
                Err(SendError::TooLarge { len, max }) => {
                    return Err(Error::BadGeometry {
                        reason: "ring too small for the Stats message",
                        ring: Some(0),
                        value: (len - max) as u64,
                    });
                }
            }
        }
    }
}

/// The incoming sequence trackers, one per op the peer sends.
struct Trackers<'a> {
    echo_requests: &'a mut SequenceTracker,
    data: &'a mut SequenceTracker,
    stream_requests: &'a mut SequenceTracker,
    stops: &'a mut SequenceTracker,
    floors: &'a mut SequenceTracker,
}

fn count_sequence(stats: &mut Stats, tracker: &mut SequenceTracker, seq: u64) {
    match tracker.observe(seq) {
        Sequence::InOrder | Sequence::Restart => {}
        // `missing` derives from the peer's (untrusted) seq: saturate, never overflow.
        Sequence::Gap(missing) => stats.add_lost(missing),
        Sequence::Backwards => stats.protocol_errors += 1,
    }
}

/// Handles one incoming message (see [`Handled`]).
fn handle<M: SharedMemory>(
    slot: ReadSlot<'_, M>,
    producer: &mut Producer<M>,
    stats: &mut Stats,
    trackers: &mut Trackers<'_>,
    stream: &mut Option<Stream>,
) -> Result<Handled, Error> {
    let Some(header) = proto::read_header(&slot) else {
        stats.received += 1;
        stats.protocol_errors += 1;
        slot.release();
        return Ok(Handled::Done);
    };
    match header.op() {
        Some(Op::EchoRequest) => echo(slot, header, producer, stats, trackers.echo_requests),
        Some(Op::Data) => {
            // The header was read once above; verify against that copy, so the verdict and
            // the seq counted below come from the same read of shared memory.
            match proto::verify_pattern_payload(&slot, &header) {
                Verdict::Intact(_) => {}
                Verdict::Corrupted(_) => stats.corrupted += 1,
                Verdict::Malformed => stats.protocol_errors += 1,
            }
            stats.received += 1;
            count_sequence(stats, trackers.data, header.seq);
            slot.release();
            Ok(Handled::Done)
        }
        Some(Op::StreamRequest) if stream.is_some() => Ok(Handled::Blocked),
        Some(Op::StreamRequest) => {
            let mut payload = [0u8; STREAM_REQUEST_LEN];
            let request = (slot.len() == HEADER_LEN + STREAM_REQUEST_LEN)
                .then(|| slot.read(HEADER_LEN, &mut payload))
                .and_then(|_| StreamRequest::decode(&payload))
                .filter(|_| proto::checksum(&payload) == header.checksum);
            stats.received += 1;
            count_sequence(stats, trackers.stream_requests, header.seq);
            slot.release();
            match request {
                Some(request)
                    if (request.size as usize)
                        <= producer.max_message_len().saturating_sub(HEADER_LEN) =>
                {
                    *stream = (request.count > 0).then_some(Stream {
                        next_seq: 0,
                        count: request.count,
                        size: request.size as usize,
                    });
                }
                _ => stats.protocol_errors += 1,
            }
            Ok(Handled::Done)
        }
        // A floor would stall the stream's remaining messages: it waits for the stream's end.
        Some(Op::FloorRequest) if stream.is_some() => Ok(Handled::Blocked),
        Some(Op::FloorRequest) => {
            let mut payload = [0u8; FLOOR_REQUEST_LEN];
            let request = (slot.len() == HEADER_LEN + FLOOR_REQUEST_LEN)
                .then(|| slot.read(HEADER_LEN, &mut payload))
                .and_then(|_| FloorRequest::decode(&payload))
                .filter(|_| proto::checksum(&payload) == header.checksum);
            stats.received += 1;
            count_sequence(stats, trackers.floors, header.seq);
            slot.release();
            match request {
                Some(request) => Ok(Handled::Floor(request)),
                None => {
                    stats.protocol_errors += 1;
                    Ok(Handled::Done)
                }
            }
        }
        Some(Op::Stop) if stream.is_some() => Ok(Handled::Blocked),
        Some(Op::Stop) => {
            stats.received += 1;
            count_sequence(stats, trackers.stops, header.seq);
            slot.release();
            Ok(Handled::Stop)
        }
        Some(Op::EchoReply | Op::Stats) | None => {
            stats.received += 1;
            stats.protocol_errors += 1;
            slot.release();
            Ok(Handled::Done)
        }
    }
}

/// Answers an echo request with the same `seq` and payload (checking the payload on the way).
fn echo<M: SharedMemory>(
    slot: ReadSlot<'_, M>,
    header: Header,
    producer: &mut Producer<M>,
    stats: &mut Stats,
    tracker: &mut SequenceTracker,
) -> Result<Handled, Error> {
    let mut reply = match producer.reserve(slot.len()) {
        Ok(reply) => reply,
        Err(SendError::Full) => return Ok(Handled::Blocked),
        Err(SendError::Protocol(error)) => return Err(error),
        Err(SendError::TooLarge { .. }) => {
            // Our outgoing ring is smaller than the incoming one: cannot answer.
            stats.received += 1;
            stats.protocol_errors += 1;
            count_sequence(stats, tracker, header.seq);
            slot.release();
            return Ok(Handled::Done);
        }
    };
    let reply_header = Header {
        op: Op::EchoReply as u32,
        ..header
    };
    reply.write(&reply_header.encode());
    let mut hasher = crc32fast::Hasher::new();
    let mut pattern_ok = true;
    let mut scratch = proto::Chunk::new();
    let chunk = &mut scratch.0;
    let size = header.payload_len as usize;
    let mut offset = 0;
    while offset < size {
        let count = slot.read(
            HEADER_LEN + offset,
            &mut chunk[..proto::CHUNK.min(size - offset)],
        );
        hasher.update(&chunk[..count]);
        pattern_ok &= proto::check_payload_at(header.seq, offset, &chunk[..count]);
        reply.write(&chunk[..count]);
        offset += count;
    }
    reply.commit();
    if !pattern_ok || hasher.finalize() != header.checksum {
        stats.corrupted += 1;
    }
    stats.received += 1;
    stats.sent += 1;
    count_sequence(stats, tracker, header.seq);
    slot.release();
    Ok(Handled::Done)
}
