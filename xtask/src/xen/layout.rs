//! Boot modules placed in RAM as ImageBuilder places them, and the QEMU command line that loads
//! Xen, the host DTB and each module.

use crate::board::Board;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Module alignment (ImageBuilder's `offset`).
const MODULE_ALIGN: u64 = 0x20_0000;

/// What a boot module is to Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Dom0Kernel,
    Dom0Ramdisk,
    /// Kernel of domU number `i` (ImageBuilder's index).
    DomUKernel(usize),
    /// Partial device tree of domU `i`.
    DomUDtb(usize),
}

/// A file QEMU loads at `addr` and `/chosen` describes with its exact size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub kind: ModuleKind,
    pub path: PathBuf,
    pub addr: u64,
    pub size: u64,
}

/// Places modules one after another from `start`, each at a 2 MiB boundary (as ImageBuilder
/// does), and checks they end below `limit` (the region, or the end of RAM).
pub fn layout(files: &[(ModuleKind, PathBuf, u64)], start: u64, limit: u64) -> Result<Vec<Module>> {
    let mut addr = start;
    let mut modules = Vec::with_capacity(files.len());
    for (kind, path, size) in files {
        if *size == 0 {
            bail!("boot module {} is empty", path.display());
        }
        let end = addr + size;
        if end > limit {
            bail!(
                "boot module {} ({size:#x} bytes at {addr:#x}) would end above {limit:#x}",
                path.display()
            );
        }
        modules.push(Module {
            kind: *kind,
            path: path.clone(),
            addr,
            size: *size,
        });
        addr = end.next_multiple_of(MODULE_ALIGN);
    }
    Ok(modules)
}

/// The full `qemu-system-aarch64` argument list: the board's machine, Xen as the kernel, the
/// host DTB, each module through the generic loader, the serial console on stdout.
pub fn qemu_args(
    board: &Board,
    xen: &Path,
    host_dtb: &Path,
    modules: &[Module],
) -> Result<Vec<String>> {
    let mut args = board.machine_args();
    args.extend([
        "-kernel".into(),
        xen.display().to_string(),
        "-dtb".into(),
        host_dtb.display().to_string(),
    ]);
    for module in modules {
        let file = module.path.display().to_string();
        if file.contains(',') {
            bail!("QEMU's -device option cannot name a file with a comma: {file}");
        }
        args.push("-device".into());
        args.push(format!(
            "loader,file={file},addr={:#x},force-raw=on",
            module.addr
        ));
    }
    args.extend(
        ["-display", "none", "-monitor", "none", "-no-reboot"]
            .iter()
            .map(|arg| arg.to_string()),
    );
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::BoardId;

    /// `virt`'s first module address.
    const MODULES_START: u64 = 0x5000_0000;

    #[test]
    fn modules_are_packed_at_2_mib_boundaries_below_the_limit() {
        let files = vec![
            (ModuleKind::Dom0Kernel, PathBuf::from("k"), 0x1f6_da00),
            (ModuleKind::Dom0Ramdisk, PathBuf::from("r"), 0x40_0001),
            (ModuleKind::DomUKernel(0), PathBuf::from("g"), 0x1_0000),
            (ModuleKind::DomUDtb(0), PathBuf::from("d"), 0x190),
        ];
        let modules = layout(&files, MODULES_START, 0x7f00_0000).expect("fits");
        let addrs: Vec<u64> = modules.iter().map(|m| m.addr).collect();
        assert_eq!(addrs, [0x5000_0000, 0x5200_0000, 0x5260_0000, 0x5280_0000]);
        assert!(layout(&files, MODULES_START, 0x5280_0100).is_err());
        let empty = vec![(ModuleKind::Dom0Kernel, PathBuf::from("k"), 0)];
        assert!(layout(&empty, MODULES_START, 0x7f00_0000).is_err());
    }

    #[test]
    fn qemu_args_load_every_module() {
        let modules = vec![Module {
            kind: ModuleKind::Dom0Kernel,
            path: "/w/Image".into(),
            addr: 0x5000_0000,
            size: 1,
        }];
        let virt = BoardId::Virt.board();
        let args = qemu_args(
            virt,
            Path::new("/w/xen"),
            Path::new("/w/host.dtb"),
            &modules,
        )
        .expect("args");
        let joined = args.join(" ");
        assert!(joined.starts_with("-machine virt,virtualization=on,gic-version=3 -cpu cortex-a57 -smp 2 -m 2G -serial stdio -kernel /w/xen -dtb /w/host.dtb"));
        assert!(joined.contains("-device loader,file=/w/Image,addr=0x50000000,force-raw=on"));
        let comma = vec![Module {
            path: "/w/a,b".into(),
            ..modules[0].clone()
        }];
        assert!(qemu_args(virt, Path::new("/w/xen"), Path::new("/w/h.dtb"), &comma).is_err());
        let zcu102 = qemu_args(
            BoardId::Zcu102.board(),
            Path::new("/w/xen"),
            Path::new("/w/host.dtb"),
            &modules,
        )
        .expect("args")
        .join(" ");
        assert!(zcu102.starts_with(
            "-machine xlnx-zcu102,virtualization=on -smp 2 -m 2G -serial stdio -serial null"
        ));
    }
}
