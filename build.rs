//! Build script: links the guest kernel with `linker.ld` when building for `aarch64-unknown-none`.
//!
//! Host builds (tests, clippy) use the platform's default linking, so nothing is added there.

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "aarch64-unknown-none" {
        let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        // Only the bin: the library is also used by host tests and must not get the script.
        println!("cargo:rustc-link-arg-bins=-T{manifest_dir}/linker.ld");
    }
}
