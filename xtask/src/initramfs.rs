//! dom0's initramfs: a newc cpio archive with static busybox, the static peer, the sramlink
//! module and its helper, and an init script.
//!
//! Layout: `/bin/busybox`, `/bin/sramlink-peer`, `/bin/sramlink-dom0-helper`,
//! `/lib/modules/sramlink.ko` and the kernel's modules init loads (`xen-evtchn.ko`), `/init`
//! (the script, run by busybox `sh`),
//! the directories init mounts on, and `/dev/console` so init has a console before devtmpfs
//! is mounted. Applet links are made at boot by `busybox --install -s`.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What goes into the archive besides the fixed directories.
pub struct Contents<'a> {
    /// Static arm64 busybox.
    pub busybox: &'a Path,
    /// Static arm64 `sramlink-peer`.
    pub peer: &'a Path,
    /// Static arm64 `sramlink-dom0-helper` (drops privileges, checks mmap bounds).
    pub helper: &'a Path,
    /// `sramlink.ko` built for dom0's kernel.
    pub module: &'a Path,
    /// Text of `/init` (starts with `#!/bin/busybox sh`).
    pub init_script: &'a str,
    /// Kernel modules, placed in `/lib/modules/` under their file names (init loads them).
    pub modules: &'a [PathBuf],
}

/// Directories created in the archive, in order.
const DIRECTORIES: &[&str] = &[
    "bin",
    "dev",
    "etc",
    "lib",
    "lib/modules",
    "proc",
    "root",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "usr/bin",
    "usr/sbin",
];

/// One archive member.
enum Member<'a> {
    Directory,
    File { mode: u32, data: &'a [u8] },
    CharDevice { major: u32, minor: u32 },
}

/// Writes the initramfs to `out`.
pub fn build(contents: &Contents<'_>, out: &Path) -> Result<()> {
    let busybox = std::fs::read(contents.busybox)
        .with_context(|| format!("reading {}", contents.busybox.display()))?;
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let peer = read(contents.peer)?;
    let mut extra = vec![
        (
            crate::module::HELPER_IN_INITRAMFS.to_string(),
            0o755,
            read(contents.helper)?,
        ),
        (
            crate::module::MODULE_IN_INITRAMFS.to_string(),
            0o644,
            read(contents.module)?,
        ),
    ];
    for module in contents.modules {
        let name = module
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| format!("module path {} has no file name", module.display()))?;
        extra.push((format!("lib/modules/{name}"), 0o644, read(module)?));
    }
    let archive = archive(&busybox, &peer, &extra, contents.init_script)?;
    std::fs::write(out, archive).with_context(|| format!("writing {}", out.display()))
}

/// The archive bytes; `extra` are more files (path, mode, contents) in existing directories.
fn archive(
    busybox: &[u8],
    peer: &[u8],
    extra: &[(String, u32, Vec<u8>)],
    init_script: &str,
) -> Result<Vec<u8>> {
    let mut members: Vec<(&str, Member<'_>)> = DIRECTORIES
        .iter()
        .map(|dir| (*dir, Member::Directory))
        .collect();
    members.push(("dev/console", Member::CharDevice { major: 5, minor: 1 }));
    members.push((
        "bin/busybox",
        Member::File {
            mode: 0o755,
            data: busybox,
        },
    ));
    members.push((
        "bin/sramlink-peer",
        Member::File {
            mode: 0o755,
            data: peer,
        },
    ));
    for (path, mode, data) in extra {
        members.push((
            path,
            Member::File {
                mode: *mode,
                data: data.as_slice(),
            },
        ));
    }
    members.push((
        "init",
        Member::File {
            mode: 0o755,
            data: init_script.as_bytes(),
        },
    ));

    let mut out = Vec::new();
    for (inode, (name, member)) in (1u32..).zip(members) {
        let builder = cpio::newc::Builder::new(name).ino(inode).uid(0).gid(0);
        let (builder, data): (_, &[u8]) = match member {
            Member::Directory => (builder.mode(0o040_755).nlink(2), &[]),
            Member::File { mode, data } => (builder.mode(0o100_000 | mode).nlink(1), data),
            Member::CharDevice { major, minor } => (
                builder
                    .mode(0o020_600)
                    .nlink(1)
                    .rdev_major(major)
                    .rdev_minor(minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).context("initramfs member larger than 4 GiB")?;
        let mut writer = builder.write(&mut out, size);
        writer.write_all(data)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_reads_back_with_modes_and_contents() {
        let extra = [
            ("lib/modules/sramlink.ko".to_string(), 0o644, b"KO".to_vec()),
            (
                "lib/modules/xen-evtchn.ko".to_string(),
                0o644,
                b"ELF".to_vec(),
            ),
        ];
        let bytes =
            archive(b"BUSYBOX", b"PEER!", &extra, "#!/bin/busybox sh\necho hi\n").expect("builds");
        let mut rest: &[u8] = &bytes;
        let mut seen = Vec::new();
        loop {
            let mut reader = cpio::newc::Reader::new(rest).expect("entry header");
            if reader.entry().is_trailer() {
                break;
            }
            let name = reader.entry().name().to_string();
            let mode = reader.entry().mode();
            let rdev = (reader.entry().rdev_major(), reader.entry().rdev_minor());
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("data");
            seen.push((name, mode, rdev, data));
            rest = reader.finish().expect("next entry");
        }
        let find = |name: &str| seen.iter().find(|entry| entry.0 == name).expect(name);
        assert_eq!(find("init").1, 0o100_755);
        assert_eq!(find("init").3, b"#!/bin/busybox sh\necho hi\n");
        assert_eq!(find("bin/busybox").3, b"BUSYBOX");
        assert_eq!(find("bin/sramlink-peer").3, b"PEER!");
        assert_eq!(find("lib/modules/sramlink.ko").1, 0o100_644);
        assert_eq!(find("lib/modules/sramlink.ko").3, b"KO");
        assert_eq!(find("dev/console").1, 0o020_600);
        assert_eq!(find("dev/console").2, (5, 1));
        assert_eq!(find("proc").1, 0o040_755);
        // Every directory precedes the files inside it.
        let position = |name: &str| seen.iter().position(|entry| entry.0 == name).expect(name);
        assert!(position("bin") < position("bin/busybox"));
        assert!(position("dev") < position("dev/console"));
        assert!(position("lib/modules") < position("lib/modules/sramlink.ko"));
        assert_eq!(find("lib/modules/xen-evtchn.ko").3, b"ELF");
        assert!(position("lib/modules") < position("lib/modules/xen-evtchn.ko"));
    }
}
