//! What the guest takes from the device tree in `x0`: the crate's boot view plus its own options.
//!
//! Interpretation (blob checks, cells, `ranges`, RAM, reserved memory, console, PSCI, the
//! `mmio-sram` region) is `sramlink-devicetree`'s, shared with the peer; this module adds what
//! only the guest reads there: its options on `/chosen/bootargs` ([`crate::bootargs`]).

// Errors carry the offending node's path in a fixed-capacity string (no allocator), so they
// are larger than clippy likes; they are built at most once per boot, never on a hot path.
#![allow(clippy::result_large_err)]

use heapless::Vec;

pub use sramlink_devicetree::{
    Cells, DtError, FDT_HEADER_SIZE, FDT_MAGIC, GicFrames, GicVersion, Hypervisor,
    InterruptController, MAX_DTB_SIZE, MAX_MEMORY_BANKS, MAX_RESERVED_RANGES, MAX_USABLE_RANGES,
    NodePath, PhysRange, PsciConduit, RegProblem, RegionNode, Timer, Uart, UartKind, UnusableTree,
    XEN_DEFAULT_UPCALL_INTID, check_dtb, decode_reg, dtb_total_size,
};

use crate::backoff::IdlePolicy;
use crate::bootargs::{self, BootArgsError};

/// Everything the guest takes from the device tree.
#[derive(Clone, PartialEq, Debug)]
pub struct Platform {
    /// RAM banks, in tree order.
    pub memory: Vec<PhysRange, MAX_MEMORY_BANKS>,
    /// `/reserved-memory` ranges, in tree order.
    pub reserved: Vec<PhysRange, MAX_RESERVED_RANGES>,
    /// The console UART, if the tree describes one.
    pub console: Option<Uart>,
    /// The PSCI conduit, if the tree has a PSCI node with a known `method`.
    pub psci: Option<PsciConduit>,
    /// The shared-region node, or why there is none to use.
    pub region: Result<RegionNode, DtError>,
    /// The idle policy `/chosen/bootargs` selects, or why its option cannot be followed.
    pub idle: Result<IdlePolicy, BootArgsError>,
    /// The spin phase's length in idle passes (`sramlink.spin=`), or why it cannot be used.
    pub spin_passes: Result<u32, BootArgsError>,
    /// The first enabled GIC, or what is wrong with it.
    pub gic: Option<Result<InterruptController, DtError>>,
    /// Xen's `/hypervisor` node, or what is wrong with it.
    pub hypervisor: Option<Result<Hypervisor, DtError>>,
    /// The generic timer's node, or what is wrong with it.
    pub timer: Option<Result<Timer, DtError>>,
    /// The bound of an `irq` sleep in milliseconds (`sramlink.tick=`), or why it cannot be used.
    pub tick_ms: Result<u32, BootArgsError>,
}

impl Platform {
    /// RAM the guest may treat as its own: every bank minus every reserved range, in order.
    pub fn usable_memory(&self) -> Vec<PhysRange, MAX_USABLE_RANGES> {
        sramlink_devicetree::platform::usable_memory(&self.memory, self.reserved.iter().copied())
    }
}

/// Interprets a DTB as [`sramlink_devicetree::discover`] does (any blob, checked first; an
/// unusable tree still names its console and PSCI conduit), then reads the guest's options.
pub fn discover(dtb: &[u8]) -> Result<Platform, UnusableTree> {
    let platform = sramlink_devicetree::discover(dtb)?;
    Ok(Platform {
        idle: bootargs::idle_policy(platform.bootargs),
        spin_passes: bootargs::spin_passes(platform.bootargs, crate::backoff::SPIN_PASSES),
        memory: platform.memory,
        reserved: platform.reserved,
        console: platform.console,
        psci: platform.psci,
        region: platform.region,
        gic: platform.interrupt_controller,
        hypervisor: platform.hypervisor,
        timer: platform.timer,
        tick_ms: bootargs::tick_ms(platform.bootargs, crate::backoff::TICK_MS),
    })
}

#[cfg(test)]
mod tests {
    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::*;

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    fn header(blob: &[u8]) -> [u8; FDT_HEADER_SIZE] {
        blob[..FDT_HEADER_SIZE].try_into().unwrap()
    }

    /// The crate's fixture: QEMU virt's tree with the region added.
    fn fixture(name: &str) -> String {
        std::format!("{}/devicetree/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn qemu_virt_fixture_gives_ram_console_psci_and_region() {
        let blob = std::fs::read(fixture("qemu-virt-sram.dtb")).unwrap();
        assert_eq!(dtb_total_size(0x4800_0000, &header(&blob)), Ok(blob.len()));
        let platform = discover(&blob).unwrap();
        assert_eq!(
            platform.memory.as_slice(),
            &[range(0x4000_0000, 0x8000_0000)]
        );
        assert_eq!(
            platform.reserved.as_slice(),
            &[range(0x7f00_0000, 0x8000_0000)]
        );
        assert_eq!(
            platform.usable_memory().as_slice(),
            &[range(0x4000_0000, 0x7f00_0000)]
        );
        assert_eq!(
            platform.console,
            Some(Uart {
                registers: range(0x0900_0000, 0x0900_1000),
                kind: UartKind::Pl011
            })
        );
        assert_eq!(platform.psci, Some(PsciConduit::Hvc));
        let region = platform.region.unwrap();
        assert_eq!(region.path, "/sram@7f000000");
        assert_eq!(region.range, range(0x7f00_0000, 0x8000_0000));
        assert!(!region.cacheable);
        assert_eq!(platform.idle, Ok(IdlePolicy::Irq));
    }

    /// A tree whose `/chosen` holds `bootargs` (when given), and another node holding
    /// `other_bootargs`, which must be ignored.
    fn tree_with_bootargs(bootargs: Option<&str>, other_bootargs: &str) -> Vec<u8> {
        let mut writer = vm_fdt::FdtWriter::new().unwrap();
        let root = writer.begin_node("").unwrap();
        let chosen = writer.begin_node("chosen").unwrap();
        if let Some(bootargs) = bootargs {
            writer.property_string("bootargs", bootargs).unwrap();
        }
        let domu = writer.begin_node("domU1").unwrap();
        writer.property_string("bootargs", other_bootargs).unwrap();
        writer.end_node(domu).unwrap();
        writer.end_node(chosen).unwrap();
        let memory = writer.begin_node("memory").unwrap();
        writer.property_string("device_type", "memory").unwrap();
        writer
            .property_array_u32("reg", &[0, 0x4000_0000, 0x1000_0000])
            .unwrap();
        writer.end_node(memory).unwrap();
        writer.end_node(root).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn chosen_bootargs_select_the_idle_policy() {
        let idle = |bootargs| {
            discover(&tree_with_bootargs(bootargs, "sramlink.idle=bogus"))
                .unwrap()
                .idle
        };
        assert_eq!(idle(None), Ok(IdlePolicy::Irq));
        assert_eq!(idle(Some("console=hvc0")), Ok(IdlePolicy::Irq));
        assert_eq!(
            idle(Some("console=hvc0 sramlink.idle=busy-poll")),
            Ok(IdlePolicy::BusyPoll)
        );
        assert_eq!(idle(Some("sramlink.idle=wfe")), Ok(IdlePolicy::Wfe));
        assert_eq!(
            idle(Some("sramlink.idle=sleep")).unwrap_err().to_string(),
            "bootargs: sramlink.idle=\"sleep\" is unknown (accepted values: wfe, irq, busy-poll)"
        );
        // A bad option does not hide the rest of the platform.
        let platform = discover(&tree_with_bootargs(Some("sramlink.idle=x"), "")).unwrap();
        assert!(platform.idle.is_err());
        assert_eq!(platform.memory.len(), 1);
    }
}
