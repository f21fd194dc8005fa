//! sramlink guest: the host-testable logic of the bare-metal kernel.
//!
//! The kernel binary (`src/main.rs`, `src/arch/`) does the architecture work; everything that
//! is plain computation lives here so `cargo test -p sramlink` checks it on the host:
//!
//! - [`devicetree`]: what the DTB says (RAM, reserved memory, console, PSCI, shared region,
//!   interpreted by the `sramlink-devicetree` crate the peer shares) and the guest's options;
//! - [`shared_region`]: whether the region can be used, with a precise reason when not;
//! - [`paging`]: the translation-table builder and walker;
//! - [`memory_map`]: which ranges the guest maps and how;
//! - [`backoff`]: when the idle serving loop spins and when it waits for an event;
//! - [`bootargs`]: the guest's options on its command line (`/chosen/bootargs`);
//! - [`xen`]: Xen's hypercall structures, `shared_info` and the event-channel scan;
//! - [`gic`]: the GIC's memory-mapped registers (GICv2 distributor and CPU interface, GICv3
//!   distributor and redistributor).
#![cfg_attr(not(test), no_std)]

pub mod backoff;
pub mod bootargs;
pub mod devicetree;
pub mod gic;
pub mod memory_map;
pub mod paging;
pub mod shared_region;
pub mod xen;
