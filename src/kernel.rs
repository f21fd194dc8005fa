//! The boot flow, from the first Rust code to the final power-off.
//!
//! ```text
//! boot/entry.s ──► kernel_init (unsafe, MMU off, no atomics)
//!                    1. read the DTB at x0: RAM, reserved memory, console, PSCI, mmio-sram node
//!                    2. validate the shared region (alignment, overlaps, ring fits)
//!                    3. build the identity map in the static table pool
//!                    4. MMU and caches on; console and PSCI conduit recorded
//!                  ──► kernel_main (safe)
//!                    5. banner, region line, idle policy (from /chosen/bootargs)
//!                    6. Region::create, guest state Ready, "ring ready"
//!                    7. Service::run until Stop (or the peer stops), idling per the policy
//!                    8. stats, "stopping", PSCI SYSTEM_OFF
//! ```
//! Any failure prints `sramlink: error: ...` then `sramlink: stopping`, and powers off. Before
//! the MMU is on, that goes through a stack-local UART driver: `spin`'s `Once`/`Mutex` use
//! exclusive accesses, which need Normal memory, and with the MMU off all data is Device.

// `DtError`/`RegionError` carry node paths in fixed-capacity strings (no allocator); they are
// built at most once per boot.
#![allow(clippy::result_large_err)]

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::ptr::NonNull;

use sramlink::backoff::{Backoff, Pause};
use sramlink::devicetree::{self, DtError, FDT_HEADER_SIZE, Platform, PsciConduit, Uart, UartKind};
use sramlink::memory_map::{self, ImageLayout, RegionMapping};
use sramlink::paging::{PageTables, Table};
use sramlink::range::PhysRange;
use sramlink::shared_region::{self, RegionError, SharedRegion, Surroundings};
use sramlink_ring::service::Service;
use sramlink_ring::{Direction, Region, Role, SideState, VolatileMemory};

use crate::arch::{cpu, layout, mmu, psci, timer};
use crate::console;
use crate::pl011::{Pl011, Writer};

/// Translation tables available: root, L2s and L3s. The bare-QEMU map needs 5 (root; L2s for
/// the first and second GiB; L3s for the UART page and for the image's sections and guard
/// pages); the rest is headroom for ragged RAM banks, reserved holes and unaligned regions.
const TABLE_POOL_TABLES: usize = 32;

/// The UART used only when the device tree cannot be read at all, to say so: QEMU `virt`'s
/// PL011. Never used when the tree names a console.
const FALLBACK_UART: u64 = 0x0900_0000;

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
unsafe fn read_device_tree(address: u64) -> Result<(PhysRange, Platform), DtError> {
    if address == 0 {
        return Err(DtError::NoDeviceTree);
    }
    if address % 8 != 0 {
        return Err(DtError::Misaligned { address });
    }
    // SAFETY: the boot protocol puts a readable, 8-byte-aligned DTB at `x0`; the header is read
    // volatile because with the MMU off this is Device memory.
    let header = unsafe { core::ptr::read_volatile(address as *const [u8; FDT_HEADER_SIZE]) };
    let size = devicetree::dtb_total_size(address, &header)?;
    // SAFETY: the header's `totalsize`, checked against the protocol's 2 MiB limit, says how
    // many bytes the loader placed there; nothing writes them while the kernel runs.
    let blob = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    let platform = devicetree::discover(blob)?;
    let range = PhysRange::from_base_size(address, size as u64).unwrap_or(PhysRange::EMPTY);
    Ok((range, platform))
}

fn banner(out: &mut impl Write, entry_el: u64, layout: &ImageLayout, dtb_address: u64) {
    let _ = writeln!(
        out,
        "sramlink: booted at EL{entry_el}, image {}, dtb {dtb_address:#x}",
        layout.image
    );
}

/// A fatal error before the MMU is on: print through a stack-local driver and power off.
fn early_stop(
    console: Option<Uart>,
    psci: Option<PsciConduit>,
    entry_el: u64,
    layout: &ImageLayout,
    dtb_address: u64,
    error: &dyn fmt::Display,
) -> ! {
    let (base, kind) = match console {
        Some(uart) => (uart.registers.start(), uart.kind),
        None => (FALLBACK_UART, UartKind::Pl011),
    };
    if let Some(base) = NonNull::new(base as *mut u8) {
        // SAFETY: with the MMU off, `base` is the physical register window of the UART the
        // device tree names (or QEMU virt's PL011 when there is no readable tree); nothing else
        // drives it at this point.
        let uart = unsafe { Pl011::new(base, kind) };
        uart.init();
        let mut out = Writer(&uart);
        banner(&mut out, entry_el, layout, dtb_address);
        let _ = writeln!(out, "sramlink: error: {error}");
        let _ = writeln!(out, "sramlink: stopping");
        uart.flush();
    }
    psci::system_off_with(psci)
}

/// The end of the highest range the map contains.
fn highest_mapped_end(
    usable: &[PhysRange],
    layout: &ImageLayout,
    console: Option<&Uart>,
    region: Option<&RegionMapping>,
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
        .max()
        .unwrap_or(0)
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

    // SAFETY: MMU off, `dtb_address` is the loader's x0 (this function's contract).
    let (dtb, platform) = match unsafe { read_device_tree(dtb_address) } {
        Ok(found) => found,
        Err(error) => early_stop(None, None, entry_el, &layout, dtb_address, &error),
    };
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
    let stop = |error: &dyn fmt::Display| -> ! {
        early_stop(
            platform.console,
            platform.psci,
            entry_el,
            &layout,
            dtb_address,
            error,
        )
    };
    let tables = PageTables::new(pool).and_then(|mut tables| {
        memory_map::map_guest(
            &mut tables,
            &usable,
            &layout,
            platform.console.as_ref(),
            mapping.as_ref(),
        )
        .map(|()| tables)
    });
    let tables = tables.unwrap_or_else(|error| stop(&error));
    let highest_end = highest_mapped_end(
        &usable,
        &layout,
        platform.console.as_ref(),
        mapping.as_ref(),
    );

    // SAFETY: once, at EL1, MMU off; the map covers the image (text executable), its stacks and
    // tables, the console and the region; everything written so far is inside the image, and
    // nothing was ever written through the caches.
    if let Err(error) = unsafe { mmu::enable(tables.root_address(), highest_end, layout.image) } {
        stop(&error);
    }
    let tables_used = tables.tables_used();

    if let Some(uart) = platform.console.as_ref() {
        // SAFETY: `map_guest` mapped the UART's registers as Device memory, for good.
        unsafe { console::init(uart) };
    }
    psci::init(platform.psci);
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
    let mut out = ConsoleOut;
    banner(&mut out, boot.entry_el, &boot.layout, boot.dtb_address);
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
    let idle_policy = boot.platform.idle.unwrap_or_else(|error| fatal(&error));
    println!("sramlink: idle policy: {}", idle_policy.name());
    // SAFETY: `map_guest` identity-mapped the region read/write (Device-nGnRE, or Normal WB when
    // cacheable; both take aligned 32/64-bit accesses) for the kernel's life, and no other code
    // of the guest touches it.
    let memory = unsafe {
        VolatileMemory::new(
            region.range.start() as *mut u8,
            region.range.size() as usize,
        )
    }
    .unwrap_or_else(|error| fatal(&error));
    let ring = Region::create(memory, region.geometry).unwrap_or_else(|error| fatal(&error));
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

    let started = timer::counter();
    let mut backoff = Backoff::new(timer::frequency(), idle_policy);
    let stats = Service::new(ring)
        .run(|| {
            match backoff.pause(timer::counter()) {
                Pause::Spin => {
                    for _ in 0..SPIN_LOOP_ITERATIONS {
                        core::hint::spin_loop();
                    }
                }
                Pause::WaitForEvent => cpu::wait_for_event(),
            }
            backoff.resumed(timer::counter());
        })
        .unwrap_or_else(|error| fatal(&error));
    println!(
        "sramlink: stats: received={} sent={} corrupted={} lost={} protocol_errors={}",
        stats.received, stats.sent, stats.corrupted, stats.lost, stats.protocol_errors
    );
    println!(
        "sramlink: served for {} ms",
        timer::ticks_to_ms(timer::counter().wrapping_sub(started))
    );
    stop()
}

/// `fmt::Write` onto the console, for code shared with the early (lock-free) path.
struct ConsoleOut;

impl Write for ConsoleOut {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        console::print(format_args!("{text}"));
        Ok(())
    }
}
