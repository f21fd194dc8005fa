//! Random damage to a real DTB: whatever it does, interpreting the blob returns, never panics.

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use sramlink_devicetree::{FDT_HEADER_SIZE, FDT_MAGIC, discover, dtb_total_size};

/// The path of a test fixture under `testdata/`.
fn fixture(name: &str) -> String {
    format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One change to the blob. Positions are fractions of the blob (or block) length, so that
/// they stay meaningful as the blob shrinks.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte anywhere.
    FlipByte { at: f64, mask: u8 },
    /// Set one of the ten header words.
    HeaderWord { index: usize, value: u32 },
    /// Set one aligned word of the structure block (tokens, lengths, name offsets).
    StructWord { at: f64, value: u32 },
    /// Nest empty-named nodes `count` deep from an aligned structure-block offset.
    Nest { at: f64, count: usize },
    /// Cut the blob short.
    Truncate { keep: f64 },
}

/// Header and struct-block values: small ones, tokens, offsets and sizes around the
/// blob's, and anything.
fn word() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..16,
        0u32..0x2400,
        Just(FDT_MAGIC),
        (0u32..64).prop_map(|delta| 0x1e07u32.wrapping_add(delta).wrapping_sub(32)),
        Just(u32::MAX),
        (0u32..8).prop_map(|shift| u32::MAX << shift),
        any::<u32>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0.0..1.0, 1u8..=255).prop_map(|(at, mask)| Mutation::FlipByte { at, mask }),
        3 => (0usize..10, word()).prop_map(|(index, value)| Mutation::HeaderWord { index, value }),
        3 => (0.0..1.0, word()).prop_map(|(at, value)| Mutation::StructWord { at, value }),
        1 => (0.0..1.0, 1usize..2000).prop_map(|(at, count)| Mutation::Nest { at, count }),
        1 => (0.0..1.0).prop_map(|keep| Mutation::Truncate { keep }),
    ]
}

fn read_word(blob: &[u8], offset: usize) -> Option<usize> {
    Some(u32::from_be_bytes(blob.get(offset..offset + 4)?.try_into().ok()?) as usize)
}

/// An aligned offset `at` of the way into the structure block, as the header now says.
fn struct_offset(blob: &[u8], at: f64) -> Option<usize> {
    let start = read_word(blob, 8)?;
    let size = read_word(blob, 36)?;
    let offset = start.checked_add((size as f64 * at) as usize)? & !3;
    (offset + 4 <= blob.len()).then_some(offset)
}

fn apply(blob: &mut Vec<u8>, mutation: &Mutation) {
    match *mutation {
        Mutation::FlipByte { at, mask } => {
            if !blob.is_empty() {
                let index = (blob.len() as f64 * at) as usize;
                blob[index] ^= mask;
            }
        }
        Mutation::HeaderWord { index, value } => {
            if let Some(field) = blob.get_mut(index * 4..index * 4 + 4) {
                field.copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::StructWord { at, value } => {
            if let Some(offset) = struct_offset(blob, at) {
                blob[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::Nest { at, count } => {
            if let Some(mut offset) = struct_offset(blob, at) {
                for _ in 0..count {
                    if offset + 8 > blob.len() {
                        break;
                    }
                    // FDT_BEGIN_NODE, then an empty name padded to a word.
                    blob[offset..offset + 8].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
                    offset += 8;
                }
            }
        }
        Mutation::Truncate { keep } => blob.truncate((blob.len() as f64 * keep) as usize),
    }
}

/// What the kernel does with a blob: check the header, then interpret the blob.
fn interpret(blob: &[u8]) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if let Some(header) = blob.first_chunk::<FDT_HEADER_SIZE>() {
            // Only a header the kernel accepts leads it on to `discover`, but `discover`
            // must cope with any blob, so it is called regardless.
            let _ = dtb_total_size(0x4800_0000, header).map(|_| ());
        }
        match discover(blob) {
            Ok(platform) => format!("ok: {} RAM banks", platform.memory.len()),
            Err(unusable) => format!("error: {unusable}"),
        }
    }));
    match outcome {
        Ok(_) => Ok(()),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|message| String::from(*message))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!(
                "panicked ({message}) on a {}-byte blob, header {:02x?}",
                blob.len(),
                &blob[..blob.len().min(FDT_HEADER_SIZE)]
            ))
        }
    }
}

proptest! {
    // Seeds of past failures (fdt panics found before the blob was checked) are replayed
    // first.
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/dtb-fuzz.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_blobs_give_errors_not_panics(
        mutations in proptest::collection::vec(mutation(), 1..5)
    ) {
        let mut blob = std::fs::read(fixture("qemu-virt-sram.dtb")).unwrap();
        for mutation in &mutations {
            apply(&mut blob, mutation);
        }
        if let Err(panic) = interpret(&blob) {
            prop_assert!(false, "{panic}\nblob: {blob:02x?}");
        }
    }
}
