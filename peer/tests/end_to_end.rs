//! End-to-end host tests: a thread runs the ring crate's guest service, the peer logic runs
//! ping, echo and stream against it; plus garbage in the region and the full CLI path.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Parser;
use sramlink_peer::app;
use sramlink_peer::backoff::BackoffPolicy;
use sramlink_peer::cli::{Cli, Direction, Mode};
use sramlink_peer::error::ErrorKind;
use sramlink_peer::mapping::MappedRegion;
use sramlink_peer::report::Report;
use sramlink_peer::session::{self, AttachOptions, Attached, RunOptions};
use sramlink_ring::proto::{self, HEADER_LEN, Op};
use sramlink_ring::service::{Service, Stats};
use sramlink_ring::{
    AtomicMemory, Error as RingError, Geometry, Region, Role, SharedMemory, SideState,
};

type HeapMemory = AtomicMemory<Arc<[AtomicU32]>>;

/// Long enough never to fire in a healthy run, short enough for a failing test to end.
const TIMEOUT: Duration = Duration::from_secs(20);

fn heap_memory(bytes: usize) -> HeapMemory {
    AtomicMemory::new((0..bytes / 4).map(|_| AtomicU32::new(0)).collect())
}

/// The guest: creates the region, declares itself Ready and serves until stopped.
fn spawn_guest<M>(memory: M) -> JoinHandle<Result<Stats, RingError>>
where
    M: SharedMemory + Clone + Send + 'static,
{
    thread::spawn(move || serve_guest(memory))
}

/// The guest's work on the calling thread.
fn serve_guest<M: SharedMemory + Clone>(memory: M) -> Result<Stats, RingError> {
    let geometry = Geometry::for_region(memory.len())?;
    let region = Region::create(memory, geometry)?;
    region.set_state(Role::Guest, SideState::Ready);
    Service::new(region).run(|_| thread::yield_now())
}

fn options(mode: Mode) -> RunOptions {
    RunOptions {
        mode,
        timeout: TIMEOUT,
        stop_guest: true,
        policy: BackoffPolicy::Sleep,
        progress: None,
        liveness: TIMEOUT,
        events: false,
        spin: Duration::ZERO,
    }
}

fn attach_options(timeout: Duration) -> AttachOptions {
    AttachOptions {
        timeout,
        liveness: timeout,
        policy: BackoffPolicy::Sleep,
        cacheable: None,
    }
}

/// A guest that serves nothing but the session handshake: acknowledges the first session a
/// peer asks for and hands back its endpoints at the session's start.
fn acknowledge_first_session<M>(
    region: Region<M>,
) -> JoinHandle<(sramlink_ring::Producer<M>, sramlink_ring::Consumer<M>)>
where
    M: SharedMemory + Clone + Send + 'static,
{
    thread::spawn(move || {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(request) = region.pending_session(0) {
                let (_, producer, consumer) =
                    region.acknowledge_session(request).expect("acknowledge");
                return (producer, consumer);
            }
            assert!(Instant::now() < deadline, "no session request");
            thread::yield_now();
        }
    })
}

/// Attaches as the peer to a region whose "guest" only acknowledges the session.
fn attach_to_passive_guest(
    region: &Region<HeapMemory>,
    memory: HeapMemory,
) -> Attached<HeapMemory> {
    let acknowledger = acknowledge_first_session(region.clone());
    let attached = session::attach(memory, &attach_options(TIMEOUT), None).expect("attach");
    acknowledger.join().expect("acknowledging guest");
    attached
}

/// Runs `mode` against a guest thread over a `bytes`-byte heap region; returns the peer's
/// report and the guest's own counters.
fn run_against_guest(bytes: usize, run_options: RunOptions) -> (Report, Stats) {
    let memory = heap_memory(bytes);
    let guest = spawn_guest(memory.clone());
    let region =
        session::attach(memory, &attach_options(TIMEOUT), None).expect("attach to the guest");
    let mut report = Report::default();
    session::run(region, &run_options, &mut report).expect("run");
    let guest_stats = guest.join().expect("guest thread").expect("guest service");
    (report, guest_stats)
}

fn assert_clean(report: &Report, guest: &Stats) {
    assert!(report.passed(), "{report:#?}");
    assert_eq!(
        (report.lost, report.corrupted, report.protocol_errors),
        (0, 0, 0)
    );
    assert_eq!(
        (guest.lost, guest.corrupted, guest.protocol_errors),
        (0, 0, 0)
    );
    let reported = report.guest.expect("guest stats in the report");
    assert_eq!(reported.received, guest.received);
    assert_eq!(reported.sent, guest.sent);
}

#[test]
fn ping_round_trips_with_a_histogram() {
    let (report, guest) = run_against_guest(
        3 * 4096,
        options(Mode::Ping {
            count: 200,
            size: 100,
        }),
    );
    assert_clean(&report, &guest);
    assert_eq!(report.messages_sent, 200);
    assert_eq!(report.messages_received, 200);
    // Stop counts on the guest's side.
    assert_eq!(guest.received, 201);
    assert_eq!(guest.sent, 200);
    let rtt = report.rtt.expect("round trips");
    assert_eq!(rtt.samples, 200);
    assert!(rtt.min <= rtt.p50 && rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max);
    let histogram_total: u64 = report.rtt_histogram.iter().map(|bucket| bucket.count).sum();
    assert_eq!(histogram_total, 200);
    assert_eq!(report.counter_hz, 1_000_000_000);
}

#[test]
fn the_floor_times_its_rounds_then_the_guest_serves_and_stops() {
    let (report, guest) = run_against_guest(3 * 4096, options(Mode::Floor { count: 300 }));
    assert_clean(&report, &guest);
    // The FloorRequest is the only message of the mode; the guest also counts the Stop.
    assert_eq!((report.messages_sent, report.messages_received), (1, 0));
    assert_eq!((guest.received, guest.sent), (2, 0));
    let rtt = report.rtt.expect("round trips");
    assert_eq!(rtt.samples, 300);
    let histogram_total: u64 = report.rtt_histogram.iter().map(|bucket| bucket.count).sum();
    assert_eq!(histogram_total, 300);
}

#[test]
fn echo_with_a_window_wraps_the_rings() {
    // 4 KiB rings, 1000-byte messages, 8 in flight: the rings wrap and fill many times.
    let (report, guest) = run_against_guest(
        3 * 4096,
        options(Mode::Echo {
            count: 2000,
            size: 1000,
            window: 8,
        }),
    );
    assert_clean(&report, &guest);
    assert_eq!(report.messages_sent, 2000);
    assert_eq!(report.messages_received, 2000);
    assert_eq!(report.rtt.expect("round trips").samples, 2000);
}

#[test]
fn echo_with_odd_and_empty_payloads() {
    for size in [0, 1, 7, 9, 2016] {
        let (report, guest) = run_against_guest(
            3 * 4096,
            options(Mode::Echo {
                count: 50,
                size,
                window: 3,
            }),
        );
        assert_clean(&report, &guest);
        assert_eq!(report.messages_received, 50, "size {size}");
    }
}

#[test]
fn stream_in_each_direction() {
    for direction in [Direction::ToGuest, Direction::FromGuest, Direction::Both] {
        let (report, guest) = run_against_guest(
            3 * 4096,
            options(Mode::Stream {
                count: 3000,
                size: 200,
                direction,
            }),
        );
        assert_clean(&report, &guest);
        let (sent, received) = match direction {
            Direction::ToGuest => (3000, 0),
            // StreamRequest.
            Direction::FromGuest => (1, 3000),
            Direction::Both => (3001, 3000),
        };
        assert_eq!(
            (report.messages_sent, report.messages_received),
            (sent, received),
            "{direction:?}"
        );
        assert_eq!(guest.received, sent + 1, "{direction:?}: data + Stop");
        assert!(report.rtt.is_none());
        assert!(report.messages_per_second > 0.0);
    }
}

#[test]
fn busy_poll_policy_runs_too() {
    let mut run_options = options(Mode::Ping { count: 50, size: 8 });
    run_options.policy = BackoffPolicy::BusyPoll;
    let (report, guest) = run_against_guest(3 * 4096, run_options);
    assert_clean(&report, &guest);
}

#[test]
fn oversized_payload_is_refused_before_sending() {
    let memory = heap_memory(3 * 4096);
    let guest = spawn_guest(memory.clone());
    let region = session::attach(memory, &attach_options(TIMEOUT), None).expect("attach");
    let mut report = Report::default();
    let error = session::run(
        region,
        &RunOptions {
            stop_guest: false,
            ..options(Mode::Ping {
                count: 1,
                size: 4000,
            })
        },
        &mut report,
    )
    .expect_err("4000 bytes cannot fit a 4 KiB ring");
    assert_eq!(error.kind, ErrorKind::Usage);
    assert!(
        error.message.contains("--size 4000 is too large"),
        "{error}"
    );
    assert_eq!(report.messages_sent, 0);
    // The failed run marks the peer Stopped, which ends the guest's service.
    guest.join().expect("guest thread").expect("guest service");
}

#[test]
fn garbage_header_is_reported_not_panicked() {
    let memory = heap_memory(3 * 4096);
    for offset in (0..64).step_by(4) {
        memory.store_u32(offset, 0xdead_beef);
    }
    let error = session::attach(memory, &attach_options(Duration::from_millis(50)), None)
        .expect_err("garbage is not a region");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.message.contains("never initialised"), "{error}");
    assert!(
        error.message.contains("bad magic 0xdeadbeefdeadbeef"),
        "{error}"
    );
}

#[test]
fn version_mismatch_names_both_versions() {
    let memory = heap_memory(3 * 4096);
    let region = Region::create(
        memory.clone(),
        Geometry::for_region(3 * 4096).expect("geometry"),
    )
    .expect("create");
    region.set_state(Role::Guest, SideState::Ready);
    // version_major (u16) and version_minor (u16) share the word at offset 8.
    memory.store_u32(8, 7 | (3 << 16));
    let error = session::attach(memory, &attach_options(TIMEOUT), None).expect_err("version 7");
    assert_eq!(error.kind, ErrorKind::Attach);
    assert!(error.message.contains("region has 7.3"), "{error}");
    assert!(error.message.contains("this side speaks 1."), "{error}");
}

#[test]
fn garbage_in_the_ring_is_a_protocol_error() {
    let bytes = 3 * 4096;
    let memory = heap_memory(bytes);
    let region = Region::create(
        memory.clone(),
        Geometry::for_region(bytes).expect("geometry"),
    )
    .expect("create");
    region.set_state(Role::Guest, SideState::Ready);
    let peer_region = attach_to_passive_guest(&region, memory.clone());
    // A "guest" that publishes a producer index claiming more bytes than the ring holds:
    // ring 0 (guest -> peer) producer index lives at 0x80.
    memory.store_u32(0x80, 0x7777_7778);
    let mut report = Report::default();
    let error = session::run(
        peer_region,
        &RunOptions {
            stop_guest: false,
            ..options(Mode::Ping { count: 5, size: 16 })
        },
        &mut report,
    )
    .expect_err("garbage index");
    assert_eq!(error.kind, ErrorKind::Protocol);
    assert!(
        error.message.contains("protocol error on ring 0"),
        "{error}"
    );
    assert!(report.protocol_errors >= 1);
    assert!(!report.passed());
    assert_eq!(region.state(Role::Peer), Ok(SideState::Stopped));
}

#[test]
fn garbage_records_are_a_protocol_error() {
    let bytes = 3 * 4096;
    let memory = heap_memory(bytes);
    let region = Region::create(
        memory.clone(),
        Geometry::for_region(bytes).expect("geometry"),
    )
    .expect("create");
    region.set_state(Role::Guest, SideState::Ready);
    let peer_region = attach_to_passive_guest(&region, memory.clone());
    // Ring 0's data area (0x1000) holds a record with an unknown kind, then the producer index
    // (0x80) publishes it.
    memory.store_u64(0x1000, 16 | (9 << 32));
    memory.store_u32(0x80, 24);
    let mut report = Report::default();
    let error = session::run(
        peer_region,
        &RunOptions {
            stop_guest: false,
            ..options(Mode::Stream {
                count: 3,
                size: 16,
                direction: Direction::FromGuest,
            })
        },
        &mut report,
    )
    .expect_err("bad record");
    assert_eq!(error.kind, ErrorKind::Protocol);
    assert!(error.message.contains("bad record"), "{error}");
}

#[test]
fn guest_that_stops_mid_run_is_detected() {
    let bytes = 3 * 4096;
    let memory = heap_memory(bytes);
    let region = Region::create(
        memory.clone(),
        Geometry::for_region(bytes).expect("geometry"),
    )
    .expect("create");
    region.set_state(Role::Guest, SideState::Ready);
    let peer_region = attach_to_passive_guest(&region, memory.clone());
    // Nobody serves: the guest's state says Stopped, the peer must not wait for the timeout.
    region.set_state(Role::Guest, SideState::Stopped);
    let mut report = Report::default();
    let error = session::run(
        peer_region,
        &RunOptions {
            stop_guest: false,
            ..options(Mode::Ping { count: 3, size: 8 })
        },
        &mut report,
    )
    .expect_err("guest stopped");
    assert!(error.message.contains("left the Ready state"), "{error}");
    assert!(!report.passed());
}

/// Reads the next message the peer sent (as the guest), waiting at most [`TIMEOUT`]; its op.
fn guest_receive<M: SharedMemory>(consumer: &mut sramlink_ring::Consumer<M>) -> Option<Op> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        let op = match consumer.read().expect("peer->guest ring") {
            Some(slot) => {
                let op = proto::read_header(&slot).and_then(|header| header.op());
                slot.release();
                op
            }
            None => {
                thread::yield_now();
                continue;
            }
        };
        consumer.publish();
        return op;
    }
    None
}

/// A scripted guest: waits for the StreamRequest, sends `size`-byte Data messages numbered
/// `seqs` (all published at once), then answers Stop with `stats`.
fn spawn_scripted_guest(
    memory: HeapMemory,
    seqs: Vec<u64>,
    size: usize,
    stats: proto::Stats,
) -> JoinHandle<()> {
    let geometry = Geometry::for_region(memory.len()).expect("geometry");
    let region = Region::create(memory, geometry).expect("create");
    region.set_state(Role::Guest, SideState::Ready);
    let session = acknowledge_first_session(region);
    thread::spawn(move || {
        let (mut producer, mut consumer) = session.join().expect("session");
        assert_eq!(guest_receive(&mut consumer), Some(Op::StreamRequest));
        for seq in seqs {
            let mut slot = producer.reserve(HEADER_LEN + size).expect("room");
            assert!(proto::write_pattern_message(&mut slot, Op::Data, seq, size));
            slot.commit();
        }
        producer.publish();
        assert_eq!(guest_receive(&mut consumer), Some(Op::Stop));
        proto::send_message(&mut producer, Op::Stats, 0, &stats.encode()).expect("Stats sent");
    })
}

#[test]
fn huge_seq_gaps_saturate_lost_without_panicking() {
    let memory = heap_memory(3 * 4096);
    // Two jumps of nearly 2^64 (a 0 in between restarts the stream), then a Stats saying the
    // guest received nothing: every addition to `lost` after the first one would overflow.
    let guest = spawn_scripted_guest(
        memory.clone(),
        vec![u64::MAX - 1, 0, u64::MAX - 1],
        16,
        proto::Stats::default(),
    );
    let region = session::attach(memory, &attach_options(TIMEOUT), None).expect("attach");
    let mut report = Report::default();
    session::run(
        region,
        &options(Mode::Stream {
            count: 3,
            size: 16,
            direction: Direction::FromGuest,
        }),
        &mut report,
    )
    .expect("the run ends normally");
    guest.join().expect("scripted guest");
    assert_eq!(report.lost, u64::MAX, "{report:#?}");
    assert_eq!(report.messages_received, 3);
    assert_eq!(report.corrupted, 0);
    // The restart (seq 0 in the middle of the stream).
    assert_eq!(report.protocol_errors, 1);
    assert_eq!(report.guest.expect("guest stats").received, 0);
    assert!(!report.passed());
}

/// A hostile guest's memory: once the peer has loaded the checksum word of the first message
/// in ring 0 (the end of its first header read), the header's seq is rewritten.
#[derive(Clone)]
struct RewritesSeqAfterFirstRead {
    inner: HeapMemory,
    /// Region offsets of the first message's seq and checksum words.
    seq: usize,
    checksum: usize,
    rewritten: Arc<AtomicBool>,
}

impl RewritesSeqAfterFirstRead {
    fn after_load(&self, off: usize, size: usize) {
        if (off..off + size).contains(&self.checksum)
            && !self.rewritten.swap(true, Ordering::SeqCst)
        {
            self.inner.store_u64(self.seq, 7);
        }
    }
}

impl SharedMemory for RewritesSeqAfterFirstRead {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        let value = self.inner.load_u32(off);
        self.after_load(off, 4);
        value
    }
    fn store_u32(&self, off: usize, v: u32) {
        self.inner.store_u32(off, v);
    }
    fn load_u64(&self, off: usize) -> u64 {
        let value = self.inner.load_u64(off);
        self.after_load(off, 8);
        value
    }
    fn store_u64(&self, off: usize, v: u64) {
        self.inner.store_u64(off, v);
    }
}

#[test]
fn each_message_header_is_read_once() {
    let bytes = 3 * 4096;
    let memory = heap_memory(bytes);
    let geometry = Geometry::for_region(bytes).expect("geometry");
    // The first record of ring 0: 8-byte record header, then the message header
    // (op, payload_len, seq at +8, checksum at +16).
    let message = geometry.rings[0].data_offset + 8;
    let region = Region::create(memory.clone(), geometry).expect("create");
    region.set_state(Role::Guest, SideState::Ready);
    let session = acknowledge_first_session(region);

    let hostile = RewritesSeqAfterFirstRead {
        inner: memory,
        seq: message + 8,
        checksum: message + 16,
        rewritten: Arc::new(AtomicBool::new(false)),
    };
    let rewritten = Arc::clone(&hostile.rewritten);
    let peer_region = session::attach(hostile, &attach_options(TIMEOUT), None).expect("attach");
    // The session has started: the message below is the session's first.
    let (mut producer, mut consumer) = session.join().expect("session");
    let mut slot = producer.reserve(HEADER_LEN + 16).expect("room");
    assert!(proto::write_pattern_message(&mut slot, Op::Data, 0, 16));
    slot.commit();
    producer.publish();
    // The guest reads the StreamRequest, so the detaching peer finds ring 1 consumed.
    let reader = thread::spawn(move || guest_receive(&mut consumer));
    let mut report = Report::default();
    session::run(
        peer_region,
        &RunOptions {
            stop_guest: false,
            ..options(Mode::Stream {
                count: 1,
                size: 16,
                direction: Direction::FromGuest,
            })
        },
        &mut report,
    )
    .expect("one intact message");
    assert_eq!(
        reader.join().expect("guest reader"),
        Some(Op::StreamRequest)
    );
    assert!(
        rewritten.load(Ordering::SeqCst),
        "the seq was never rewritten"
    );
    // The message was intact when its header was read: judged on that header (seq 0), it is
    // intact and in order. A second read of the header would see seq 7 and call it corrupted.
    assert_eq!(
        (report.lost, report.corrupted, report.protocol_errors),
        (0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(report.messages_received, 1);
}

/// The whole binary path: CLI parsing, `--file` mapping of a shared file (as QEMU's RAM file),
/// attach, run, report; the guest maps the same file separately.
#[test]
fn cli_over_a_shared_file() {
    let page = 4096u64;
    let offset = 4 * page;
    let size = 16 * page;
    let mut file = tempfile::NamedTempFile::new().expect("tempfile");
    file.write_all(&vec![0u8; (offset + size + page) as usize])
        .expect("fill");
    let guest_mapping = MappedRegion::map_file(file.path(), offset, size).expect("guest map");
    let cli = Cli::try_parse_from([
        "sramlink-peer",
        "--file",
        file.path().to_str().expect("utf-8 path"),
        "--offset",
        &format!("{offset:#x}"),
        "--size",
        &size.to_string(),
        "--json",
        "--stop-guest",
        "--timeout",
        "20",
        "echo",
        "--count",
        "500",
        "--size",
        "64",
        "--window",
        "4",
    ])
    .expect("valid command line");
    // The guest's handle borrows its mapping: the scope ends the guest before the mapping.
    let (outcome, guest_stats) = thread::scope(|scope| {
        let guest_memory = guest_mapping.memory().expect("guest handle");
        let guest = scope.spawn(move || serve_guest(guest_memory));
        let outcome = app::execute(&cli);
        let stats = guest.join().expect("guest thread").expect("guest service");
        (outcome, stats)
    });
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(outcome.success());
    assert_eq!(app::exit_code(&outcome), 0);
    assert_eq!(guest_stats.sent, 500);
    let line = outcome.report.json_line();
    let json: serde_json::Value =
        serde_json::from_str(line.strip_prefix("SRAMLINK-REPORT ").expect("marker")).expect("json");
    assert_eq!(json["mode"], "echo");
    assert_eq!(json["messages_received"], 500);
    assert_eq!(json["region_source"], "file");
    assert_eq!(json["region_file_offset"], offset);
    assert_eq!(json["region_size"], size);
    assert_eq!(json["guest"]["sent"], 500);
    assert!(json["rtt"]["p99"].as_u64().is_some());
    drop(guest_mapping);
}

#[test]
fn cli_reports_a_missing_file() {
    let cli = Cli::try_parse_from([
        "sramlink-peer",
        "--file",
        "/nonexistent/sramlink-ram",
        "--size",
        "0x1000",
        "--json",
        "ping",
    ])
    .expect("valid command line");
    let outcome = app::execute(&cli);
    assert!(!outcome.attached);
    assert_eq!(app::exit_code(&outcome), 1);
    let error = outcome.error.expect("error");
    assert_eq!(error.message, "no such file: /nonexistent/sramlink-ram");
    assert!(
        outcome
            .report
            .json_line()
            .contains("\"error\":\"no such file")
    );
}

#[test]
fn cli_refuses_a_base_outside_the_device_tree() {
    let tree = tempfile::tempdir().expect("tempdir");
    let blob = {
        let mut writer = vm_fdt::FdtWriter::new().expect("writer");
        let root = writer.begin_node("").expect("root");
        writer.property_u32("#address-cells", 2).expect("cells");
        writer.property_u32("#size-cells", 2).expect("cells");
        let node = writer.begin_node("sram@7f000000").expect("node");
        writer
            .property_string("compatible", "mmio-sram")
            .expect("compatible");
        writer
            .property_array_u32("reg", &[0, 0x7f00_0000, 0, 0x100_0000])
            .expect("reg");
        writer.end_node(node).expect("end");
        writer.end_node(root).expect("end");
        writer.finish().expect("blob")
    };
    let fdt = tree.path().join("fdt");
    std::fs::write(&fdt, blob).expect("blob file");
    let cli = Cli::try_parse_from([
        "sramlink-peer",
        "--base",
        "0x40000000",
        "--size",
        "0x1000000",
        "--device-tree",
        fdt.to_str().expect("utf-8 path"),
        "ping",
    ])
    .expect("valid command line");
    let outcome = app::execute(&cli);
    let error = outcome.error.expect("refused");
    assert_eq!(error.kind, ErrorKind::Region);
    assert!(
        error
            .message
            .contains("refusing to map 0x40000000+0x1000000"),
        "{error}"
    );
    assert!(
        error
            .message
            .contains("0x7f000000+0x1000000 (/sram@7f000000)"),
        "{error}"
    );
}

#[test]
fn cli_refuses_a_base_without_a_device_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("no-device-tree");
    let cli = Cli::try_parse_from([
        "sramlink-peer",
        "--base",
        "0x7f000000",
        "--size",
        "0x1000000",
        "--device-tree",
        absent.to_str().expect("utf-8 path"),
        "ping",
    ])
    .expect("valid command line");
    let outcome = app::execute(&cli);
    assert!(!outcome.attached);
    assert_eq!(app::exit_code(&outcome), 1);
    let error = outcome.error.expect("refused, not mapped unchecked");
    assert_eq!(error.kind, ErrorKind::Region);
    assert!(
        error
            .message
            .contains("cannot check --base/--size 0x7f000000+0x1000000"),
        "{error}"
    );
    assert!(
        error.message.contains(absent.to_str().expect("utf-8 path")),
        "{error}"
    );
    assert!(error.message.contains("--device-tree FILE"), "{error}");
}
