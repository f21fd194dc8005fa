//! sramlink's device-tree interpretation, shared by the guest and the dom0 peer.
//!
//! Both sides find the shared region the same way, from the same kind of input: a flattened
//! device tree blob (the guest gets it in `x0`, the peer reads the one Linux booted with from
//! `/sys/firmware/fdt`). `no_std`, no allocator, tested on the host:
//!
//! - [`blob`]: whether a DTB's header and blocks can be walked at all, precisely why not
//!   (checked before the `fdt` crate sees the blob, since it panics on bad input);
//! - [`cells`]: `#address-cells`/`#size-cells`, [`decode_reg`], translation through `ranges`;
//! - [`discovery`]: one walk finding RAM, reserved memory, console, PSCI and the `mmio-sram`
//!   region nodes ([`DeviceTree::read`]), the region's selection ([`DeviceTree::region`]) and
//!   the guest's boot view ([`discover`]);
//! - [`platform`]: the types of what is found;
//! - [`interrupts`]: the GIC's frames (v2 or v3) and Xen's `/hypervisor` upcall, for the
//!   event-channel work;
//! - [`range`]: physical address ranges;
//! - [`error`]: what can be wrong, with the node's path and the numbers.
#![cfg_attr(not(test), no_std)]

pub mod blob;
pub mod cells;
pub mod discovery;
pub mod error;
pub mod interrupts;
mod node;
pub mod platform;
pub mod range;

#[cfg(test)]
mod testing;

pub use blob::{
    FDT_HEADER_SIZE, FDT_MAGIC, LayoutError, MAX_DTB_SIZE, check_dtb, check_dtb_at, dtb_total_size,
    strip_nops,
};
pub use cells::{Cells, decode_reg};
pub use discovery::{
    DeviceTree, MAX_DEPTH, MAX_MEMORY_BANKS, MAX_REGION_CANDIDATES, MAX_RESERVED_RANGES, MAX_UARTS,
    MAX_USABLE_RANGES, MMIO_SRAM, Platform, RegionCandidate, discover,
};
pub use error::{DtError, NodePath, PATH_CAPACITY, RegProblem, UnusableTree};
pub use interrupts::{
    GicFrames, GicVersion, Hypervisor, InterruptController, TIMER_COMPATIBLES, Timer,
    XEN_DEFAULT_UPCALL_INTID,
};
pub use platform::{NamedRange, PsciConduit, RegionNode, Uart, UartKind};
pub use range::PhysRange;
