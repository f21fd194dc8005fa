//! Builds the guest (ELF → arm64 Linux Image) and the peer for the host and for AArch64 Linux.

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSegment};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Target triple of the bare-metal guest.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
/// Target triple of the static dom0 peer.
pub const DOM0_TARGET: &str = "aarch64-unknown-linux-musl";
/// Offset of the `ARM\x64` magic in an arm64 Image header.
const IMAGE_MAGIC_OFFSET: usize = 0x38;

/// What `cargo xtask build` produces.
pub struct Built {
    pub guest_image: PathBuf,
    pub peer_host: PathBuf,
    pub peer_aarch64: PathBuf,
}

/// Builds everything.
pub fn build_all() -> Result<Built> {
    Ok(Built {
        guest_image: guest_image()?,
        peer_host: peer_host()?,
        peer_aarch64: peer_aarch64()?,
    })
}

/// Runs `cargo ARGS…` with the toolchain that runs xtask.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_env(&[], args)
}

/// Runs `cargo ARGS…` with extra environment variables.
pub fn cargo_env(env: &[(&str, &str)], args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(crate::paths::workspace_root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the guest kernel and writes `target/sramlink/guest.img`.
pub fn guest_image() -> Result<PathBuf> {
    cargo(&[
        "build",
        "--quiet",
        "--release",
        "--package",
        "sramlink",
        "--bin",
        "sramlink-guest",
        "--target",
        GUEST_TARGET,
    ])?;
    let elf = crate::paths::cargo_target_dir()
        .join(GUEST_TARGET)
        .join("release")
        .join("sramlink-guest");
    let image = crate::paths::out_dir().join("guest.img");
    std::fs::create_dir_all(crate::paths::out_dir())?;
    elf_to_image(&elf, &image)?;
    Ok(image)
}

/// Builds the peer for this host.
pub fn peer_host() -> Result<PathBuf> {
    cargo(&[
        "build",
        "--quiet",
        "--release",
        "--package",
        "sramlink-peer",
    ])?;
    Ok(crate::paths::cargo_target_dir()
        .join("release")
        .join("sramlink-peer"))
}

/// Builds the peer as a static AArch64 Linux binary (linked by rust-lld, see .cargo/config.toml),
/// without debug info: it goes into dom0's initramfs (about 1 MiB instead of 11).
pub fn peer_aarch64() -> Result<PathBuf> {
    cargo_env(
        &[("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")],
        &[
            "build",
            "--quiet",
            "--release",
            "--package",
            "sramlink-peer",
            "--target",
            DOM0_TARGET,
        ],
    )?;
    Ok(crate::paths::cargo_target_dir()
        .join(DOM0_TARGET)
        .join("release")
        .join("sramlink-peer"))
}

/// Flattens the loadable segments of the guest ELF into a raw Image (what `objcopy -O binary`
/// does) and checks that the result starts with a valid arm64 Image header.
pub fn elf_to_image(elf_path: &Path, image_path: &Path) -> Result<()> {
    let data =
        std::fs::read(elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let image = flatten_elf(&data).with_context(|| format!("flattening {}", elf_path.display()))?;
    check_image_header(&image)?;
    std::fs::write(image_path, &image)
        .with_context(|| format!("writing {}", image_path.display()))?;
    Ok(())
}

/// Concatenates the file contents of all loadable segments at their load addresses.
fn flatten_elf(data: &[u8]) -> Result<Vec<u8>> {
    let file = object::File::parse(data)?;
    let segments: Vec<_> = file
        .segments()
        .filter_map(|segment| {
            let (offset, size) = segment.file_range();
            (size > 0).then_some((segment.address(), offset, size))
        })
        .collect();
    let Some(base) = segments.iter().map(|(address, _, _)| *address).min() else {
        bail!("the ELF has no loadable segment with contents");
    };
    let end = segments
        .iter()
        .map(|(address, _, size)| address + size)
        .max()
        .unwrap_or(base);
    let mut image = vec![0u8; usize::try_from(end - base)?];
    for (address, offset, size) in segments {
        let at = usize::try_from(address - base)?;
        let from = usize::try_from(offset)?;
        let len = usize::try_from(size)?;
        image[at..at + len].copy_from_slice(&data[from..from + len]);
    }
    Ok(image)
}

/// Checks the arm64 Image header fields Xen and QEMU rely on.
fn check_image_header(image: &[u8]) -> Result<()> {
    if image.len() < 64 {
        bail!("the guest Image is only {} bytes long", image.len());
    }
    if &image[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4] != b"ARM\x64" {
        bail!("the guest Image has no arm64 magic at 0x38");
    }
    let word = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"));
    let image_size = word(16);
    if image_size < image.len() as u64 {
        bail!(
            "the Image header says image_size={image_size:#x}, smaller than the file ({:#x})",
            image.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_without_magic_is_refused() {
        let image = vec![0u8; 128];
        assert!(check_image_header(&image).is_err());
    }

    #[test]
    fn header_with_magic_and_size_is_accepted() {
        let mut image = vec![0u8; 128];
        image[16..24].copy_from_slice(&4096u64.to_le_bytes());
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(check_image_header(&image).is_ok());
        image[16..24].copy_from_slice(&64u64.to_le_bytes());
        assert!(check_image_header(&image).is_err());
    }
}
