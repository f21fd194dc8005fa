//! The guest's serving loop on a thread, with the test playing the peer.

mod common;

use std::thread;

use common::{HeapMemory, linked_pair};
use sramlink_ring::proto::{self, HEADER_LEN, Header, Op, Stats, StreamRequest};
use sramlink_ring::service::Service;
use sramlink_ring::{
    Consumer, Error, Producer, Region, Role, SendError, SharedMemory, SideState, layout,
};

struct Peer {
    region: Region<HeapMemory>,
    producer: Producer<HeapMemory>,
    consumer: Consumer<HeapMemory>,
    guest: thread::JoinHandle<Result<Stats, Error>>,
}

fn start(ring_bytes: usize) -> Peer {
    let (guest, peer) = linked_pair(ring_bytes);
    let guest = thread::spawn(move || Service::new(guest).run(thread::yield_now));
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
        loop {
            match proto::send_message(&mut self.producer, op, seq, payload) {
                Ok(()) => return,
                Err(SendError::Full) => thread::yield_now(),
                Err(error) => panic!("peer send: {error}"),
            }
        }
    }

    fn send_pattern(&mut self, op: Op, seq: u64, size: usize) {
        let mut payload = vec![0u8; size];
        proto::fill_payload(seq, &mut payload);
        self.send(op, seq, &payload);
    }

    fn try_recv(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut buf = vec![0u8; self.consumer.max_message_len()];
        let len = self.consumer.recv(&mut buf).expect("peer recv")?;
        let header = Header::decode(&buf[..len]).expect("header");
        assert_eq!(header.payload_len as usize, len - HEADER_LEN);
        Some((header, buf[HEADER_LEN..len].to_vec()))
    }

    fn recv(&mut self) -> (Header, Vec<u8>) {
        loop {
            if let Some(message) = self.try_recv() {
                return message;
            }
            thread::yield_now();
        }
    }

    fn stop(mut self) -> (Stats, Stats) {
        self.send(Op::Stop, 0, &[]);
        let (header, payload) = self.recv();
        assert_eq!(header.op(), Some(Op::Stats));
        assert_eq!(proto::checksum(&payload), header.checksum);
        let reported = Stats::decode(&payload).expect("stats payload");
        let returned = self.guest.join().unwrap().expect("service result");
        assert_eq!(self.region.state(Role::Guest), Ok(SideState::Stopped));
        (reported, returned)
    }
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
    while received < 400 {
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
    while peer.producer.send(&message) == Err(SendError::Full) {}
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
    let stats = peer.guest.join().unwrap().unwrap();
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
    let error = peer.guest.join().unwrap().unwrap_err();
    assert!(matches!(error, Error::BadIndex { .. }), "{error}");
    assert!(error.to_string().contains("producer index"));

    let peer = start(256);
    peer.region.memory().store_u32(layout::OFF_PEER_STATE, 9);
    let error = peer.guest.join().unwrap().unwrap_err();
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
    assert_eq!(peer.guest.join().unwrap(), Ok(stats));
}

#[test]
fn idle_hook_runs_when_there_is_nothing_to_do() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (guest, peer) = linked_pair(256);
    let idles = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&idles);
    let guest = thread::spawn(move || {
        Service::new(guest).run(|| {
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
    assert_eq!(guest.join().unwrap(), Ok(Stats::default()));
}
