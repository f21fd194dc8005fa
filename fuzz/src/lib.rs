//! Fuzz-target logic: each side's view of an adversarial shared region, and the DTB reader.
//!
//! The shared-memory targets run the real code over [`Adversary`], a [`SharedMemory`] whose
//! every load either returns the region's real contents or a value the fuzzer chose, so the
//! other side can be seen changing any word between any two loads. The property checked is
//! the one the ABI promises: no panic (the ring's own bounds checks included), no hang, errors
//! returned as values.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::AtomicU32;

use sramlink_devicetree::{DeviceTree, discover};
use sramlink_ring::layout::{OFF_PEER_STATE, STATE_STOPPED};
use sramlink_ring::{AtomicMemory, Geometry, Region, Role, SharedMemory, SideState};

/// Region size: the header page and two 256-byte rings (small, so the rings wrap and fill).
const REGION_BYTES: usize = 3 * 4096;
/// Ring sizes (ring 0, ring 1).
const RING_BYTES: [usize; 2] = [256, 256];

/// The fuzzer's input, consumed one piece per decision.
#[derive(Debug)]
struct Input<'a> {
    data: &'a [u8],
    at: Cell<usize>,
    /// Loads are tampered with only once set (setup before it sees the real region).
    armed: Cell<bool>,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input {
            data,
            at: Cell::new(0),
            armed: Cell::new(false),
        }
    }

    fn exhausted(&self) -> bool {
        self.at.get() >= self.data.len()
    }

    fn byte(&self) -> Option<u8> {
        let at = self.at.get();
        let byte = *self.data.get(at)?;
        self.at.set(at + 1);
        Some(byte)
    }

    /// `N` bytes (zero-filled past the end).
    fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut out = [0; N];
        for byte in &mut out {
            *byte = self.byte().unwrap_or(0);
        }
        out
    }
}

/// A region whose loads the fuzzer may replace: the other side, able to write any word at any
/// moment. Stores go to the real words.
#[derive(Debug, Clone)]
struct Adversary<'a> {
    real: AtomicMemory<Rc<[AtomicU32]>>,
    input: Rc<Input<'a>>,
}

impl<'a> Adversary<'a> {
    /// What a load returns: per load one control byte; below 0xa0 the real value, otherwise a
    /// value derived from the input (replaced, xored, or added to).
    fn tamper(&self, real: u64, width: u32) -> u64 {
        if !self.input.armed.get() {
            return real;
        }
        let Some(control) = self.input.byte() else {
            return real;
        };
        let mask = if width == 64 {
            u64::MAX
        } else {
            u32::MAX as u64
        };
        let chosen = u64::from_le_bytes(self.input.bytes::<8>()) & mask;
        match control {
            0x00..=0x9f => real,
            0xa0..=0xcf => chosen,
            0xd0..=0xe7 => real ^ chosen,
            _ => real.wrapping_add(chosen) & mask,
        }
    }
}

impl SharedMemory for Adversary<'_> {
    fn len(&self) -> usize {
        self.real.len()
    }

    fn load_u32(&self, off: usize) -> u32 {
        self.tamper(self.real.load_u32(off) as u64, 32) as u32
    }

    fn store_u32(&self, off: usize, v: u32) {
        self.real.store_u32(off, v);
    }

    fn load_u64(&self, off: usize) -> u64 {
        self.tamper(self.real.load_u64(off), 64)
    }

    fn store_u64(&self, off: usize, v: u64) {
        self.real.store_u64(off, v);
    }
}

fn words() -> Rc<[AtomicU32]> {
    (0..REGION_BYTES / 4).map(|_| AtomicU32::new(0)).collect()
}

fn geometry() -> Geometry {
    Geometry::with_ring_bytes(REGION_BYTES, RING_BYTES).expect("a valid geometry")
}

/// Stores fuzzer-chosen words into the real region (the other side's lasting writes): one
/// control byte, then that many (offset, value) pairs, at most 8.
fn scribble(input: &Input<'_>, real: &AtomicMemory<Rc<[AtomicU32]>>) {
    let count = input.byte().unwrap_or(0) % 9;
    for _ in 0..count {
        let [lo, hi] = input.bytes::<2>();
        let off = (u16::from_le_bytes([lo, hi]) as usize * 4) % REGION_BYTES;
        real.store_u32(off, u32::from_le_bytes(input.bytes::<4>()));
    }
}

/// The guest's serving loop ([`sramlink_ring::service::Service`]) against a peer that controls
/// every load. The peer's lasting stores come from the input whenever the guest idles; once
/// the input is used up the peer stores Stopped, which ends the loop.
pub fn service(data: &[u8]) {
    let input = Rc::new(Input::new(data));
    let real = AtomicMemory::new(words());
    let guest = Region::create(real.clone(), geometry()).expect("creating a region");
    guest.set_state(Role::Guest, SideState::Ready);
    // A peer that attached for real first, with a session request or without (1.0 style).
    let peer = Region::attach(real.clone()).expect("attaching to a fresh region");
    peer.set_state(Role::Peer, SideState::Ready);
    if input.byte().unwrap_or(0) & 1 == 1 {
        peer.request_session().expect("a 1.1 region");
    }
    let memory = Adversary {
        real: real.clone(),
        input: input.clone(),
    };
    let region = Region::attach(memory).expect("the header was just created");
    input.armed.set(true);
    let mut service = sramlink_ring::service::Service::new(region);
    let _ = service.run_with(
        |_| {
            if input.exhausted() {
                real.store_u32(OFF_PEER_STATE, STATE_STOPPED);
            } else {
                scribble(&input, &real);
            }
        },
        |_| {},
    );
}

/// The peer's view: attach, start a session, then send, receive and publish as the input says,
/// against a guest that controls every load.
pub fn peer(data: &[u8]) {
    let input = Rc::new(Input::new(data));
    let real = AtomicMemory::new(words());
    let guest = Region::create(real.clone(), geometry()).expect("creating a region");
    guest.set_state(Role::Guest, SideState::Ready);
    let memory = Adversary {
        real: real.clone(),
        input: input.clone(),
    };
    input.armed.set(true);
    let Ok(region) = Region::attach(memory) else {
        return;
    };
    let _ = region.state(Role::Guest);
    let _ = region.check_generation();
    let _ = region.check_attributes(false);
    region.set_state(Role::Peer, SideState::Ready);
    let (mut producer, mut consumer) = region.endpoints(Role::Peer);
    // The acknowledgement comes only from a tampered load: no guest serves here.
    if input.byte().unwrap_or(0) & 1 == 1
        && let Ok(pending) = region.request_session()
        && let Ok(Some((_, p, c))) = region.session_started(pending)
    {
        (producer, consumer) = (p, c);
    }
    let mut buf = [0u8; 512];
    while let Some(op) = input.byte() {
        match op % 8 {
            0 | 1 => {
                let len = input.byte().unwrap_or(0) as usize * 2;
                let _ = producer.send(&buf[..len.min(buf.len())]);
            }
            2 | 3 => {
                let _ = consumer.recv(&mut buf);
            }
            4 => {
                if let Ok(Some(slot)) = consumer.read() {
                    let mut small = [0u8; 24];
                    let _ = slot.read(input.byte().unwrap_or(0) as usize, &mut small);
                    let _ = slot.read_u64(input.byte().unwrap_or(0) as usize);
                    slot.release();
                }
            }
            5 => {
                producer.publish();
                consumer.publish();
            }
            6 => {
                let _ = region.state(Role::Guest);
                let _ = region.heartbeat(Role::Guest);
                let _ = region.acknowledged_session();
                let _ = region.event_port();
                let _ = region.notify_needed(Role::Guest);
            }
            _ => scribble(&input, &real),
        }
        buf[..8].copy_from_slice(&input.bytes::<8>());
    }
    producer.publish();
    consumer.publish();
    region.set_state(Role::Peer, SideState::Offline);
}

/// The guest's device-tree interpretation on arbitrary bytes: every query it makes at boot.
pub fn devicetree(data: &[u8]) {
    if let Ok(tree) = DeviceTree::read(data) {
        let _ = tree.region();
        let _ = tree.interrupt_controller();
        let _ = tree.hypervisor();
        for range in tree.reserved_ranges() {
            let _ = range;
        }
    }
    if let Ok(platform) = discover(data) {
        let _ = platform.usable_memory();
    }
}
