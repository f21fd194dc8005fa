//! Where the workspace is and where xtask puts what it builds, logs and reports.

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory for the workspace (honours `CARGO_TARGET_DIR`).
pub fn cargo_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// `target/sramlink/`: the guest Image, reports, logs and the download cache.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target").join("sramlink")
}

/// `target/sramlink/reports/`: JSON reports of demo and test runs.
pub fn reports_dir() -> PathBuf {
    out_dir().join("reports")
}

/// `target/sramlink/logs/`: full console logs of every QEMU run.
pub fn logs_dir() -> PathBuf {
    out_dir().join("logs")
}

/// `target/sramlink/work/NAME/`: scratch files of one run (DTBs, initramfs), kept for inspection.
pub fn work_dir(name: &str) -> PathBuf {
    out_dir().join("work").join(name)
}
