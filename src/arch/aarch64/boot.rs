//! The entry assembly (`boot/entry.s`, `boot/vectors.s`) and the hand-over to Rust.
//!
//! Boot flow: `_start` (Image header, boot CPU only, EL2 → EL1, FP on, vectors, stacks, BSS) →
//! [`_start_rust`] → [`crate::kernel::kernel_init`] (MMU off: device tree, page tables, MMU on)
//! → `kernel_main` (safe code: console, shared region, serving loop, stop).

use core::arch::global_asm;

/// Image header `text_offset`: QEMU and Xen both load the image at RAM base + this
/// (0x4000_0000 + 0x20_0000 = 0x4020_0000, where `linker.ld` links it).
const TEXT_OFFSET: u64 = 0x20_0000;
/// Image header flags: bit 0 = 0 little-endian, bits 1-2 = 0b01 4 KiB pages, bit 3 = 0 the
/// 2 MiB-aligned base goes as close as possible to the start of DRAM. Bit 3 = 1 ("anywhere in
/// physical memory") would be a lie: the image is linked at one address (RAM base +
/// `text_offset`) and parks if loaded elsewhere.
const IMAGE_FLAGS: u64 = 0b0010;
/// MPIDR_EL1 affinity fields Aff3 (39:32), Aff2, Aff1, Aff0 (23:0).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// The CPU that runs the kernel: affinity 0.0.0.0, the one QEMU and Xen start.
const BOOT_CPU_AFFINITY: u64 = 0;
/// HCR_EL2: only RW (bit 31), EL1 runs AArch64; no stage 2 and no traps.
const HCR_EL2_VALUE: u64 = 1 << 31;
/// CPTR_EL2 (without VHE): the RES1 bits 13:12 and 9:0; TFP (bit 10) clear, no FP/SIMD trap.
const CPTR_EL2_VALUE: u64 = 0x33ff;
/// SCTLR_EL1 with only the Armv8.0 RES1 bits (29, 28, 23, 22, 20, 11): MMU, caches, alignment
/// checking off, little-endian.
const SCTLR_EL1_VALUE: u64 = 0x30d0_0800;
/// SPSR_EL2 for the return to EL1: M = EL1h (0b0101), D, A, I, F masked (bits 9:6).
const SPSR_EL2_VALUE: u64 = 0x3c5;
/// CPACR_EL1.FPEN = 0b11: no trap of FP/SIMD instructions at EL1 or EL0.
const CPACR_EL1_VALUE: u64 = 0b11 << 20;

global_asm!(
    include_str!("../../../boot/entry.s"),
    TEXT_OFFSET = const TEXT_OFFSET,
    IMAGE_FLAGS = const IMAGE_FLAGS,
    MPIDR_AFFINITY_MASK = const MPIDR_AFFINITY_MASK,
    BOOT_CPU_AFFINITY = const BOOT_CPU_AFFINITY,
    HCR_EL2_VALUE = const HCR_EL2_VALUE,
    CPTR_EL2_VALUE = const CPTR_EL2_VALUE,
    SCTLR_EL1_VALUE = const SCTLR_EL1_VALUE,
    SPSR_EL2_VALUE = const SPSR_EL2_VALUE,
    CPACR_EL1_VALUE = const CPACR_EL1_VALUE,
);
global_asm!(include_str!("../../../boot/vectors.s"));

/// First Rust code: called once by `boot/entry.s` on the boot CPU.
///
/// # Safety
///
/// Only `boot/entry.s` calls this, once, at EL1 with the MMU off, BSS zeroed, SP_EL0 on the
/// boot stack and VBAR_EL1 set: what [`crate::kernel::kernel_init`] requires.
#[unsafe(no_mangle)]
unsafe extern "C" fn _start_rust(dtb_address: u64, entry_el: u64) -> ! {
    // SAFETY: the entry assembly established exactly the state `kernel_init` requires (see
    // above) and calls this function once.
    unsafe { crate::kernel::kernel_init(dtb_address, entry_el) }
}
