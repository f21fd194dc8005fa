//! The peer's side of the demo protocol: attach, then ping, echo or stream, then stop.
//!
//! Every mode is the same event loop: send what the mode allows now (echo requests up to the
//! window, data messages, a stream request), receive and check whatever arrived, publish both
//! indices, and when a pass made no progress, wait with the [`Backoff`] policy. The loop never
//! blocks on one direction, so neither ring can deadlock the other. The guest's liveness is
//! bounded by the timeout: no progress for `timeout` ends the run with a timeout error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sramlink_ring::proto::{
    self, FLOOR_GUEST_FLAG, FLOOR_PEER_FLAG, FloorRequest, HEADER_LEN, Op, STATS_LEN, Sequence,
    SequenceTracker, StreamRequest, Verdict,
};
use sramlink_ring::{
    Consumer, Error as RingError, Producer, Region, Role, SendError, SessionStart, SharedMemory,
    SideState,
};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::cli::{Direction, Mode};
use crate::counter::Counter;
use crate::error::{ErrorKind, PeerError};
use crate::evtchn::{Device, EventChannel};
use crate::report::{GuestStats, Report};
use crate::stats::RttSamples;

/// Messages sent or received per pass before switching direction and publishing.
const BATCH: usize = 32;

/// What to do once attached.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// The mode and its parameters.
    pub mode: Mode,
    /// Longest wait for the guest without any progress.
    pub timeout: Duration,
    /// Send Stop at the end and wait for the guest's Stats.
    pub stop_guest: bool,
    /// How to wait when idle.
    pub policy: BackoffPolicy,
    /// Print a progress line to stderr at most this often while messages move.
    pub progress: Option<Duration>,
    /// Longest the guest's heartbeat may stand still before the guest counts as dead.
    pub liveness: Duration,
    /// Sleep on the event channel (when bound) instead of polling with `policy`.
    pub events: bool,
    /// With `events`: how long to keep polling after the last progress before sleeping.
    pub spin: Duration,
}

/// How long a peer that finds `peer_state == Ready` at attach watches the previous peer's
/// heartbeat before it takes over: a live peer beats on every pass of its loop, at least every
/// few milliseconds (its longest sleep is 1 ms), so a heartbeat that stands still this long
/// belongs to a dead peer (ABI §5.8).
pub const TAKEOVER_WINDOW: Duration = Duration::from_millis(250);

/// What attaching produced: the region and, against a 1.1 guest, the session's endpoints.
#[derive(Debug)]
pub struct Attached<M: SharedMemory + Clone> {
    /// The validated region.
    pub region: Region<M>,
    /// The peer's producer (ring 1) and consumer (ring 0).
    pub endpoints: (Producer<M>, Consumer<M>),
    /// The acknowledged session (`None` against a 1.0 guest: no sessions there).
    pub session: Option<SessionStart>,
    /// Things worth telling the user (a 1.0 guest, polling without an event port, ...).
    pub notes: Vec<String>,
    /// The event channel to the guest's published port, when bound.
    pub channel: Option<EventChannel>,
}

/// The event-channel device to bind the guest's port through (see [`attach`]).
#[derive(Debug)]
pub struct EventsSetup {
    /// The open `/dev/xen/evtchn`.
    pub device: Device,
    /// The guest's domain id.
    pub guest_domid: u32,
    /// `--events`: a missing port or a failed bind is an error (otherwise a note, and the peer
    /// polls without being able to wake a sleeping guest).
    pub required: bool,
}

/// Notifies the guest if it is armed (ABI §4.6), after a publication of ours.
pub fn notify_if_armed<M: SharedMemory + Clone>(
    region: &Region<M>,
    channel: Option<&EventChannel>,
) -> Result<(), PeerError> {
    match channel {
        Some(channel) if region.notify_needed(Role::Guest) => channel.notify(),
        _ => Ok(()),
    }
}

/// Options of [`attach`].
#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    /// Longest wait for the header, Ready and the session acknowledgement (each).
    pub timeout: Duration,
    /// Longest the guest's heartbeat may stand still before the guest counts as dead.
    pub liveness: Duration,
    /// How to wait.
    pub policy: BackoffPolicy,
    /// This peer's mapping is cacheable (`Some(true)`), uncached (`Some(false)`), or not
    /// comparable with the guest's (`None`: a host file of an emulated guest, where no cache
    /// stands between the two).
    pub cacheable: Option<bool>,
}

/// Waits until the guest has created the region and declared itself Ready, declares the peer
/// Ready and, against a 1.1 guest, starts a new session (ABI §5.7): everything a previous
/// peer left in either ring is skipped, so this run sees only its own messages.
///
/// A missing magic is waited for (the guest may still be booting); any other header problem
/// fails at once, since the guest writes the magic last. Errors name what was found.
///
/// With `events`, the guest's published event-channel port is bound before anything is
/// written to the ring (so a missing port or a failed bind leaves the guest untouched), and
/// the guest is notified after the session request if it sleeps armed.
pub fn attach<M: SharedMemory + Clone>(
    memory: M,
    options: &AttachOptions,
    events: Option<EventsSetup>,
) -> Result<Attached<M>, PeerError> {
    let start = Instant::now();
    let mut backoff = Backoff::new(options.policy);
    let region = loop {
        let waiting_for = match Region::attach(memory.clone()) {
            Ok(region) => match region.state(Role::Guest) {
                Ok(SideState::Ready) => break region,
                Ok(SideState::Offline) => {
                    "the guest created the region but never declared itself ready".to_string()
                }
                Ok(SideState::Stopped) => {
                    return Err(PeerError::attach(
                        "the guest has already stopped (its state word says Stopped); boot it again",
                    ));
                }
                Err(error) => return Err(ring_error(ErrorKind::Attach, &error)),
            },
            Err(RingError::BadMagic { found }) => format!(
                "the guest never initialised the region (bad magic {found:#018x} at offset 0, \
                 expected {:#018x} \"SRAMLINK\")",
                sramlink_ring::layout::MAGIC
            ),
            Err(error @ RingError::Restarted { .. }) => error.to_string(),
            Err(error) => return Err(ring_error(ErrorKind::Attach, &error)),
        };
        if start.elapsed() >= options.timeout {
            return Err(PeerError::timeout(format!(
                "timed out after {:.1} s waiting for the guest: {waiting_for}",
                options.timeout.as_secs_f64()
            )));
        }
        backoff.idle();
    };
    if let Some(cacheable) = options.cacheable {
        region
            .check_attributes(cacheable)
            .map_err(|error| ring_error(ErrorKind::Attach, &error))?;
    }
    let mut notes = Vec::new();
    if !region.info().sessions() {
        // A 1.0 guest: the endpoints start from the shared indices, as 1.0 says.
        notes.push(format!(
            "the guest speaks ABI 1.{} without sessions: a previous peer's unread messages may \
             reach this run (docs/ABI.md §9)",
            region.info().minor
        ));
        if events.as_ref().is_some_and(|setup| setup.required) {
            return Err(PeerError::events(
                "--events: the guest speaks ABI 1.0, which has no event-channel port: run                  without --events to poll",
            ));
        }
        region.set_state(Role::Peer, SideState::Ready);
        let endpoints = region.endpoints(Role::Peer);
        return Ok(Attached {
            region,
            endpoints,
            session: None,
            notes,
            channel: None,
        });
    }
    let channel = bind_guest_port(&region, events, &mut notes)?;
    let mut liveness = Liveness::new(&region, options.liveness);
    if region.state(Role::Peer) == Ok(SideState::Ready) {
        refuse_a_live_peer(&region, options, &mut liveness)?;
    }
    let pending = region
        .request_session()
        .map_err(|error| ring_error(ErrorKind::Attach, &error))?;
    region.set_state(Role::Peer, SideState::Ready);
    // The guest may sleep armed on its event channel: the request is a publication for it.
    notify_if_armed(&region, channel.as_ref())?;
    let start = Instant::now();
    backoff.reset();
    loop {
        liveness.beat(&region);
        match region.session_started(pending) {
            Ok(Some((session, producer, consumer))) => {
                return Ok(Attached {
                    region,
                    endpoints: (producer, consumer),
                    session: Some(session),
                    notes,
                    channel,
                });
            }
            Ok(None) => {}
            Err(error) => return Err(ring_error(ErrorKind::Protocol, &error)),
        }
        liveness.check(&region, "waiting for the guest to acknowledge our session")?;
        if start.elapsed() >= options.timeout {
            return Err(PeerError::timeout(format!(
                "timed out after {:.1} s waiting for the guest to acknowledge session {} \
                 (its heartbeat is moving: it runs but does not serve)",
                options.timeout.as_secs_f64(),
                pending.session
            )));
        }
        backoff.idle();
    }
}

/// Binds the guest's published port when `events` asks for it (ABI §4.6). Reads the header
/// only: nothing is written to the ring here.
fn bind_guest_port<M: SharedMemory + Clone>(
    region: &Region<M>,
    events: Option<EventsSetup>,
    notes: &mut Vec<String>,
) -> Result<Option<EventChannel>, PeerError> {
    let port = region.event_port();
    let Some(setup) = events else {
        if let Some(port) = port {
            notes.push(format!(
                "the guest publishes event-channel port {port}, but /dev/xen/evtchn is not                  available: this peer cannot wake a guest that sleeps on events"
            ));
        } else {
            notes.push("the guest publishes no event-channel port: both sides poll".to_string());
        }
        return Ok(None);
    };
    let Some(port) = port else {
        if setup.required {
            return Err(PeerError::events(
                "--events: the guest published no event-channel port (the header's event_port                  is 0): it runs without Xen events (its console says why on the                  'sramlink: events:' line); run without --events to poll",
            ));
        }
        notes.push("the guest publishes no event-channel port: both sides poll".to_string());
        return Ok(None);
    };
    match setup.device.bind(setup.guest_domid, port) {
        Ok(channel) => Ok(Some(channel)),
        Err(error) if setup.required => Err(error),
        Err(error) => {
            notes.push(format!("{error}; polling without notifications"));
            Ok(None)
        }
    }
}

/// `peer_state` says Ready: a previous peer was killed, or one still runs. Two peers on one
/// ring break it, so watch the previous peer's heartbeat for [`TAKEOVER_WINDOW`] and refuse if
/// it moves.
fn refuse_a_live_peer<M: SharedMemory + Clone>(
    region: &Region<M>,
    options: &AttachOptions,
    liveness: &mut Liveness,
) -> Result<(), PeerError> {
    let first = region.heartbeat(Role::Peer);
    let start = Instant::now();
    while start.elapsed() < TAKEOVER_WINDOW.min(options.timeout) {
        liveness.check(region, "checking whether a previous peer still runs")?;
        if region.heartbeat(Role::Peer) != first {
            return Err(PeerError::attach(
                "another peer is attached and alive (peer_state Ready, its heartbeat moves); \
                 two peers on one ring would corrupt it: stop the other one first",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// This peer's heartbeat and its judgement of the guest's (ABI §5.8).
struct Liveness {
    own: u32,
    guest_last: u32,
    guest_moved: Instant,
    window: Duration,
}

impl Liveness {
    fn new<M: SharedMemory + Clone>(region: &Region<M>, window: Duration) -> Self {
        Liveness {
            own: region.heartbeat(Role::Peer),
            guest_last: region.heartbeat(Role::Guest),
            guest_moved: Instant::now(),
            window,
        }
    }

    /// Advances our heartbeat word (a plain store).
    fn beat<M: SharedMemory + Clone>(&mut self, region: &Region<M>) {
        self.own = self.own.wrapping_add(1);
        region.beat(Role::Peer, self.own);
    }

    /// The guest is still the one we attached to, Ready, and its heartbeat moved within the
    /// window. `doing` says what we were waiting for, for the error message.
    fn check<M: SharedMemory + Clone>(
        &mut self,
        region: &Region<M>,
        doing: &str,
    ) -> Result<(), PeerError> {
        if let Err(error) = region.check_generation() {
            return Err(PeerError::new(
                ErrorKind::GuestRestarted,
                format!("{error} (while {doing})"),
            ));
        }
        match region.state(Role::Guest) {
            Ok(SideState::Ready) => {}
            Ok(state) => {
                return Err(PeerError::protocol(format!(
                    "the guest left the Ready state (now {state:?}) while {doing}"
                )));
            }
            Err(error) => return Err(ring_error(ErrorKind::Protocol, &error)),
        }
        if !region.info().sessions() {
            return Ok(());
        }
        let heartbeat = region.heartbeat(Role::Guest);
        // A guest asleep under the hold-off (ABI §4.6) does not beat until notified: asleep,
        // not dead.
        if heartbeat != self.guest_last || region.is_waiting(Role::Guest) {
            self.guest_last = heartbeat;
            self.guest_moved = Instant::now();
        } else if self.guest_moved.elapsed() >= self.window {
            return Err(PeerError::timeout(format!(
                "the guest's heartbeat has not moved for {:.1} s while {doing}: the guest is \
                 not running (crashed, powered off or paused), not merely slow",
                self.window.as_secs_f64()
            )));
        }
        Ok(())
    }
}

fn ring_error(kind: ErrorKind, error: &RingError) -> PeerError {
    PeerError::new(kind, error.to_string())
}

/// Runs `options.mode` on an attached region and fills `report`'s counters and figures.
///
/// The report is filled even when the run fails part-way (the error is also returned), so
/// the caller can print what was measured. The peer leaves as ABI §5.4 says (Offline after a
/// clean run, Stopped after `--stop-guest` or a failure), except when the guest re-created the
/// region under it: that header belongs to a new boot and gets no store from us.
pub fn run<M: SharedMemory + Clone>(
    attached: Attached<M>,
    options: &RunOptions,
    report: &mut Report,
) -> Result<(), PeerError> {
    let Attached {
        region,
        endpoints,
        session,
        notes: _,
        channel,
    } = attached;
    report.session = session.map(|session| session.session);
    report.guest_generation = region.info().generation;
    let mut session = Session::new(&region, endpoints, options, channel);
    let result = session.run_mode().and_then(|()| {
        if options.stop_guest {
            session.stop_guest()
        } else {
            // Detaching: the next session skips whatever the guest has not read yet (ABI
            // §5.4 item 1), so wait until it has read everything we sent.
            session.wait_until_consumed()
        }
    });
    session.fill(report);
    report.error = result.as_ref().err().map(ToString::to_string);
    let restarted = matches!(&result, Err(error) if error.kind == ErrorKind::GuestRestarted);
    if !restarted {
        // Our last indices (a faulted endpoint publishes nothing), then the state word.
        session.producer.publish();
        session.consumer.publish();
        let final_state = match &result {
            Ok(()) if !options.stop_guest => SideState::Offline,
            _ => SideState::Stopped,
        };
        region.set_state(Role::Peer, final_state);
        // A guest asleep on events must see our final state (Stopped ends its service).
        let notified = notify_if_armed(&region, session.channel.as_ref());
        return result.and(notified);
    }
    result
}

/// One request waiting for its reply.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    sent_at: u64,
}

/// A checked incoming message.
enum Incoming {
    EchoReply { seq: u64, verdict: Verdict },
    Data { seq: u64, verdict: Verdict },
    Stats(Option<GuestStats>),
    Unexpected,
}

/// What the mode still has to do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    payload: usize,
    echo_total: u64,
    window: usize,
    data_out_total: u64,
    data_in_total: u64,
    stream_request_pending: bool,
}

struct Session<'r, M: SharedMemory + Clone> {
    region: &'r Region<M>,
    liveness: Liveness,
    producer: Producer<M>,
    consumer: Consumer<M>,
    options: RunOptions,
    counter: Counter,
    plan: Plan,
    echo_next: u64,
    echo_done: u64,
    in_flight: VecDeque<InFlight>,
    data_next: u64,
    data_in: SequenceTracker,
    data_in_seen: u64,
    rtt: RttSamples,
    /// The peer's own counters. `lost` grows by amounts taken from the guest's sequence
    /// numbers (untrusted): only through [`proto::Stats::add_lost`], which saturates.
    counts: proto::Stats,
    data_messages: u64,
    first_send: Option<u64>,
    last_activity: u64,
    /// `last_activity` when the mode finished (before Stop/Stats).
    mode_end: Option<u64>,
    guest: Option<GuestStats>,
    /// The bound event channel (notifies the guest; with `options.events`, also waited on).
    channel: Option<EventChannel>,
    /// Events received from the guest, and sent to it.
    events_received: u64,
    events_sent: u64,
}

impl<'r, M: SharedMemory + Clone> Session<'r, M> {
    fn new(
        region: &'r Region<M>,
        (producer, consumer): (Producer<M>, Consumer<M>),
        options: &RunOptions,
        channel: Option<EventChannel>,
    ) -> Self {
        let plan = match options.mode {
            Mode::Idle { .. } | Mode::Floor { .. } => Plan {
                payload: 0,
                echo_total: 0,
                window: 0,
                data_out_total: 0,
                data_in_total: 0,
                stream_request_pending: false,
            },
            Mode::Ping { count, size } => Plan {
                payload: size as usize,
                echo_total: count,
                window: 1,
                data_out_total: 0,
                data_in_total: 0,
                stream_request_pending: false,
            },
            Mode::Echo {
                count,
                size,
                window,
            } => Plan {
                payload: size as usize,
                echo_total: count,
                window: window as usize,
                data_out_total: 0,
                data_in_total: 0,
                stream_request_pending: false,
            },
            Mode::Stream {
                count,
                size,
                direction,
            } => {
                let to_guest = matches!(direction, Direction::ToGuest | Direction::Both);
                let from_guest = matches!(direction, Direction::FromGuest | Direction::Both);
                Plan {
                    payload: size as usize,
                    echo_total: 0,
                    window: 0,
                    data_out_total: if to_guest { count } else { 0 },
                    data_in_total: if from_guest { count } else { 0 },
                    stream_request_pending: from_guest,
                }
            }
        };
        let timed = match options.mode {
            Mode::Floor { count } => u64::from(count),
            _ => plan.echo_total,
        };
        let rtt_capacity = usize::try_from(timed).unwrap_or(0).min(1 << 24);
        Session {
            region,
            liveness: Liveness::new(region, options.liveness),
            producer,
            consumer,
            options: *options,
            counter: Counter::new(),
            plan,
            echo_next: 0,
            echo_done: 0,
            in_flight: VecDeque::with_capacity(plan.window),
            data_next: 0,
            data_in: SequenceTracker::new(),
            data_in_seen: 0,
            rtt: RttSamples::with_capacity(rtt_capacity),
            counts: proto::Stats::default(),
            data_messages: 0,
            first_send: None,
            last_activity: 0,
            mode_end: None,
            guest: None,
            channel,
            events_received: 0,
            events_sent: 0,
        }
    }

    /// Notifies the guest if it sleeps armed (after a publication of ours).
    fn notify_guest(&mut self) -> Result<(), PeerError> {
        if let Some(channel) = &self.channel {
            if self.region.notify_needed(Role::Guest) {
                channel.notify()?;
                self.events_sent += 1;
            }
        }
        Ok(())
    }

    /// One send and one receive pass with their publications; whether either made progress.
    fn pass(&mut self) -> Result<bool, PeerError> {
        let sent = self.send_pass()?;
        self.producer.publish();
        let received = self.receive_pass(false)?;
        self.consumer.publish();
        if sent || received {
            self.notify_guest()?;
        }
        Ok(sent || received)
    }

    /// Arms, looks again, and sleeps on the event channel if nothing changed (ABI §4.6);
    /// whether the re-check made progress. Sleeps at most `limit`.
    fn sleep_on_events(&mut self, limit: Duration) -> Result<bool, PeerError> {
        self.region.arm(Role::Peer);
        let progress = self.pass();
        if !matches!(progress, Ok(false)) {
            self.region.disarm(Role::Peer);
            return progress;
        }
        let woken = match self.channel.as_mut() {
            Some(channel) => channel.wait(limit),
            None => Ok(false),
        };
        self.region.disarm(Role::Peer);
        if woken? {
            self.events_received += 1;
        }
        Ok(false)
    }

    /// Refuses payloads that cannot fit the rings before anything is sent.
    fn check_sizes(&self) -> Result<(), PeerError> {
        let outgoing = self.producer.max_message_len();
        let incoming = self.consumer.max_message_len();
        let limit = outgoing.min(incoming).saturating_sub(HEADER_LEN);
        if self.plan.payload > limit {
            return Err(PeerError::usage(format!(
                "--size {} is too large: the rings carry at most {limit} payload bytes per \
                 message ({outgoing} bytes peer->guest, {incoming} bytes guest->peer, {HEADER_LEN}-byte \
                 header included)",
                self.plan.payload
            )));
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.echo_done == self.plan.echo_total
            && self.data_next == self.plan.data_out_total
            && self.data_in.expected() >= self.plan.data_in_total
            && !self.plan.stream_request_pending
    }

    /// Waits `seconds` with nothing to exchange, as the policy says; anything that arrives
    /// is a protocol error (the guest sends only answers).
    fn idle_window(&mut self, seconds: Duration) -> Result<(), PeerError> {
        let mut backoff = Backoff::new(self.options.policy);
        let wait_on_events = self.options.events && self.channel.is_some();
        println!("SRAMLINK-IDLE: begin");
        let start = Instant::now();
        while start.elapsed() < seconds {
            if self.pass()? {
                return Err(PeerError::protocol(
                    "the guest sent a message during the idle window",
                ));
            }
            if wait_on_events {
                self.sleep_on_events(seconds.saturating_sub(start.elapsed()))?;
            } else {
                backoff.idle();
            }
        }
        println!("SRAMLINK-IDLE: end");
        Ok(())
    }

    fn run_mode(&mut self) -> Result<(), PeerError> {
        if let Mode::Idle { seconds } = self.options.mode {
            return self.idle_window(seconds);
        }
        if let Mode::Floor { count } = self.options.mode {
            return self.floor(count);
        }
        self.check_sizes()?;
        let mut backoff = Backoff::new(self.options.policy);
        let mut last_progress = Instant::now();
        let mut last_report = last_progress;
        let wait_on_events = self.options.events && self.channel.is_some();
        while !self.finished() {
            self.liveness.beat(self.region);
            if self.pass()? {
                backoff.reset();
                last_progress = Instant::now();
                if self
                    .options
                    .progress
                    .is_some_and(|every| last_progress.duration_since(last_report) >= every)
                {
                    last_report = last_progress;
                    eprintln!(
                        "sramlink-peer: progress: {} {} sent, {} received",
                        self.options.mode.name(),
                        self.counts.sent,
                        self.counts.received
                    );
                }
                continue;
            }
            if let Err(error) = self.check_guest_alive() {
                self.count_outstanding_as_lost();
                return Err(error);
            }
            if last_progress.elapsed() >= self.options.timeout {
                return Err(self.mode_timeout());
            }
            if !wait_on_events {
                backoff.idle();
            } else if last_progress.elapsed() < self.options.spin {
                core::hint::spin_loop();
            } else {
                // Sleep in slices short enough to keep judging the guest's liveness.
                let limit = self
                    .options
                    .timeout
                    .saturating_sub(last_progress.elapsed())
                    .min(self.options.liveness / 4);
                if self.sleep_on_events(limit)? {
                    backoff.reset();
                    last_progress = Instant::now();
                }
            }
        }
        self.mode_end = Some(self.last_activity);
        Ok(())
    }

    /// The bare-flag floor (ABI §7.4): one FloorRequest, then `count` rounds of storing the
    /// round's value into our flag word and polling the guest's until it echoes it, each
    /// timed like a ping. No barrier: each word has one writer and carries no other data, so
    /// per-location coherence of an aligned 32-bit word is all a round relies on (the rings'
    /// barriers order the request before the rounds: our store of `start` comes before the
    /// request's publication, and the guest reads the request before it looks at our word).
    fn floor(&mut self, count: u32) -> Result<(), PeerError> {
        let memory = self.region.memory();
        // No round's value is in either word yet: the guest's holds `start`, ours too.
        let start = memory.load_u32(FLOOR_GUEST_FLAG);
        memory.store_u32(FLOOR_PEER_FLAG, start);
        let request = FloorRequest { count, start };
        let asked_at = Instant::now();
        loop {
            match proto::send_message(&mut self.producer, Op::FloorRequest, 0, &request.encode()) {
                Ok(()) => break,
                Err(SendError::Full) if asked_at.elapsed() < self.options.timeout => {
                    std::thread::yield_now();
                }
                Err(SendError::Full) => {
                    return Err(PeerError::timeout("no room for the FloorRequest"));
                }
                Err(error) => return Err(send_error(&error)),
            }
        }
        self.note_send();
        // The guest may be asleep on events: the request is a publication it must see.
        self.notify_guest()?;
        for round in 1..=count {
            let value = request.value(round);
            let sent_at = self.counter.now();
            memory.store_u32(FLOOR_PEER_FLAG, value);
            let mut polls = 0u32;
            // Set on the first slow poll only: a clock read per round would be timed too.
            let mut waiting_since = None;
            while memory.load_u32(FLOOR_GUEST_FLAG) != value {
                polls = polls.wrapping_add(1);
                if polls % 4096 == 0 {
                    self.liveness.beat(self.region);
                    self.check_guest_alive()?;
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.options.timeout {
                        return Err(PeerError::timeout(format!(
                            "floor: no echo of round {round} of {count} for {:.1} s",
                            self.options.timeout.as_secs_f64()
                        )));
                    }
                }
                core::hint::spin_loop();
            }
            let now = self.counter.now();
            self.rtt.record(now.saturating_sub(sent_at));
            self.last_activity = now;
        }
        self.mode_end = Some(self.last_activity);
        Ok(())
    }

    /// Sends what the plan allows now; whether anything was sent.
    fn send_pass(&mut self) -> Result<bool, PeerError> {
        let mut any = false;
        if self.plan.stream_request_pending {
            let request = StreamRequest {
                count: self.plan.data_in_total,
                size: self.plan.payload as u32,
            };
            match proto::send_message(&mut self.producer, Op::StreamRequest, 0, &request.encode()) {
                Ok(()) => {
                    self.note_send();
                    self.plan.stream_request_pending = false;
                    any = true;
                }
                Err(SendError::Full) => return Ok(any),
                Err(error) => return Err(send_error(&error)),
            }
        }
        for _ in 0..BATCH {
            if self.echo_next == self.plan.echo_total || self.in_flight.len() >= self.plan.window {
                break;
            }
            let sent_at = self.counter.now();
            if !self.send_pattern(Op::EchoRequest, self.echo_next)? {
                break;
            }
            self.in_flight.push_back(InFlight {
                seq: self.echo_next,
                sent_at,
            });
            self.echo_next += 1;
            any = true;
        }
        for _ in 0..BATCH {
            if self.data_next == self.plan.data_out_total {
                break;
            }
            if !self.send_pattern(Op::Data, self.data_next)? {
                break;
            }
            self.data_next += 1;
            self.data_messages += 1;
            any = true;
        }
        Ok(any)
    }

    /// Writes one pattern message (not yet published); false when the ring is full.
    fn send_pattern(&mut self, op: Op, seq: u64) -> Result<bool, PeerError> {
        let size = self.plan.payload;
        let mut slot = match self.producer.reserve(HEADER_LEN + size) {
            Ok(slot) => slot,
            Err(SendError::Full) => return Ok(false),
            Err(error) => return Err(send_error(&error)),
        };
        if !proto::write_pattern_message(&mut slot, op, seq, size) {
            return Err(PeerError::protocol(format!(
                "a reserved slot of {} bytes did not take a {}-byte message",
                slot.capacity(),
                HEADER_LEN + size
            )));
        }
        slot.commit();
        self.note_send();
        Ok(true)
    }

    fn note_send(&mut self) {
        self.counts.sent += 1;
        let now = self.counter.now();
        self.first_send.get_or_insert(now);
        self.last_activity = now;
    }

    /// Receives and checks up to [`BATCH`] messages; whether any arrived. With `want_stats`
    /// the pass stops at the guest's Stats message.
    fn receive_pass(&mut self, want_stats: bool) -> Result<bool, PeerError> {
        let mut any = false;
        for _ in 0..BATCH {
            let Some(incoming) = self.receive_one()? else {
                break;
            };
            any = true;
            match incoming {
                Incoming::EchoReply { seq, verdict } => self.on_echo_reply(seq, verdict),
                Incoming::Data { seq, verdict } => self.on_data(seq, verdict),
                Incoming::Stats(stats) if want_stats => {
                    match stats {
                        Some(stats) => self.guest = Some(stats),
                        None => self.counts.protocol_errors += 1,
                    }
                    return Ok(true);
                }
                Incoming::Stats(_) | Incoming::Unexpected => {
                    self.counts.received += 1;
                    self.counts.protocol_errors += 1;
                }
            }
        }
        Ok(any)
    }

    /// Reads, checks and releases the next message.
    fn receive_one(&mut self) -> Result<Option<Incoming>, PeerError> {
        let slot = match self.consumer.read() {
            Ok(Some(slot)) => slot,
            Ok(None) => return Ok(None),
            Err(error) => {
                self.counts.protocol_errors += 1;
                return Err(ring_error(ErrorKind::Protocol, &error));
            }
        };
        // The header is read from shared memory once; its op, its seq and the payload checks
        // below all use this copy (the guest may rewrite the slot while we look at it).
        let incoming = match proto::read_header(&slot) {
            None => Incoming::Unexpected,
            Some(header) => match header.op() {
                Some(Op::EchoReply) => Incoming::EchoReply {
                    seq: header.seq,
                    verdict: proto::verify_pattern_payload(&slot, &header),
                },
                Some(Op::Data) => Incoming::Data {
                    seq: header.seq,
                    verdict: proto::verify_pattern_payload(&slot, &header),
                },
                Some(Op::Stats) => {
                    // One copy of the payload: the checksum and the decoding see the same bytes.
                    let mut payload = [0u8; STATS_LEN];
                    let stats = (slot.len() == HEADER_LEN + STATS_LEN)
                        .then(|| slot.read(HEADER_LEN, &mut payload))
                        .filter(|_| proto::checksum(&payload) == header.checksum)
                        .and_then(|_| proto::Stats::decode(&payload))
                        .map(|stats| GuestStats {
                            received: stats.received,
                            sent: stats.sent,
                            corrupted: stats.corrupted,
                            lost: stats.lost,
                            protocol_errors: stats.protocol_errors,
                        });
                    Incoming::Stats(stats)
                }
                _ => Incoming::Unexpected,
            },
        };
        slot.release();
        self.last_activity = self.counter.now();
        Ok(Some(incoming))
    }

    /// Counts a bad verdict; true when the message is intact with the expected size.
    fn check_verdict(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Intact(header) if header.payload_len as usize == self.plan.payload => true,
            Verdict::Intact(_) | Verdict::Corrupted(_) => {
                self.counts.corrupted += 1;
                false
            }
            Verdict::Malformed => {
                self.counts.protocol_errors += 1;
                false
            }
        }
    }

    fn on_echo_reply(&mut self, seq: u64, verdict: Verdict) {
        self.counts.received += 1;
        let now = self.counter.now();
        self.check_verdict(verdict);
        // Replies come back in request order: everything in flight before `seq` was lost.
        if !self.in_flight.iter().any(|request| request.seq == seq) {
            // Not outstanding: a duplicate, an old reply, or one never asked for.
            self.counts.protocol_errors += 1;
            return;
        }
        while let Some(request) = self.in_flight.pop_front() {
            self.echo_done += 1;
            if request.seq == seq {
                self.rtt.record(now.wrapping_sub(request.sent_at));
                self.data_messages += 2;
                break;
            }
            self.counts.add_lost(1);
        }
    }

    fn on_data(&mut self, seq: u64, verdict: Verdict) {
        self.counts.received += 1;
        self.check_verdict(verdict);
        if self.plan.data_in_total == 0 {
            // Data nobody asked for.
            self.counts.protocol_errors += 1;
            return;
        }
        self.data_in_seen += 1;
        self.data_messages += 1;
        match self.data_in.observe(seq) {
            Sequence::InOrder => {}
            // `missing` comes from the guest's seq: up to nearly 2^64, any number of times.
            Sequence::Gap(missing) => self.counts.add_lost(missing),
            Sequence::Restart | Sequence::Backwards => self.counts.protocol_errors += 1,
        }
    }

    /// Fails fast when the guest stopped, restarted, stopped beating or its state word went
    /// bad while we wait.
    fn check_guest_alive(&mut self) -> Result<(), PeerError> {
        let doing = format!("running: {}", self.outstanding());
        self.liveness.check(self.region, &doing)
    }

    fn outstanding(&self) -> String {
        format!(
            "{} echo replies outstanding ({} of {} requests sent), {} of {} data messages from \
             the guest received{}, {} of {} sent",
            self.in_flight.len(),
            self.echo_next,
            self.plan.echo_total,
            self.data_in.expected().min(self.plan.data_in_total),
            self.plan.data_in_total,
            if self.plan.stream_request_pending {
                " (stream not yet requested)"
            } else {
                ""
            },
            self.data_next,
            self.plan.data_out_total
        )
    }

    /// The timeout error of the main loop; what never came is counted as lost.
    fn mode_timeout(&mut self) -> PeerError {
        let error = PeerError::timeout(format!(
            "no progress for {:.1} s, the guest stopped answering: {}",
            self.options.timeout.as_secs_f64(),
            self.outstanding()
        ));
        self.count_outstanding_as_lost();
        error
    }

    /// When the run ends early: requests sent without a reply, and data of a stream we did
    /// request but never received, are lost (what was never sent or asked for is not).
    fn count_outstanding_as_lost(&mut self) {
        // `lost` may already be saturated by a gap in the guest's seq.
        self.counts.add_lost(self.in_flight.len() as u64);
        self.in_flight.clear();
        if !self.plan.stream_request_pending {
            self.counts.add_lost(
                self.plan
                    .data_in_total
                    .saturating_sub(self.data_in.expected()),
            );
        }
    }

    /// Waits (bounded by the timeout, watching the guest) until the guest has released
    /// everything we published on ring 1.
    fn wait_until_consumed(&mut self) -> Result<(), PeerError> {
        self.producer.publish();
        let memory = self.region.memory();
        let ours = memory.load_u32(sramlink_ring::layout::producer_index_offset(1));
        let mut backoff = Backoff::new(self.options.policy);
        let start = Instant::now();
        loop {
            self.liveness.beat(self.region);
            if memory.load_u32(sramlink_ring::layout::consumer_index_offset(1)) == ours {
                return Ok(());
            }
            self.check_guest_alive()?;
            if start.elapsed() >= self.options.timeout {
                return Err(PeerError::timeout(format!(
                    "timed out after {:.1} s waiting for the guest to read the last of our \
                     messages before detaching",
                    self.options.timeout.as_secs_f64()
                )));
            }
            backoff.idle();
        }
    }

    /// Sends Stop, waits for the guest's Stats.
    fn stop_guest(&mut self) -> Result<(), PeerError> {
        let mut backoff = Backoff::new(self.options.policy);
        let start = Instant::now();
        loop {
            self.liveness.beat(self.region);
            match proto::send_message(&mut self.producer, Op::Stop, 0, &[]) {
                Ok(()) => {
                    self.notify_guest()?;
                    break;
                }
                Err(SendError::Full) => {}
                Err(error) => return Err(send_error(&error)),
            }
            // Make room: the guest may be blocked on our full incoming ring.
            let received = self.receive_pass(true)?;
            self.consumer.publish();
            if received {
                self.notify_guest()?;
            }
            if !received {
                self.check_guest_alive()?;
            }
            if start.elapsed() >= self.options.timeout {
                return Err(PeerError::timeout(format!(
                    "timed out after {:.1} s sending Stop: the peer->guest ring stayed full",
                    self.options.timeout.as_secs_f64()
                )));
            }
            if !received {
                backoff.idle();
            }
        }
        backoff.reset();
        let start = Instant::now();
        while self.guest.is_none() {
            self.liveness.beat(self.region);
            let received = self.receive_pass(true)?;
            self.consumer.publish();
            if received {
                self.notify_guest()?;
                backoff.reset();
                continue;
            }
            if let Err(error) = self.check_guest_alive() {
                // The guest publishes Stats before it stores Stopped (ABI §5.4), and the state
                // load acquires: having seen Stopped, one more look finds the Stats if it was
                // sent at all.
                self.receive_pass(true)?;
                self.consumer.publish();
                if self.guest.is_some() {
                    break;
                }
                return Err(error);
            }
            if start.elapsed() >= self.options.timeout {
                return Err(PeerError::timeout(format!(
                    "timed out after {:.1} s waiting for the guest's Stats after Stop",
                    self.options.timeout.as_secs_f64()
                )));
            }
            backoff.idle();
        }
        if let Some(guest) = self.guest {
            // The guest counts Stop among what it received: anything less means messages of
            // ours never reached it.
            // `guest.received` is the guest's word; `lost` may already be saturated.
            self.counts.add_lost(
                self.counts
                    .sent
                    .saturating_add(1)
                    .saturating_sub(guest.received),
            );
        }
        Ok(())
    }

    fn fill(&self, report: &mut Report) {
        report.messages_sent = self.counts.sent;
        report.messages_received = self.counts.received;
        report.lost = self.counts.lost;
        report.corrupted = self.counts.corrupted;
        report.protocol_errors = self.counts.protocol_errors;
        report.rtt = self.rtt.summary();
        report.rtt_histogram = self.rtt.histogram();
        report.counter_hz = self.counter.frequency_hz();
        report.max_message_bytes = self.producer.max_message_len() as u64;
        report.guest = self.guest;
        report.events_received = self.events_received;
        report.events_sent = self.events_sent;
        if let Some(first) = self.first_send {
            let end = self.mode_end.unwrap_or(self.last_activity);
            report.elapsed_ticks = end.saturating_sub(first);
        }
        if report.elapsed_ticks > 0 {
            let seconds = report.elapsed_ticks as f64 / report.counter_hz as f64;
            report.messages_per_second = self.data_messages as f64 / seconds;
            report.payload_bytes_per_second =
                self.data_messages as f64 * self.plan.payload as f64 / seconds;
        }
    }
}

fn send_error(error: &SendError) -> PeerError {
    match error {
        SendError::Protocol(error) => ring_error(ErrorKind::Protocol, error),
        other => PeerError::protocol(other.to_string()),
    }
}
