//! AArch64: boot assembly, exception vectors, MMU, PSCI, counter, GIC, hypercalls, CPU helpers.

mod boot;
pub mod cpu;
mod exception;
pub mod gic;
pub mod hypercall;
pub mod layout;
pub mod mmu;
pub mod psci;
pub mod timer;
