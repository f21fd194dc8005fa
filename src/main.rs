//! sramlink-guest: a bare-metal AArch64 kernel that serves a shared-memory ring to its peer.
//!
//! It boots as an arm64 Linux Image (under Xen as a dom0less domU, or directly on QEMU
//! `virt`), finds its console, PSCI conduit and the `mmio-sram` shared region in the device
//! tree, maps them, creates the ring and answers the peer until told to stop. The boot flow is
//! drawn in `kernel.rs`; the logic it relies on lives in the `sramlink` library (host-tested).
//!
//! Module rules: only `arch` touches system registers or assembly; `pl011` and `console` are
//! the only device code; `kernel` strings the boot flow together.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[macro_use]
mod console;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod arch;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod events;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod kernel;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod pl011;

/// Reports a panic like any fatal error, then stops.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(location) => console::emergency(format_args!(
            "sramlink: error: panic at {}:{}: {}\n",
            location.file(),
            location.line(),
            info.message()
        )),
        None => console::emergency(format_args!("sramlink: error: panic: {}\n", info.message())),
    }
    console::emergency(format_args!("sramlink: stopping\n"));
    arch::psci::system_off()
}

/// On the host there is nothing to run: the kernel only exists for `aarch64-unknown-none`.
#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "sramlink-guest is a bare-metal kernel: it runs on aarch64-unknown-none \
         (cargo xtask build, or cargo build -p sramlink --release --target aarch64-unknown-none)"
    );
}
