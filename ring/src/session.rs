//! Sessions and notification words (ABI 1.1): a peer attaching starts a session the guest
//! acknowledges, and the hold-off that lets a side sleep without losing a wake-up.
//!
//! ```text
//!  peer                                           guest (each pass of its loop)
//!  P1 = ring[1].producer (own index)
//!  session_ring1_start = P1, session_generation
//!  FULL; session_request = S  ─────────────────►  S' = session_request != acked?
//!                                                 ACQUIRE; generation, P1; ACQUIRE; S' again
//!                                                 publish both rings (old session's last work)
//!                                                 drop the old stream, reset sequence trackers
//!                                                 ring[1].consumer = P1 (skip what is left)
//!                                                 G0 = ring[0].producer (own, published)
//!  session_ack == S? ACQUIRE; G0  ◄─────────────  session_ring0_start = G0; STORESTORE; ack = S
//!  ring[0].consumer = G0 (skip what is left)
//!  both endpoints start at P1 / G0: nothing older is ever read
//! ```
//!
//! Everything a previous session left in either ring lies before `P1` (ring 1) or before `G0`
//! (ring 0) and is skipped by position, never parsed; everything of the new session lies after
//! them. The peer publishes nothing on ring 1 before the acknowledgement, so the guest cannot
//! mistake a new-session message for an old one.

use crate::error::Error;
use crate::layout::{
    self, NO_EVENT_PORT, OFF_EVENT_PORT, OFF_GUEST_WAITING, OFF_PEER_WAITING, OFF_SESSION_ACK,
    OFF_SESSION_GENERATION, OFF_SESSION_REQUEST, OFF_SESSION_RING0_START, OFF_SESSION_RING1_START,
};
use crate::memory::{Fence, SharedMemory};
use crate::region::{Direction, Region, Role};
use crate::ring::{Consumer, Producer, RingLayout};

/// A session request as the guest read it (consistent: the seqlock re-check passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRequest {
    /// The session number (never 0).
    pub session: u32,
    /// Ring 1 position where the session's messages start.
    pub ring1_start: u32,
}

/// A session the peer has asked for and waits to see acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSession {
    /// The number asked for.
    pub session: u32,
    /// Ring 1 position where our messages will start.
    pub ring1_start: u32,
}

/// Where an acknowledged session starts in both rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStart {
    /// The session number.
    pub session: u32,
    /// Ring 0 (guest → peer) position of the session's first message.
    pub ring0_start: u32,
    /// Ring 1 (peer → guest) position of the session's first message.
    pub ring1_start: u32,
}

impl<M: SharedMemory + Clone> Region<M> {
    fn require_sessions(&self) -> Result<u32, Error> {
        self.info().generation.ok_or(Error::BadHeader {
            field: "version_minor (no session words before 1.1)",
            value: u64::from(self.info().minor),
        })
    }

    /// Guest: the session request the peer has posted, if it differs from `acked`, is for this
    /// header's generation and was read consistently; `None` otherwise (nothing new, a stale
    /// request of a peer of a previous boot, or a request being rewritten: look again later).
    pub fn pending_session(&self, acked: u32) -> Option<SessionRequest> {
        let generation = self.info().generation?;
        let memory = self.memory();
        let session = memory.load_u32(OFF_SESSION_REQUEST);
        if session == acked || session == 0 {
            return None;
        }
        // Barrier: the request load before the loads of the words it publishes (pairs with the
        // peer's FULL before storing the request). Without it loom's
        // `session_discards_the_old_session` reads a stale ring-1 start (checked by removing it).
        memory.fence(Fence::Acquire);
        let for_generation = memory.load_u32(OFF_SESSION_GENERATION);
        let ring1_start = memory.load_u32(OFF_SESSION_RING1_START);
        // Barrier: those loads before the re-check load below (seqlock: a peer rewriting the
        // words between our loads is caught by a changed request). Load→load; ISH.
        memory.fence(Fence::Acquire);
        if memory.load_u32(OFF_SESSION_REQUEST) != session || for_generation != generation {
            return None;
        }
        Some(SessionRequest {
            session,
            ring1_start,
        })
    }

    /// Guest: starts `request`'s session. Call after publishing both endpoints of the old
    /// session (their work is the last of it). Skips what is left in ring 1 before the
    /// request's start, stores the acknowledgement and returns fresh endpoints at the
    /// session's start positions.
    pub fn acknowledge_session(
        &self,
        request: SessionRequest,
    ) -> Result<(SessionStart, Producer<M>, Consumer<M>), Error> {
        self.require_sessions()?;
        let memory = self.memory();
        let ring0 = self.ring_layout(Direction::GuestToPeer);
        let ring1 = self.ring_layout(Direction::PeerToGuest);
        let ring1_bytes = self.geometry().ring(Direction::PeerToGuest).data_bytes as u32;
        // Our own indices: we are their only writer and have just published them.
        let ring0_start = memory.load_u32(layout::producer_index_offset(0));
        let released = memory.load_u32(layout::consumer_index_offset(1));
        let produced = memory.load_u32(layout::producer_index_offset(1));
        // Barrier: the ring-1 producer-index load before the consumer-index store below and
        // before the loads of records after the start. Load→load/store; ISH.
        memory.fence(Fence::Acquire);
        let start = request.ring1_start;
        // The start must be a record boundary between what we released and what was published.
        if start % 8 != 0
            || produced.wrapping_sub(released) > ring1_bytes
            || start.wrapping_sub(released) > produced.wrapping_sub(released)
        {
            return Err(Error::BadSession {
                field: "session_ring1_start",
                value: start,
                reason: "not between the guest's consumer index and the peer's producer index",
            });
        }
        // Barrier: our loads of the old session's records before the consumer-index store that
        // hands their space to the new peer. Load→store (`dmb ishld`); ISH.
        memory.fence(Fence::LoadStore);
        memory.store_u32(layout::consumer_index_offset(1), start);
        memory.store_u32(OFF_SESSION_RING0_START, ring0_start);
        // Barrier: the consumer index and the ring-0 start (and our last ring-0 publish) before
        // the acknowledgement; the peer acquires after loading it. Without it loom's
        // `session_discards_the_old_session` lets the peer start from a stale ring-0 start
        // (checked by removing it). Store→store; ISH.
        memory.fence(Fence::StoreStore);
        memory.store_u32(OFF_SESSION_ACK, request.session);
        let session = SessionStart {
            session: request.session,
            ring0_start,
            ring1_start: start,
        };
        // Ring 0 counts as empty: the new peer skips everything before `ring0_start`.
        let producer = Producer::starting_at(memory.clone(), ring0, ring0_start, ring0_start);
        let consumer = Consumer::starting_at(memory.clone(), ring1, start, start);
        Ok((session, producer, consumer))
    }

    /// Peer: posts a request for a new session, starting ring 1 where the previous peer's last
    /// publish left it. Publish nothing on ring 1 until [`Region::session_started`] says yes.
    pub fn request_session(&self) -> Result<PendingSession, Error> {
        let generation = self.require_sessions()?;
        let memory = self.memory();
        let previous = memory.load_u32(OFF_SESSION_REQUEST);
        let acked = memory.load_u32(OFF_SESSION_ACK);
        let mut session = previous.wrapping_add(1);
        while session == 0 || session == acked {
            session = session.wrapping_add(1);
        }
        let ring1_start = memory.load_u32(layout::producer_index_offset(1));
        memory.store_u32(OFF_SESSION_GENERATION, generation);
        memory.store_u32(OFF_SESSION_RING1_START, ring1_start);
        // Barrier: the ring-1 producer-index load and the two stores above before the request
        // store (the guest acquires after loading the request, then checks the start against
        // the index it loads). Load and store → store: FULL (`dmb ish`); ISH.
        memory.fence(Fence::Full);
        memory.store_u32(OFF_SESSION_REQUEST, session);
        Ok(PendingSession {
            session,
            ring1_start,
        })
    }

    /// Peer: whether the guest acknowledged `pending`; if so, skips what is left in ring 0
    /// before the session's start and returns the peer's endpoints at the start positions.
    #[allow(clippy::type_complexity)]
    pub fn session_started(
        &self,
        pending: PendingSession,
    ) -> Result<Option<(SessionStart, Producer<M>, Consumer<M>)>, Error> {
        self.require_sessions()?;
        let memory = self.memory();
        if memory.load_u32(OFF_SESSION_ACK) != pending.session {
            return Ok(None);
        }
        // Barrier: the acknowledgement load before the loads of what it publishes (ring-0
        // start, indices) and before our stores into ring 1's discarded space. Without it loom's
        // `session_discards_the_old_session` reads a stale ring-0 start (checked by removing
        // it). Load→load/store; ISH.
        memory.fence(Fence::Acquire);
        let ring0_start = memory.load_u32(OFF_SESSION_RING0_START);
        let produced = memory.load_u32(layout::producer_index_offset(0));
        // Barrier: the producer-index load before our consumer-index store. Load→store; ISH.
        memory.fence(Fence::Acquire);
        let ring0_bytes = self.geometry().ring(Direction::GuestToPeer).data_bytes as u32;
        if ring0_start % 8 != 0 || produced.wrapping_sub(ring0_start) > ring0_bytes {
            return Err(Error::BadSession {
                field: "session_ring0_start",
                value: ring0_start,
                reason: "not within the guest's published ring-0 bytes",
            });
        }
        memory.store_u32(layout::consumer_index_offset(0), ring0_start);
        let start = SessionStart {
            session: pending.session,
            ring0_start,
            ring1_start: pending.ring1_start,
        };
        let ring0 = self.ring_layout(Direction::GuestToPeer);
        let ring1 = self.ring_layout(Direction::PeerToGuest);
        // The guest released ring 1 up to our start: it counts as empty.
        let producer = Producer::starting_at(
            memory.clone(),
            ring1,
            pending.ring1_start,
            pending.ring1_start,
        );
        let consumer = Consumer::starting_at(memory.clone(), ring0, ring0_start, ring0_start);
        Ok(Some((start, producer, consumer)))
    }

    /// The session the guest has acknowledged (0: none), as a plain load.
    pub fn acknowledged_session(&self) -> u32 {
        if self.info().sessions() {
            self.memory().load_u32(OFF_SESSION_ACK)
        } else {
            0
        }
    }

    /// The guest's event-channel port, or `None` ([`NO_EVENT_PORT`], or a 1.0 header): then
    /// both sides poll.
    pub fn event_port(&self) -> Option<u32> {
        if !self.info().sessions() {
            return None;
        }
        let port = self.memory().load_u32(OFF_EVENT_PORT);
        (port != NO_EVENT_PORT).then_some(port)
    }

    /// Guest: publishes its event-channel port (ABI §4.6); [`NO_EVENT_PORT`] withdraws it.
    pub fn set_event_port(&self, port: u32) {
        if self.info().sessions() {
            // Barrier: the port is read by a peer that attaches later; FULL orders it after
            // the header like a state word. ISH.
            self.memory().fence(Fence::Full);
            self.memory().store_u32(OFF_EVENT_PORT, port);
        }
    }

    /// Arms `role`'s waiting word before it sleeps on a notification (ABI §4.6): stores 1,
    /// then a FULL barrier. The caller must then look at everything it waits for again and
    /// sleep only if nothing changed; after waking it calls [`Region::disarm`].
    pub fn arm(&self, role: Role) {
        self.memory().store_u32(waiting_offset(role), 1);
        // Barrier: the armed store before the re-check loads that follow (store→load needs
        // the full barrier). Without it loom's `hold_off_loses_no_wake_up` sleeps with a
        // message pending and no notification coming (checked by removing it). ISH.
        self.memory().fence(Fence::Full);
    }

    /// Whether `role` has armed its waiting word (it sleeps, or is about to, until notified).
    pub fn is_waiting(&self, role: Role) -> bool {
        self.info().sessions() && self.memory().load_u32(waiting_offset(role)) == 1
    }

    /// Clears `role`'s waiting word (it polls again).
    pub fn disarm(&self, role: Role) {
        self.memory().store_u32(waiting_offset(role), 0);
    }

    /// Producer side of the hold-off: call after publishing (an index or a state word);
    /// whether `other` must be notified (its waiting word is armed).
    pub fn notify_needed(&self, other: Role) -> bool {
        // Barrier: our publishing store before the load of the other side's waiting word
        // (store→load: FULL). Without it loom's `hold_off_loses_no_wake_up` loses a wake-up
        // (checked by removing it). ISH.
        self.memory().fence(Fence::Full);
        self.memory().load_u32(waiting_offset(other)) == 1
    }

    fn ring_layout(&self, direction: Direction) -> RingLayout {
        RingLayout::new(direction, self.geometry().ring(direction))
    }
}

fn waiting_offset(role: Role) -> usize {
    match role {
        Role::Guest => OFF_GUEST_WAITING,
        Role::Peer => OFF_PEER_WAITING,
    }
}
