//! The guest's serving loop on a thread, with the test playing the peer.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{HeapMemory, linked_pair, small_geometry};
use sramlink_ring::proto::{self, HEADER_LEN, Header, Op, Stats, StreamRequest, Verdict};
use sramlink_ring::service::Service;
use sramlink_ring::{
    Consumer, Error, Producer, Region, Role, SendError, SharedMemory, SideState, layout,
};

/// How long a helper waits for the service before declaring it hung. Not a performance
/// bound: every wait here normally ends within milliseconds; this only turns a hang (a broken
/// service) into a test failure instead of a `cargo test` that never ends.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Polls `poll` (yielding in between) until it returns `Some`; panics after [`HANG_LIMIT`].
fn wait_for<T>(what: &str, mut poll: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + HANG_LIMIT;
    loop {
        if let Some(value) = poll() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "the service looks hung: still waiting, after {HANG_LIMIT:?}, for {what}"
        );
        thread::yield_now();
    }
}

/// Joins the service thread; panics if it does not return within [`HANG_LIMIT`] (the thread
/// is then left running; the test binary ends it on exit).
fn join<T>(guest: thread::JoinHandle<T>) -> T {
    wait_for("the service to return", || {
        guest.is_finished().then_some(())
    });
    guest.join().expect("the service thread panicked")
}

struct Peer {
    region: Region<HeapMemory>,
    producer: Producer<HeapMemory>,
    consumer: Consumer<HeapMemory>,
    guest: thread::JoinHandle<Result<Stats, Error>>,
}

fn start(ring_bytes: usize) -> Peer {
    let (guest, peer) = linked_pair(ring_bytes);
    let guest = thread::spawn(move || Service::new(guest).run(|_| thread::yield_now()));
    let (producer, consumer) = peer.endpoints(Role::Peer);
    Peer {
        region: peer,
        producer,
        consumer,
        guest,
    }
}

impl Peer {
    fn send(&mut self, op: Op, seq: u64, payload: &[u8]) {
        let producer = &mut self.producer;
        wait_for(
            "room in the peer->guest ring",
            || match proto::send_message(producer, op, seq, payload) {
                Ok(()) => Some(()),
                Err(SendError::Full) => None,
                Err(error) => panic!("peer send: {error}"),
            },
        );
    }

    /// Sends raw ring messages (no demo-protocol header added), waiting for room.
    fn send_raw(&mut self, message: &[u8]) {
        let producer = &mut self.producer;
        wait_for("room in the peer->guest ring", || {
            match producer.send(message) {
                Ok(()) => Some(()),
                Err(SendError::Full) => None,
                Err(error) => panic!("peer send: {error}"),
            }
        });
    }

    fn send_pattern(&mut self, op: Op, seq: u64, size: usize) {
        let mut payload = vec![0u8; size];
        proto::fill_payload(seq, &mut payload);
        self.send(op, seq, &payload);
    }

    fn try_recv(&mut self) -> Option<(Header, Vec<u8>)> {
        try_recv_from(&mut self.consumer)
    }

    fn recv(&mut self) -> (Header, Vec<u8>) {
        wait_for("a message from the service", || self.try_recv())
    }

    fn stop(mut self) -> (Stats, Stats) {
        self.send(Op::Stop, 0, &[]);
        let (header, payload) = self.recv();
        assert_eq!(header.op(), Some(Op::Stats));
        assert_eq!(proto::checksum(&payload), header.checksum);
        let reported = Stats::decode(&payload).expect("stats payload");
        let returned = join(self.guest).expect("service result");
        assert_eq!(self.region.state(Role::Guest), Ok(SideState::Stopped));
        (reported, returned)
    }
}

/// The next message on `consumer` (the guest->peer ring), if any.
fn try_recv_from(consumer: &mut Consumer<HeapMemory>) -> Option<(Header, Vec<u8>)> {
    let mut buf = vec![0u8; consumer.max_message_len()];
    let len = consumer.recv(&mut buf).expect("peer recv")?;
    let header = Header::decode(&buf[..len]).expect("header");
    assert_eq!(header.payload_len as usize, len - HEADER_LEN);
    Some((header, buf[HEADER_LEN..len].to_vec()))
}

fn check_pattern_message(header: &Header, payload: &[u8], op: Op, seq: u64, size: usize) {
    assert_eq!(header.op(), Some(op));
    assert_eq!(header.seq, seq);
    assert_eq!(payload.len(), size);
    assert_eq!(proto::checksum(payload), header.checksum);
    assert!(proto::check_payload(seq, payload));
}

#[test]
fn echo_streams_and_stop() {
    let mut peer = start(4096);
    // Echo, one outstanding.
    for seq in 0..50 {
        let size = (seq as usize * 37) % 1000;
        peer.send_pattern(Op::EchoRequest, seq, size);
        let (header, payload) = peer.recv();
        check_pattern_message(&header, &payload, Op::EchoReply, seq, size);
    }
    // Echo, pipelined: more requests than fit in the ring at once.
    let mut replies = 0;
    for seq in 50..250 {
        peer.send_pattern(Op::EchoRequest, seq, 200);
        while let Some((header, payload)) = peer.try_recv() {
            check_pattern_message(&header, &payload, Op::EchoReply, 50 + replies, 200);
            replies += 1;
        }
    }
    while replies < 200 {
        let (header, payload) = peer.recv();
        check_pattern_message(&header, &payload, Op::EchoReply, 50 + replies, 200);
        replies += 1;
    }
    // Stream to the guest.
    for seq in 0..300 {
        peer.send_pattern(Op::Data, seq, 500);
    }
    // Stream from the guest while we also stream to it.
    let request = StreamRequest {
        count: 400,
        size: 1000,
    };
    peer.send(Op::StreamRequest, 0, &request.encode());
    let mut received = 0;
    let mut sent = 300;
    let deadline = Instant::now() + HANG_LIMIT;
    while received < 400 {
        assert!(
            Instant::now() < deadline,
            "the service looks hung: {received} of 400 stream messages after {HANG_LIMIT:?}"
        );
        if sent < 600 {
            peer.send_pattern(Op::Data, sent, 100);
            sent += 1;
        }
        if let Some((header, payload)) = peer.try_recv() {
            check_pattern_message(&header, &payload, Op::Data, received, 1000);
            received += 1;
        }
    }
    while sent < 600 {
        peer.send_pattern(Op::Data, sent, 100);
        sent += 1;
    }
    let (reported, returned) = peer.stop();
    let expected = Stats {
        received: 250 + 600 + 1 + 1,
        sent: 250 + 400,
        corrupted: 0,
        lost: 0,
        protocol_errors: 0,
    };
    assert_eq!(reported, expected);
    assert_eq!(returned, expected);
}

#[test]
fn counts_corruption_loss_and_protocol_errors() {
    let mut peer = start(4096);
    peer.send_pattern(Op::Data, 0, 64);
    // Right checksum of the wrong bytes: the pattern check catches it.
    let mut payload = vec![0u8; 64];
    proto::fill_payload(1, &mut payload);
    payload[10] ^= 1;
    peer.send(Op::Data, 1, &payload);
    // Wrong checksum.
    let mut payload = vec![0u8; 64];
    proto::fill_payload(2, &mut payload);
    let mut header = Header::for_payload(Op::Data, 2, &payload);
    header.checksum ^= 1;
    let mut message = header.encode().to_vec();
    message.extend_from_slice(&payload);
    peer.send_raw(&message);
    // Three lost (3, 4, 5), then backwards.
    peer.send_pattern(Op::Data, 6, 8);
    peer.send_pattern(Op::Data, 4, 8);
    // Unknown op, a message shorter than a header, an op the peer must not send.
    peer.send(Op::Data, 5, &[]);
    let mut unknown = Header::for_payload(Op::Data, 0, &[]);
    unknown.op = 99;
    peer.producer.send(&unknown.encode()).unwrap();
    peer.producer.send(&[1, 2, 3]).unwrap();
    peer.send(Op::Stats, 0, &[0; 40]);
    // A stream request the guest cannot honour (too big for its ring).
    peer.send(
        Op::StreamRequest,
        0,
        &StreamRequest {
            count: 1,
            size: 1 << 20,
        }
        .encode(),
    );
    let (reported, returned) = peer.stop();
    assert_eq!(reported, returned);
    assert_eq!(reported.received, 11);
    assert_eq!(reported.sent, 0);
    assert_eq!(reported.corrupted, 2);
    assert_eq!(reported.lost, 3);
    // backwards, unknown op, too short, Stats from the peer, impossible stream request.
    assert_eq!(reported.protocol_errors, 5);
}

#[test]
fn returns_when_the_peer_stops() {
    let mut peer = start(256);
    peer.send_pattern(Op::EchoRequest, 0, 16);
    let (header, _) = peer.recv();
    assert_eq!(header.op(), Some(Op::EchoReply));
    peer.region.set_state(Role::Peer, SideState::Stopped);
    let stats = join(peer.guest).unwrap();
    assert_eq!(stats.received, 1);
    assert_eq!(stats.sent, 1);
    assert_eq!(peer.region.state(Role::Guest), Ok(SideState::Stopped));
}

#[test]
fn shared_memory_garbage_ends_the_service_with_an_error() {
    let peer = start(256);
    peer.region
        .memory()
        .store_u32(layout::producer_index_offset(1), 12);
    let error = join(peer.guest).unwrap_err();
    assert!(matches!(error, Error::BadIndex { .. }), "{error}");
    assert!(error.to_string().contains("producer index"));

    let peer = start(256);
    peer.region.memory().store_u32(layout::OFF_PEER_STATE, 9);
    let error = join(peer.guest).unwrap_err();
    assert!(matches!(error, Error::BadState { .. }), "{error}");
}

#[test]
fn stop_waits_for_the_stream_to_finish() {
    let mut peer = start(1024);
    let request = StreamRequest {
        count: 50,
        size: 100,
    };
    peer.send(Op::StreamRequest, 0, &request.encode());
    peer.send(Op::Stop, 0, &[]);
    for seq in 0..50 {
        let (header, payload) = peer.recv();
        check_pattern_message(&header, &payload, Op::Data, seq, 100);
    }
    let (header, payload) = peer.recv();
    assert_eq!(header.op(), Some(Op::Stats));
    let stats = Stats::decode(&payload).unwrap();
    assert_eq!((stats.received, stats.sent), (2, 50));
    assert_eq!(join(peer.guest), Ok(stats));
}

#[test]
fn idle_hook_runs_when_there_is_nothing_to_do() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (guest, peer) = linked_pair(256);
    let idles = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&idles);
    let guest = thread::spawn(move || {
        Service::new(guest).run(|_| {
            counter.fetch_add(1, Ordering::Relaxed);
            thread::yield_now();
        })
    });
    // Wait until the service has gone idle at least once, then stop it via the state word.
    // (Bounded, so that a service that never idles fails the test instead of hanging it.)
    for _ in 0..10_000_000 {
        if idles.load(Ordering::Relaxed) > 0 {
            break;
        }
        thread::yield_now();
    }
    assert!(idles.load(Ordering::Relaxed) > 0, "the idle hook never ran");
    peer.set_state(Role::Peer, SideState::Stopped);
    assert_eq!(join(guest), Ok(Stats::default()));
}

impl Peer {
    /// Sends several demo messages with a single publish, so the service sees all or none.
    fn send_together(&mut self, messages: &[(Op, u64, &[u8])]) {
        for (op, seq, payload) in messages {
            let mut slot = self
                .producer
                .reserve(HEADER_LEN + payload.len())
                .expect("room for the batch");
            slot.write(&Header::for_payload(*op, *seq, payload).encode());
            slot.write(payload);
            slot.commit();
        }
        self.producer.publish();
    }

    /// Brings the service to the point where its Stats reply waits for room: a stream that
    /// exactly fills a 256-byte guest->peer ring (three records of 80 bytes; 16 bytes stay
    /// free, less than the 72-byte Stats record), then Stop, which the service handles
    /// right after the stream, before looking at the peer's state word again. The peer does
    /// not read anything.
    fn fill_the_ring_then_stop(&mut self) {
        let request = StreamRequest { count: 3, size: 48 }.encode();
        self.send_together(&[(Op::StreamRequest, 0, &request), (Op::Stop, 0, &[])]);
        let memory = self.region.memory().clone();
        wait_for("the stream to fill the guest->peer ring", || {
            (memory.load_u32(layout::producer_index_offset(0)) == 3 * 80).then_some(())
        });
    }
}

#[test]
fn stats_reply_is_dropped_when_the_peer_stops_with_the_ring_full() {
    let mut peer = start(256);
    peer.fill_the_ring_then_stop();
    // The peer stops (or dies after saying so) without draining the ring.
    peer.region.set_state(Role::Peer, SideState::Stopped);
    let Peer {
        region,
        mut consumer,
        guest,
        ..
    } = peer;
    let stats = join(guest).expect("a normal stop");
    assert_eq!((stats.received, stats.sent), (2, 3));
    assert_eq!(region.state(Role::Guest), Ok(SideState::Stopped));
    // The ring holds the stream and no Stats reply.
    for seq in 0..3 {
        let (header, payload) = try_recv_from(&mut consumer).expect("a stream message");
        check_pattern_message(&header, &payload, Op::Data, seq, 48);
    }
    assert_eq!(try_recv_from(&mut consumer), None);
}

#[test]
fn bad_peer_state_while_the_stats_reply_waits_is_an_error() {
    let mut peer = start(256);
    peer.fill_the_ring_then_stop();
    peer.region.memory().store_u32(layout::OFF_PEER_STATE, 9);
    let error = join(peer.guest).unwrap_err();
    assert_eq!(
        error,
        Error::BadState {
            role: Role::Peer,
            value: 9
        }
    );
}

#[test]
fn huge_sequence_gaps_saturate_the_lost_count() {
    let mut peer = start(256);
    // 0 -> u64::MAX (u64::MAX lost), restart at 0, u64::MAX again (u64::MAX - 1 more):
    // a plain `+=` would overflow.
    peer.send(Op::Data, u64::MAX, &[]);
    peer.send(Op::Data, 0, &[]);
    peer.send(Op::Data, u64::MAX, &[]);
    let (reported, returned) = peer.stop();
    assert_eq!(reported, returned);
    assert_eq!(
        reported,
        Stats {
            received: 4,
            sent: 0,
            corrupted: 0,
            lost: u64::MAX,
            protocol_errors: 0,
        }
    );
}

#[test]
fn verify_pattern_payload_uses_the_header_it_is_given() {
    let (guest, peer) = linked_pair(256);
    let (mut producer, _) = peer.endpoints(Role::Peer);
    let (_, mut consumer) = guest.endpoints(Role::Guest);
    let mut payload = [0u8; 40];
    proto::fill_payload(1, &mut payload);
    proto::send_message(&mut producer, Op::Data, 1, &payload).unwrap();

    let slot = consumer.read().unwrap().expect("the message");
    let header = proto::read_header(&slot).expect("a valid header");
    assert_eq!(header.seq, 1);
    // The sender rewrites the header's seq after we decoded it (message at record offset 8,
    // seq at message offset 8). The verdict must be about the header we decoded and count.
    let seq_offset = small_geometry(256).rings[1].data_offset + 8 + 8;
    guest.memory().store_u64(seq_offset, 5);
    assert_eq!(
        proto::verify_pattern_payload(&slot, &header),
        Verdict::Intact(header)
    );
    // The old entry point decodes the header itself: it sees the rewritten seq.
    assert!(matches!(
        proto::verify_pattern_message(&slot),
        Verdict::Corrupted(Header { seq: 5, .. })
    ));
    // The given header is what is checked: another seq's pattern does not match.
    let other = Header { seq: 2, ..header };
    assert_eq!(
        proto::verify_pattern_payload(&slot, &other),
        Verdict::Corrupted(other)
    );
    // A header that does not describe this slot is malformed, without looking further.
    for bad in [
        Header {
            payload_len: 41,
            ..header
        },
        Header {
            reserved: 1,
            ..header
        },
    ] {
        assert_eq!(
            proto::verify_pattern_payload(&slot, &bad),
            Verdict::Malformed
        );
    }
}

/// A doorbell: one side rings, the other sleeps until rung (a stand-in for an event channel).
#[derive(Default)]
struct Doorbell {
    rung: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

/// How long a sleeper waits for its doorbell before the sleep counts as a lost wake-up.
const LOST_WAKE_UP: Duration = Duration::from_secs(5);

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.wake.notify_one();
    }

    /// Sleeps until rung; false if [`LOST_WAKE_UP`] passed first.
    fn sleep(&self) -> bool {
        let rung = self.rung.lock().unwrap();
        let (mut rung, timeout) = self
            .wake
            .wait_timeout_while(rung, LOST_WAKE_UP, |rung| !*rung)
            .unwrap();
        *rung = false;
        !timeout.timed_out()
    }
}

/// The guest's waiting in the test: a few polls, then sleep on its doorbell.
struct SleepyGuest {
    own: std::sync::Arc<Doorbell>,
    peer: std::sync::Arc<Doorbell>,
    polls: u32,
    sleeps: u64,
    lost: u64,
}

impl sramlink_ring::service::Idle for SleepyGuest {
    fn pause(&mut self, _progressed: bool) -> bool {
        self.polls += 1;
        if self.polls < 4 {
            thread::yield_now();
            return false;
        }
        self.polls = 0;
        true
    }

    fn sleep(&mut self) {
        self.sleeps += 1;
        if !self.own.sleep() {
            self.lost += 1;
        }
    }

    fn notify(&mut self) {
        self.peer.ring();
    }
}

#[test]
fn notified_service_sleeps_and_loses_no_wake_up() {
    use std::sync::Arc;
    let (guest_region, region) = linked_pair(4096);
    let guest_bell = Arc::new(Doorbell::default());
    let peer_bell = Arc::new(Doorbell::default());
    let mut idle = SleepyGuest {
        own: Arc::clone(&guest_bell),
        peer: Arc::clone(&peer_bell),
        polls: 0,
        sleeps: 0,
        lost: 0,
    };
    let guest = thread::spawn(move || {
        let stats = Service::new(guest_region).run_notified(&mut idle, |_| {});
        (stats, idle.sleeps, idle.lost)
    });
    let (mut producer, mut consumer) = region.endpoints(Role::Peer);
    let mut peer_lost = 0;
    let ring_guest = |region: &Region<HeapMemory>| {
        if region.notify_needed(Role::Guest) {
            guest_bell.ring();
        }
    };
    for seq in 0..2000u64 {
        if seq % 2 == 0 {
            // Every other request goes to a guest that has armed (is about to sleep, or
            // sleeps): only the notification can wake it.
            wait_for("the guest to arm", || {
                region.notify_needed(Role::Guest).then_some(())
            });
        }
        let mut payload = vec![0u8; 40];
        proto::fill_payload(seq, &mut payload);
        proto::send_message(&mut producer, Op::EchoRequest, seq, &payload).expect("room");
        ring_guest(&region);
        // Wait for the reply the way the peer does: look, arm, look again, sleep.
        let (header, reply) = loop {
            if let Some(message) = try_recv_from(&mut consumer) {
                break message;
            }
            region.arm(Role::Peer);
            if let Some(message) = try_recv_from(&mut consumer) {
                region.disarm(Role::Peer);
                break message;
            }
            if !peer_bell.sleep() {
                peer_lost += 1;
            }
            region.disarm(Role::Peer);
        };
        consumer.publish();
        ring_guest(&region);
        check_pattern_message(&header, &reply, Op::EchoReply, seq, 40);
    }
    proto::send_message(&mut producer, Op::Stop, 0, &[]).expect("room");
    ring_guest(&region);
    let (stats, sleeps, guest_lost) = join(guest);
    assert_eq!(stats.expect("service").received, 2001);
    // At least every other request found the guest armed; it then sleeps unless its re-check
    // pass already sees the request.
    assert!(sleeps >= 500, "the guest slept only {sleeps} times");
    assert_eq!((guest_lost, peer_lost), (0, 0), "wake-ups lost");
}

#[test]
fn idle_hook_is_told_whether_work_was_done_since_its_last_call() {
    use std::sync::{Arc, Mutex};

    let (guest, peer) = linked_pair(256);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&calls);
    let guest = thread::spawn(move || {
        Service::new(guest).run(|progressed| {
            record.lock().unwrap().push(progressed);
            thread::yield_now();
        })
    });
    let (mut producer, _consumer) = peer.endpoints(Role::Peer);
    let before = wait_for("a first idle call", || {
        let calls = calls.lock().unwrap();
        (!calls.is_empty()).then_some(calls.len())
    });
    let mut payload = vec![0u8; 16];
    proto::fill_payload(0, &mut payload);
    proto::send_message(&mut producer, Op::EchoRequest, 0, &payload).expect("room");
    // The echo is served, then the service idles again: once with `true`, then `false`.
    wait_for("idle calls after the echo", || {
        let calls = calls.lock().unwrap();
        calls[before..]
            .iter()
            .position(|&progressed| progressed)
            .and_then(|first| (calls.len() > before + first + 1).then_some(()))
    });
    peer.set_state(Role::Peer, SideState::Stopped);
    let stats = join(guest).expect("clean stop");
    assert_eq!((stats.received, stats.sent), (1, 1));
    let calls = calls.lock().unwrap();
    // Nothing happened before the request; exactly one call follows the work.
    assert!(calls[..before].iter().all(|&progressed| !progressed));
    assert_eq!(calls.iter().filter(|&&progressed| progressed).count(), 1);
}

/// Starts a new session on `peer` (ABI §5.7): its endpoints are replaced by the session's.
fn new_session(peer: &mut Peer) -> sramlink_ring::SessionStart {
    let pending = peer.region.request_session().expect("request");
    let (start, producer, consumer) = wait_for("the session acknowledgement", || {
        peer.region
            .session_started(pending)
            .expect("acknowledgement")
    });
    peer.producer = producer;
    peer.consumer = consumer;
    start
}

/// A peer dies with requests unanswered, replies unread and a long stream in flight; the next
/// peer's session sees none of it, and its own messages exactly once, in order.
#[test]
fn a_new_session_sees_nothing_of_the_old_one() {
    let mut peer = start(4096);
    // The "killed" peer: a stream far larger than the ring, echo requests, nothing read.
    peer.send(
        Op::StreamRequest,
        0,
        &StreamRequest {
            count: 1_000_000,
            size: 100,
        }
        .encode(),
    );
    for seq in 0..5 {
        peer.send_pattern(Op::EchoRequest, seq, 32);
    }
    // Let the guest fill ring 0 with stream data for the dead peer.
    wait_for("ring 0 to fill up", || {
        let used = peer
            .region
            .memory()
            .load_u32(layout::producer_index_offset(0))
            .wrapping_sub(
                peer.region
                    .memory()
                    .load_u32(layout::consumer_index_offset(0)),
            );
        (used > 4096 - 256).then_some(())
    });
    for attempt in 0..3 {
        let start = new_session(&mut peer);
        assert_eq!(start.session, attempt + 1);
        for seq in 0..20 {
            peer.send_pattern(Op::EchoRequest, seq, 40);
            let (header, payload) = peer.recv();
            check_pattern_message(&header, &payload, Op::EchoReply, seq, 40);
        }
        assert!(peer.try_recv().is_none(), "nothing else arrives");
    }
    let (reported, returned) = peer.stop();
    assert_eq!(reported, returned);
    assert_eq!(
        (reported.lost, reported.corrupted, reported.protocol_errors),
        (0, 0, 0),
        "{reported:?}"
    );
}

/// A guest that re-creates the region is noticed by a peer that attached to the old header.
#[test]
fn a_restarted_guest_is_noticed() {
    let (guest, peer) = linked_pair(64);
    assert_eq!(peer.check_generation(), Ok(()));
    let old = guest.info().generation.expect("1.1 header");
    let again = Region::create(guest.memory().clone(), *guest.geometry()).unwrap();
    let new = again.info().generation.expect("1.1 header");
    assert_ne!(old, new);
    assert_eq!(
        peer.check_generation(),
        Err(Error::Restarted {
            attached: old,
            found: Some(new)
        })
    );
    // A request for the old generation is ignored by the new guest.
    let pending = peer.request_session().unwrap();
    assert!(again.pending_session(0).is_none());
    assert!(matches!(peer.session_started(pending), Ok(None)));
}

/// The creator's mapping is recorded and a different one refused (ABI §1.1).
#[test]
fn memory_attributes_must_match() {
    let geometry = small_geometry(64);
    let memory = common::heap_memory(geometry.region_bytes);
    let creation = sramlink_ring::Creation {
        cacheable: true,
        seed: 7,
    };
    let guest = Region::create_with(memory.clone(), geometry, creation).unwrap();
    assert_eq!(guest.info().generation, Some(7));
    let peer = Region::attach(memory).unwrap();
    assert!(peer.info().creator_cacheable());
    assert_eq!(peer.check_attributes(true), Ok(()));
    let error = peer.check_attributes(false).unwrap_err();
    assert!(
        error.to_string().contains("Normal write-back cacheable"),
        "{error}"
    );
}

/// A fatal ring error: the guest publishes the healthy ring and stores Stopped (ABI §5.4).
#[test]
fn a_fatal_error_publishes_the_healthy_ring_then_stops() {
    let mut peer = start(4096);
    peer.send_pattern(Op::EchoRequest, 0, 16);
    let (header, _) = peer.recv();
    assert_eq!(header.op(), Some(Op::EchoReply));
    // A producer index on ring 1 that claims more than the ring holds.
    peer.region
        .memory()
        .store_u32(layout::producer_index_offset(1), 0x7777_7778);
    let result = join(peer.guest);
    assert!(matches!(result, Err(Error::BadIndex { .. })), "{result:?}");
    assert_eq!(peer.region.state(Role::Guest), Ok(SideState::Stopped));
    // The reply's bytes were published on ring 0 before Stopped.
    assert_eq!(
        peer.region
            .memory()
            .load_u32(layout::producer_index_offset(0)),
        8 + 24 + 16
    );
}

/// Plays `rounds` floor rounds of `request` as the peer (ABI §7.4).
fn play_floor(peer: &Peer, request: proto::FloorRequest, rounds: std::ops::RangeInclusive<u32>) {
    let memory = peer.region.memory();
    for round in rounds {
        let value = request.value(round);
        memory.store_u32(proto::FLOOR_PEER_FLAG, value);
        wait_for("the guest's floor flag", || {
            (memory.load_u32(proto::FLOOR_GUEST_FLAG) == value).then_some(())
        });
    }
}

/// Sends a FloorRequest of `count` rounds, starting from the guest flag's current value.
fn request_floor(peer: &mut Peer, count: u32, seq: u64) -> proto::FloorRequest {
    let start = peer.region.memory().load_u32(proto::FLOOR_GUEST_FLAG);
    peer.region
        .memory()
        .store_u32(proto::FLOOR_PEER_FLAG, start);
    let request = proto::FloorRequest { count, start };
    peer.send(Op::FloorRequest, seq, &request.encode());
    request
}

#[test]
fn the_floor_plays_its_rounds_then_the_guest_serves_again() {
    let mut peer = start(4096);
    for seq in 0..2 {
        let request = request_floor(&mut peer, 300, seq);
        play_floor(&peer, request, 1..=300);
        // Back to the rings: an echo is answered.
        peer.send_pattern(Op::EchoRequest, seq, 32);
        let (header, payload) = peer.recv();
        check_pattern_message(&header, &payload, Op::EchoReply, seq, 32);
    }
    let (reported, _) = peer.stop();
    // Two floor requests, two echoes, the Stop; nothing wrong.
    assert_eq!(reported.received, 5);
    assert_eq!(reported.sent, 2);
    assert_eq!(
        reported.protocol_errors + reported.lost + reported.corrupted,
        0
    );
}

#[test]
fn a_floor_ends_early_when_the_peer_stops() {
    let mut peer = start(256);
    let request = request_floor(&mut peer, 1_000_000, 0);
    play_floor(&peer, request, 1..=3);
    // The peer gives up mid-floor: the guest leaves the floor and stops.
    peer.region.set_state(Role::Peer, SideState::Stopped);
    let stats = join(peer.guest).unwrap();
    assert_eq!((stats.received, stats.protocol_errors), (1, 0));
    assert_eq!(peer.region.state(Role::Guest), Ok(SideState::Stopped));
}

#[test]
fn a_malformed_floor_request_is_a_protocol_error_and_is_not_played() {
    let mut peer = start(256);
    let start_value = peer.region.memory().load_u32(proto::FLOOR_GUEST_FLAG);
    // A bad checksum, then a payload one byte short.
    let payload = proto::FloorRequest {
        count: 5,
        start: start_value,
    }
    .encode();
    let mut header = Header::for_payload(Op::FloorRequest, 0, &payload);
    header.checksum ^= 1;
    peer.send_raw(&[&header.encode()[..], &payload[..]].concat());
    peer.send(Op::FloorRequest, 1, &payload[..7]);
    // Still serving the rings, the guest flag untouched.
    peer.send_pattern(Op::EchoRequest, 0, 16);
    let (header, payload) = peer.recv();
    check_pattern_message(&header, &payload, Op::EchoReply, 0, 16);
    assert_eq!(
        peer.region.memory().load_u32(proto::FLOOR_GUEST_FLAG),
        start_value
    );
    let (reported, _) = peer.stop();
    assert_eq!(reported.protocol_errors, 2);
}
