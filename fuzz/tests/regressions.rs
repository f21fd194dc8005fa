//! Replays saved inputs through each fuzz target's logic as plain tests (no libFuzzer needed).
//!
//! `regressions/TARGET/*` holds inputs that once failed (each fixed since); besides them every
//! target gets a few fixed inputs and `devicetree` the project's test blob.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 3] = [
    ("service", sramlink_fuzz::service),
    ("peer", sramlink_fuzz::peer),
    ("devicetree", sramlink_fuzz::devicetree),
];

/// Every file under `regressions/NAME/`, if that directory exists.
fn saved(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

#[test]
fn saved_inputs_replay_without_panicking() {
    for (name, target) in TARGETS {
        for input in saved(name) {
            target(&input);
        }
    }
}

#[test]
fn fixed_inputs_replay_without_panicking() {
    let patterns: [Vec<u8>; 4] = [
        Vec::new(),
        vec![0xff; 4096],
        (0..4096u32).map(|i| i as u8).collect(),
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8 | 0x80)
            .collect(),
    ];
    for (_, target) in TARGETS {
        for input in &patterns {
            target(input);
        }
    }
    let blob = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../devicetree/testdata/qemu-virt-sram.dtb"),
    )
    .unwrap();
    sramlink_fuzz::devicetree(&blob);
    // Every truncation of a real blob.
    for len in (0..blob.len()).step_by(61) {
        sramlink_fuzz::devicetree(&blob[..len]);
    }
}
