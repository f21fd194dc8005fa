//! What discovery finds: the console UART, the PSCI conduit, the region node, named ranges.

use core::fmt;

use heapless::Vec;

use crate::error::NodePath;
use crate::range::PhysRange;

/// Console UART models the guest drives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UartKind {
    /// `arm,pl011`: a full PL011 (QEMU virt's board UART).
    Pl011,
    /// `arm,sbsa-uart`: the SBSA subset of the PL011 (Xen's vpl011); no baud/line control.
    SbsaUart,
}

impl UartKind {
    /// The `compatible` string of this model.
    pub const fn compatible(self) -> &'static str {
        match self {
            UartKind::Pl011 => "arm,pl011",
            UartKind::SbsaUart => "arm,sbsa-uart",
        }
    }
}

/// The console UART.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Uart {
    /// Register window.
    pub registers: PhysRange,
    /// Model.
    pub kind: UartKind,
}

/// How PSCI calls reach the firmware or hypervisor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PsciConduit {
    /// `hvc #0` (Xen, QEMU without EL2).
    Hvc,
    /// `smc #0` (QEMU with `virtualization=on`, firmware).
    Smc,
}

impl fmt::Display for PsciConduit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PsciConduit::Hvc => "hvc",
            PsciConduit::Smc => "smc",
        })
    }
}

/// The chosen `mmio-sram` node, decoded but not yet validated against the guest's memory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegionNode {
    /// Where it is in the tree.
    pub path: NodePath,
    /// Its single `reg` entry.
    pub range: PhysRange,
    /// `sramlink,cacheable` is present: map Normal write-back instead of Device-nGnRE.
    pub cacheable: bool,
}

/// One decoded `reg` entry and the node it came from (e.g. a `/reserved-memory` child).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NamedRange {
    /// The node's path.
    pub path: NodePath,
    /// The entry, translated to a CPU physical address.
    pub range: PhysRange,
}

/// RAM a guest may treat as its own: every bank minus every reserved range, in order (at most
/// `N` pieces; `N` = banks + holes always suffices).
pub fn usable_memory<const N: usize>(
    memory: &[PhysRange],
    reserved: impl IntoIterator<Item = PhysRange>,
) -> Vec<PhysRange, N> {
    let mut usable: Vec<PhysRange, N> = memory.iter().copied().collect();
    for hole in reserved {
        let mut next: Vec<PhysRange, N> = Vec::new();
        for range in &usable {
            let (below, above) = range.subtract(&hole);
            // Each hole splits at most one range in two (holes are removed one at a time
            // from disjoint pieces), and the capacity is banks + holes.
            for piece in [below, above].into_iter().flatten() {
                if !piece.is_empty() {
                    let _ = next.push(piece);
                }
            }
        }
        usable = next;
    }
    usable
}
