//! AArch64: boot assembly, exception vectors, MMU, PSCI, counter and CPU helpers.

mod boot;
pub mod cpu;
mod exception;
pub mod layout;
pub mod mmu;
pub mod psci;
pub mod timer;
