//! The boards the Xen run boots, as data: one description per board says which QEMU machine,
//! CPU, RAM and serial ports it is, where its device tree comes from, where the boot modules go
//! and which ImageBuilder config of `xen-config/` drives its boot (Xen's console, command lines,
//! domU). A new board is a new entry here and its config in `xen-config/`.

use clap::ValueEnum;

/// A board `cargo xtask demo --board` accepts.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug, Default)]
pub enum BoardId {
    /// QEMU `virt` with GICv3 and Cortex-A57s.
    #[default]
    Virt,
    /// The emulated Xilinx ZCU102 (ZynqMP: Cortex-A53s, GIC-400, RAM from 0), the board the
    /// recipe is written for.
    Zcu102,
}

impl BoardId {
    /// Every board, in the order the tests boot them.
    pub const ALL: [BoardId; 2] = [BoardId::Virt, BoardId::Zcu102];

    /// The board's description.
    pub fn board(self) -> &'static Board {
        match self {
            BoardId::Virt => &VIRT,
            BoardId::Zcu102 => &ZCU102,
        }
    }
}

/// Where the board's host device tree comes from before QEMU's own edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbOrigin {
    /// QEMU builds it for the machine (`virt`).
    Qemu,
    /// A DTB shipped in Debian's arm64 kernel package, at this path under its
    /// `usr/lib/linux-image-*/` (QEMU requires `-dtb` for the machine and then edits it).
    DebianKernel(&'static str),
}

/// One board.
#[derive(Debug)]
pub struct Board {
    pub id: BoardId,
    /// Short name: reports, work directories and logs carry it.
    pub name: &'static str,
    /// What the report's `platform` says.
    pub description: &'static str,
    /// `-machine` (EL2 on for Xen).
    pub machine: &'static str,
    /// CPU, cores and RAM.
    pub cpu_args: &'static [&'static str],
    /// Serial ports: the first is Xen's console (stdio), in the order of the DTB's UARTs.
    pub serial_args: &'static [&'static str],
    /// Other machine options (given to the DTB dump too, so it describes the booted machine).
    pub extra_args: &'static [&'static str],
    /// RAM as QEMU describes it with `cpu_args`' `-m`: (start, size) per bank.
    pub ram: &'static [(u64, u64)],
    /// The host device tree's origin.
    pub dtb: DtbOrigin,
    /// First boot-module address: above Xen (QEMU's `-kernel`) and QEMU's DTB.
    pub modules_start: u64,
    /// The ImageBuilder config in `xen-config/` that drives the boot.
    pub config: &'static str,
    /// A device-tree fragment under `xen-config/qemu-only/` for what only QEMU's model of the
    /// board needs; never part of the board's shipped files.
    pub qemu_only_fragment: Option<&'static str>,
    /// Suffix of report, work-directory and log names (`virt` keeps the historical names).
    pub run_suffix: &'static str,
}

impl Board {
    /// Machine, CPU, serial and other options: everything but the kernel, DTB and modules.
    pub fn machine_args(&self) -> Vec<String> {
        let mut args = vec!["-machine".to_string(), self.machine.to_string()];
        for list in [self.cpu_args, self.serial_args, self.extra_args] {
            args.extend(list.iter().map(|arg| arg.to_string()));
        }
        args
    }

    /// The options a DTB dump needs (the serial ports are the console's, not the machine's).
    pub fn dump_args(&self) -> Vec<&'static str> {
        self.cpu_args
            .iter()
            .chain(self.extra_args)
            .copied()
            .collect()
    }

    /// `base` with the board's suffix (`xen-qemu` → `xen-qemu-zcu102`).
    pub fn run_name(&self, base: &str) -> String {
        format!("{base}{}", self.run_suffix)
    }
}

/// QEMU `virt`: EL2 for Xen, GICv3 (Debian's Xen supports it); two cores, dom0 (1 vCPU,
/// pinned) and the domU each get one. QEMU loads Xen at 0x4020_0000 and its DTB at
/// 0x4800_0000.
static VIRT: Board = Board {
    id: BoardId::Virt,
    name: "virt",
    description: "xen-on-qemu-virt, dom0 peer, dom0less domU guest",
    machine: "virt,virtualization=on,gic-version=3",
    cpu_args: &["-cpu", "cortex-a57", "-smp", "2", "-m", "2G"],
    serial_args: &["-serial", "stdio"],
    extra_args: &[],
    ram: &[(0x4000_0000, 0x8000_0000)],
    dtb: DtbOrigin::Qemu,
    modules_start: 0x5000_0000,
    config: "qemu-virt.config",
    qemu_only_fragment: None,
    run_suffix: "",
};

/// QEMU `xlnx-zcu102`: the ZynqMP's fixed Cortex-A53s (two of four), `-m 2G` (QEMU describes
/// one bank 0..0x8000_0000; `-m 4G` would cover the MMIO hole), UART0 as Xen's console and a
/// second `-serial` for UART1. QEMU loads Xen at 0x20_0000 and its DTB at 0x800_0000; dom0's
/// 1 GiB lands at 0x2000_0000. The DisplayPort model's audio gets the silent backend.
static ZCU102: Board = Board {
    id: BoardId::Zcu102,
    name: "zcu102",
    description: "xen-on-qemu-xlnx-zcu102, dom0 peer, dom0less domU guest",
    machine: "xlnx-zcu102,virtualization=on",
    cpu_args: &["-smp", "2", "-m", "2G"],
    serial_args: &["-serial", "stdio", "-serial", "null"],
    extra_args: &["-audiodev", "none,id=sramlink-audio"],
    ram: &[(0x0, 0x8000_0000)],
    dtb: DtbOrigin::DebianKernel("xilinx/zynqmp-zcu102-rev1.0.dtb"),
    modules_start: 0x1000_0000,
    config: "zcu102.config",
    qemu_only_fragment: Some("zcu102-gic-smp2.dtsi"),
    run_suffix: "-zcu102",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_keep_modules_inside_their_ram() {
        for id in BoardId::ALL {
            let board = id.board();
            assert_eq!(board.id, id);
            let (start, size) = board.ram[0];
            assert!(board.modules_start >= start && board.modules_start < start + size);
            assert!(
                board.machine.contains("virtualization=on"),
                "{}",
                board.name
            );
            assert_eq!(board.serial_args[..2], ["-serial", "stdio"]);
        }
        assert_eq!(
            BoardId::Zcu102.board().run_name("xen-qemu"),
            "xen-qemu-zcu102"
        );
        assert_eq!(BoardId::Virt.board().run_name("xen-qemu"), "xen-qemu");
    }
}
