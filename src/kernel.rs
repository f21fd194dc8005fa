//! The boot flow, from the first Rust code to the final power-off.
//!
//! ```text
//! boot/entry.s ──► kernel_init (unsafe, MMU off, no exclusives)
//!                    1. read the DTB at x0: RAM, reserved memory, console, PSCI, mmio-sram node;
//!                       console UART and PSCI conduit recorded at once (plain statics)
//!                    2. validate the shared region (alignment, overlaps, ring fits)
//!                    3. build the identity map in the static table pool
//!                    4. MMU and caches on; locked console set up
//!                  ──► kernel_main (safe)
//!                    5. banner, region line, idle policy (from /chosen/bootargs)
//!                    6. Region::create, guest state Ready, "ring ready"
//!                    7. Service::run until Stop (or the peer stops), idling per the policy
//!                    8. stats, "stopping", PSCI SYSTEM_OFF
//! ```
//! Any failure (bad input, panic, exception) prints `sramlink: error: ...` then
//! `sramlink: stopping` on the device tree's console, and powers off with PSCI SYSTEM_OFF
//! through the device tree's conduit. The console UART and the conduit are recorded in plain
//! statics as soon as the tree is parsed, even when the tree is unusable for another reason
//! (no RAM, a bad `reg`, ...): until the MMU is on, `console::emergency` drives that UART
//! through a stack-local driver (`spin`'s `Once`/`Mutex` use exclusive accesses, which need
//! Normal memory; with the MMU off all data is Device). Without a console nothing is printed;
//! without a conduit in the tree the CPU parks (`wfe` loop).
//!
//! There is no built-in UART address: a board's (QEMU's 0x0900_0000) is unmapped under Xen. So
//! when the DTB cannot be read at all (x0 zero or misaligned, a bad magic or `totalsize`, any
//! header field or block `sramlink::dtb` rejects: blocks outside the blob, misaligned or
//! overlapping, a structure block the parser could not walk without panicking), nothing can be
//! printed, and the guest tries PSCI SYSTEM_OFF through the one conduit its
//! entry exception level makes safe to try: `hvc` when entered at EL1 (Xen, KVM, QEMU without
//! EL2), `smc` when entered at EL2 (EL3 firmware, QEMU with EL2); should that return or be an
//! undefined instruction (nothing there serves it), it parks. The reasoning is at
//! `psci::system_off_without_device_tree`.

// `DtError`/`RegionError` carry node paths in fixed-capacity strings (no allocator); they are
// built at most once per boot.
#![allow(clippy::result_large_err)]

use core::cell::UnsafeCell;
use core::fmt;

use sramlink::backoff::{Backoff, IdlePolicy, Pause};
use sramlink::devicetree::{
    self, DtError, FDT_HEADER_SIZE, GicFrames, Platform, PsciConduit, Uart, UnusableTree,
};
use sramlink::memory_map::{self, ImageLayout, RegionMapping};
use sramlink::paging::{PageTables, Table};
use sramlink::shared_region::{self, RegionError, SharedRegion, Surroundings};
use sramlink_devicetree::PhysRange;
use sramlink_ring::service::{Idle, Service, SessionEvent};
use sramlink_ring::{Creation, Direction, MemoryType, Region, Role, SideState, VolatileMemory};

use crate::arch::gic::{self, GicError};
use crate::arch::{cpu, layout, mmu, psci, timer};
use crate::console;
use crate::events::{self, Events};

/// Translation tables available: root, L2s and L3s. The bare-QEMU map needs 5 (root; L2s for
/// the first and second GiB; L3s for the UART page and for the image's sections and guard
/// pages); the rest is headroom for ragged RAM banks, reserved holes and unaligned regions.
const TABLE_POOL_TABLES: usize = 32;

/// Busy-wait iterations of one spinning idle pass.
const SPIN_LOOP_ITERATIONS: u32 = 16;

/// The translation tables' home (zeroed, in BSS).
struct TablePool(UnsafeCell<[Table; TABLE_POOL_TABLES]>);

// SAFETY: only `kernel_init` touches the pool, once, on the single boot CPU; afterwards only
// the MMU's table walker reads it.
unsafe impl Sync for TablePool {}

static TABLE_POOL: TablePool =
    TablePool(UnsafeCell::new([const { Table::EMPTY }; TABLE_POOL_TABLES]));

/// A reason the guest cannot serve the ring.
enum Problem {
    Tree(DtError),
    Region(RegionError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Tree(error) => error.fmt(f),
            Problem::Region(error) => error.fmt(f),
        }
    }
}

/// What `kernel_init` found and set up, handed to `kernel_main`.
struct BootInfo {
    entry_el: u64,
    dtb_address: u64,
    layout: ImageLayout,
    platform: Platform,
    region: Result<SharedRegion, Problem>,
    tables_used: usize,
}

/// Reads and interprets the DTB at `address`; returns its range and contents.
///
/// # Safety
///
/// MMU off (physical addressing). If `address` passes the alignment check it is read as a DTB
/// header, then `totalsize` bytes: it must be readable memory, as the boot protocol promises
/// for `x0`.
unsafe fn read_device_tree(address: u64) -> Result<(PhysRange, Platform), UnusableTree> {
    if address == 0 {
        return Err(DtError::NoDeviceTree.into());
    }
    if address % 8 != 0 {
        return Err(DtError::Misaligned { address }.into());
    }
    // SAFETY: the boot protocol puts a readable, 8-byte-aligned DTB at `x0`; the header is read
    // volatile because with the MMU off this is Device memory.
    let header = unsafe { core::ptr::read_volatile(address as *const [u8; FDT_HEADER_SIZE]) };
    // The whole header: magic, `totalsize` within `MAX_DTB_SIZE`, version, every block inside.
    let size = devicetree::dtb_total_size(address, &header)?;
    // SAFETY: the header's `totalsize`, checked against `MAX_DTB_SIZE`, says how many bytes the
    // loader placed there; nothing writes them while the kernel runs.
    let blob = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    // Checks the blocks (reservation map, structure tokens) before the `fdt` crate walks them:
    // a malformed blob is an unreadable `DtError::Layout`, never a panic in the parser.
    let platform = devicetree::discover(blob)?;
    let range = PhysRange::from_base_size(address, size as u64).unwrap_or(PhysRange::EMPTY);
    Ok((range, platform))
}

/// The first console line: `sramlink: booted at EL1, image ..., dtb ...`.
struct Banner<'a> {
    entry_el: u64,
    layout: &'a ImageLayout,
    dtb_address: u64,
}

impl fmt::Display for Banner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sramlink: booted at EL{}, image {}, dtb {:#x}",
            self.entry_el, self.layout.image, self.dtb_address
        )
    }
}

/// Records the console and PSCI conduit the tree names, for every later stop.
///
/// # Safety
///
/// MMU off, and `map_guest` maps `console` as Device memory before the MMU goes on (it maps
/// the console it is given, or fails and the MMU stays off).
unsafe fn record_console_and_conduit(console: Option<&Uart>, psci: Option<PsciConduit>) {
    if let Some(uart) = console {
        // SAFETY: forwarded from this function's contract.
        unsafe { console::record(uart) };
    }
    psci::record(psci);
}

/// A fatal error before the locked console exists: print on the recorded console (if any)
/// and power off through the recorded conduit (or park).
fn early_stop(banner: &Banner<'_>, error: &dyn fmt::Display) -> ! {
    console::emergency(format_args!(
        "{banner}\nsramlink: error: {error}\nsramlink: stopping\n"
    ));
    psci::system_off()
}

/// The end of the highest range the map contains.
fn highest_mapped_end(
    usable: &[PhysRange],
    layout: &ImageLayout,
    console: Option<&Uart>,
    region: Option<&RegionMapping>,
    devices: &[PhysRange],
) -> u64 {
    let ram = usable
        .iter()
        .map(|range| range.end().min(sramlink::paging::VA_LIMIT));
    let others = [
        Some(layout.image),
        console.map(|uart| uart.registers),
        region.map(|r| r.range),
    ];
    ram.chain(others.into_iter().flatten().map(|range| range.end()))
        .chain(devices.iter().map(|range| range.end()))
        .max()
        .unwrap_or(0)
}

/// The GIC's frames, when the tree describes a usable GIC (mapped so that Xen events can use
/// it; harmless otherwise).
fn gic_frames(platform: &Platform) -> heapless::Vec<PhysRange, 2> {
    match &platform.gic {
        Some(Ok(gic)) => match gic.frames {
            GicFrames::V2 {
                distributor,
                cpu_interface,
            } => [distributor, cpu_interface].into_iter().collect(),
            GicFrames::V3 {
                distributor,
                redistributors,
            } => [distributor, redistributors].into_iter().collect(),
        },
        _ => heapless::Vec::new(),
    }
}

/// First Rust code of the kernel.
///
/// # Safety
///
/// Called once, on the boot CPU, at EL1, with the MMU off, BSS zeroed, SP_EL0 on the boot stack,
/// SP_EL1 on the exception stack and VBAR_EL1 set (what `boot/entry.s` does). `dtb_address` is
/// the loader's `x0`.
pub unsafe fn kernel_init(dtb_address: u64, entry_el: u64) -> ! {
    let layout = layout::image();
    let banner = Banner {
        entry_el,
        layout: &layout,
        dtb_address,
    };

    // SAFETY: MMU off, `dtb_address` is the loader's x0 (this function's contract).
    let (dtb, platform) = match unsafe { read_device_tree(dtb_address) } {
        Ok(found) => found,
        Err(unusable) if unusable.error.is_unreadable() => {
            // No console to print on, no conduit from the tree: power off through the conduit
            // the entry level allows (or park).
            psci::system_off_without_device_tree(entry_el)
        }
        Err(unusable) => {
            // SAFETY: MMU off, and it never goes on from here: `early_stop` does not return.
            unsafe { record_console_and_conduit(unusable.console.as_ref(), unusable.psci) };
            early_stop(&banner, &unusable.error)
        }
    };
    // SAFETY: MMU off; `map_guest` below maps `platform.console` as Device memory, or fails
    // and the MMU stays off.
    unsafe { record_console_and_conduit(platform.console.as_ref(), platform.psci) };
    let usable = platform.usable_memory();
    let region = platform
        .region
        .clone()
        .map_err(Problem::Tree)
        .and_then(|node| {
            let around = Surroundings {
                usable_memory: &usable,
                image: layout.image,
                device_tree: dtb,
                console: platform.console.as_ref(),
            };
            shared_region::validate(&node, &around).map_err(Problem::Region)
        });
    let mapping = region.as_ref().ok().map(|region| RegionMapping {
        range: region.range,
        cacheable: region.cacheable,
    });

    // SAFETY: `kernel_init` runs once, so this is the only reference ever made to the pool.
    let pool = unsafe { &mut *TABLE_POOL.0.get() };
    let stop = |error: &dyn fmt::Display| -> ! { early_stop(&banner, error) };
    let devices = gic_frames(&platform);
    let tables = PageTables::new(pool).and_then(|mut tables| {
        memory_map::map_guest(
            &mut tables,
            &usable,
            &layout,
            platform.console.as_ref(),
            mapping.as_ref(),
            &devices,
        )
        .map(|()| tables)
    });
    let tables = tables.unwrap_or_else(|error| stop(&error));
    let highest_end = highest_mapped_end(
        &usable,
        &layout,
        platform.console.as_ref(),
        mapping.as_ref(),
        &devices,
    );

    // SAFETY: once, at EL1, MMU off; the map covers the image (text executable), its stacks and
    // tables, the console and the region; everything written so far is inside the image, and
    // nothing was ever written through the caches.
    if let Err(error) = unsafe { mmu::enable(tables.root_address(), highest_end, layout.image) } {
        stop(&error);
    }
    let tables_used = tables.tables_used();

    // SAFETY: the MMU is on.
    unsafe { console::init() };
    timer::enable_event_stream();

    kernel_main(BootInfo {
        entry_el,
        dtb_address,
        layout,
        platform,
        region,
        tables_used,
    })
}

/// One console line per new session, with the counters of the session it replaces (the
/// system tests add them up and compare with the boot's totals). Short enough for Xen's
/// 128-byte vpl011 lines.
fn print_session(event: &SessionEvent) {
    let stats = event.previous_stats;
    println!(
        "sramlink: session {} (skipped {} B); session {}: received={} sent={} corrupted={} lost={} protocol_errors={}",
        event.start.session,
        event.skipped_bytes,
        event.previous,
        stats.received,
        stats.sent,
        stats.corrupted,
        stats.lost,
        stats.protocol_errors
    );
}

/// Detects Xen and sets up the event channel to dom0; prints what happened.
fn start_events(platform: &Platform, entry_el: u64) -> Option<&'static Events> {
    let (xen, evidence) = match events::detect(platform, entry_el) {
        Ok(found) => found,
        Err(why) => {
            println!("sramlink: events: off ({why}): polling");
            return None;
        }
    };
    // SAFETY: once; `kernel_init` mapped the tree's GIC frames Device-nGnRE for good.
    match unsafe { events::start(platform, xen, evidence) } {
        Ok(events) => {
            let (gic, distributor) = events.gic_summary();
            println!(
                "sramlink: events: Xen ({}), port {} for dom0, {gic} at {:#x}, upcall INTID {}",
                events.evidence,
                events.port,
                distributor.start(),
                events.upcall
            );
            Some(events)
        }
        Err(why) => {
            println!("sramlink: events: off ({why}): polling");
            None
        }
    }
}

/// Routes the EL1 virtual timer's PPI (from the tree's `/timer`) through the GIC the events
/// set up, so `irq` sleeps can be bounded to `tick_ms`: the sleep's length in counter ticks,
/// `None` when `tick_ms` is 0 (sleep until an event).
fn start_tick(platform: &Platform, tick_ms: u32) -> Result<Option<u64>, TickUnavailable> {
    if tick_ms == 0 {
        return Ok(None);
    }
    let intid = match &platform.timer {
        Some(Ok(node)) => node.virtual_intid,
        Some(Err(error)) => return Err(TickUnavailable::Tree(error.clone())),
        None => return Err(TickUnavailable::NoTimerNode),
    };
    timer::disarm();
    gic::enable_ppi(intid, timer::on_interrupt).map_err(TickUnavailable::Gic)?;
    Ok(Some(timer::ms_to_ticks(tick_ms)))
}

/// Why `irq` sleeps cannot be bounded by the timer.
#[allow(clippy::large_enum_variant)] // built at most once per boot
enum TickUnavailable {
    NoTimerNode,
    Tree(DtError),
    Gic(GicError),
}

impl fmt::Display for TickUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TickUnavailable::NoTimerNode => f.write_str("the device tree has no arm,armv8-timer"),
            TickUnavailable::Tree(error) => error.fmt(f),
            TickUnavailable::Gic(error) => error.fmt(f),
        }
    }
}

/// The serving loop's waiting (per the idle policy) and notifying (when events work).
struct GuestIdle {
    backoff: Backoff,
    events: Option<&'static Events>,
    notify_failures: u64,
    /// The longest one `irq` sleep lasts, in counter ticks (`None`: until an interrupt).
    tick: Option<u64>,
}

impl Idle for GuestIdle {
    fn pause(&mut self, progressed: bool) -> bool {
        match self.backoff.pause(progressed) {
            Pause::Spin => {
                for _ in 0..SPIN_LOOP_ITERATIONS {
                    core::hint::spin_loop();
                }
                false
            }
            Pause::WaitForEvent => {
                cpu::wait_for_event();
                false
            }
            // Only chosen when events work (kernel_main falls back to wfe otherwise).
            Pause::WaitForInterrupt => true,
        }
    }

    fn sleep(&mut self) {
        // Bounded: a peer that cannot notify (ABI 1.0, no /dev/xen/evtchn) is still served
        // within a tick, and so are the heartbeat duties.
        if let Some(ticks) = self.tick {
            timer::arm(ticks);
        }
        cpu::wait_for_interrupt();
        if self.tick.is_some() {
            // Woken by an event first: the timer must not fire later, outside a sleep.
            timer::disarm();
        }
    }

    fn notify(&mut self) {
        if let Some(events) = self.events {
            if events.notify().is_err() {
                self.notify_failures += 1;
            }
        }
    }
}

/// Prints the stop line and powers off.
fn stop() -> ! {
    println!("sramlink: stopping");
    console::flush();
    psci::system_off()
}

/// Prints a fatal error and stops.
fn fatal(error: &dyn fmt::Display) -> ! {
    println!("sramlink: error: {error}");
    stop()
}

/// The kernel proper: MMU on, console up.
fn kernel_main(boot: BootInfo) -> ! {
    println!(
        "{}",
        Banner {
            entry_el: boot.entry_el,
            layout: &boot.layout,
            dtb_address: boot.dtb_address,
        }
    );
    if boot.entry_el == 2 {
        println!("sramlink: entered at EL2, running at EL1");
    }
    // Without a console nothing can be printed; the ring still gets served.
    if let Some(uart) = boot.platform.console {
        println!(
            "sramlink: console {} at {:#x}, psci {}, counter {} Hz, page tables {}/{}",
            uart.kind.compatible(),
            uart.registers.start(),
            psci::conduit().map_or("none (cannot power off)", |conduit| match conduit {
                PsciConduit::Hvc => "hvc",
                PsciConduit::Smc => "smc",
            }),
            timer::frequency(),
            boot.tables_used,
            TABLE_POOL_TABLES,
        );
    }
    for range in boot.platform.usable_memory().iter() {
        println!("sramlink: ram {range}");
    }

    let region = boot.region.unwrap_or_else(|problem| fatal(&problem));
    println!(
        "sramlink: region {:#x}+{:#x} ({})",
        region.range.start(),
        region.range.size(),
        if region.cacheable {
            "cacheable"
        } else {
            "device"
        }
    );
    let requested_policy = boot
        .platform
        .idle
        .clone()
        .unwrap_or_else(|error| fatal(&error));
    let events = start_events(&boot.platform, boot.entry_el);
    let idle_policy = match (requested_policy, events) {
        (IdlePolicy::Irq, None) => {
            println!("sramlink: idle policy irq needs Xen events: waiting with wfe instead");
            IdlePolicy::Wfe
        }
        (policy, _) => policy,
    };
    let spin_passes = boot
        .platform
        .spin_passes
        .clone()
        .unwrap_or_else(|error| fatal(&error));
    let tick_ms = boot
        .platform
        .tick_ms
        .clone()
        .unwrap_or_else(|error| fatal(&error));
    let (idle_policy, tick) = match idle_policy {
        IdlePolicy::Irq => match start_tick(&boot.platform, tick_ms) {
            Ok(tick) => (IdlePolicy::Irq, tick),
            Err(why) => {
                println!("sramlink: idle policy irq: no timer bound ({why}): wfe instead");
                (IdlePolicy::Wfe, None)
            }
        },
        policy => (policy, None),
    };
    println!(
        "sramlink: idle policy: {} (spins {spin_passes} idle passes first)",
        idle_policy.name()
    );
    if idle_policy == IdlePolicy::Irq {
        match tick {
            Some(_) => println!("sramlink: irq sleeps end within {tick_ms} ms (virtual timer)"),
            None => println!("sramlink: irq sleeps end only on an event (sramlink.tick=0)"),
        }
    }
    // SAFETY: `map_guest` identity-mapped the region read/write (Device-nGnRE, or Normal WB when
    // cacheable: then payloads may be copied with memcpy) for the kernel's life, and no other
    // code of the guest touches it.
    let memory = unsafe {
        VolatileMemory::with_type(
            region.range.start() as *mut u8,
            region.range.size() as usize,
            if region.cacheable {
                MemoryType::Normal
            } else {
                MemoryType::Device
            },
        )
    }
    .unwrap_or_else(|error| fatal(&error));
    // The mapping's cacheability goes into the header (flags bit 0) for the peer to compare
    // with its own; the counter's low bits seed the generation when no old header is there.
    let creation = Creation {
        cacheable: region.cacheable,
        seed: timer::counter() as u32,
    };
    let ring = Region::create_with(memory, region.geometry, creation)
        .unwrap_or_else(|error| fatal(&error));
    ring.set_state(Role::Guest, SideState::Ready);
    let geometry = *ring.geometry();
    let to_peer = geometry.ring(Direction::GuestToPeer);
    let to_guest = geometry.ring(Direction::PeerToGuest);
    // Two lines: Xen's vpl011 backend splits guest lines longer than its 128-byte buffer.
    println!(
        "sramlink: ring ready: guest->peer {:#x} bytes at +{:#x}, peer->guest {:#x} bytes at +{:#x}",
        to_peer.data_bytes, to_peer.data_offset, to_guest.data_bytes, to_guest.data_offset,
    );
    println!(
        "sramlink: max message {} bytes",
        to_peer.max_message_len().min(to_guest.max_message_len()),
    );

    if let Some(events) = events {
        ring.set_event_port(events.port);
    }
    match events {
        Some(events) => println!(
            "sramlink: generation {:#x}, sessions on, event port {}",
            ring.info().generation.unwrap_or(0),
            events.port
        ),
        None => println!(
            "sramlink: generation {:#x}, sessions on, event port none (peers poll)",
            ring.info().generation.unwrap_or(0)
        ),
    }

    let started = timer::counter();
    let mut idle = GuestIdle {
        backoff: Backoff::with_spin_passes(idle_policy, spin_passes),
        events,
        notify_failures: 0,
        tick,
    };
    let stats = Service::new(ring)
        .run_notified(&mut idle, print_session)
        // `run_with` has already published the healthy ring and stored Stopped (ABI §5.4), so
        // the peer sees the guest gave up instead of timing out.
        .unwrap_or_else(|error| fatal(&error));
    println!(
        "sramlink: stats: received={} sent={} corrupted={} lost={} protocol_errors={}",
        stats.received, stats.sent, stats.corrupted, stats.lost, stats.protocol_errors
    );
    if events.is_some() {
        let (received, other, sent) = events::counters();
        println!(
            "sramlink: events: received={received} sent={sent} other_ports={other} send_failures={}",
            idle.notify_failures
        );
    }
    if tick.is_some() {
        println!("sramlink: timer wake-ups: {}", timer::fired());
    }
    println!(
        "sramlink: served for {} ms",
        timer::ticks_to_ms(timer::counter().wrapping_sub(started))
    );
    stop()
}
