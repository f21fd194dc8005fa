//! The architecture boundary: the kernel reaches the CPU only through what is re-exported here.
//!
//! One architecture exists (AArch64); the module split keeps every system-register access and
//! every line of assembly in one place, behind `cfg(target_arch = "aarch64")`.

#[cfg(target_arch = "aarch64")]
mod aarch64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::{cpu, gic, hypercall, layout, mmu, psci, timer};

#[cfg(not(target_arch = "aarch64"))]
compile_error!("the sramlink guest kernel runs on AArch64 only");
