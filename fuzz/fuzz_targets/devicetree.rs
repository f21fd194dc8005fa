//! libFuzzer target: see [`sramlink_fuzz::devicetree`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sramlink_fuzz::devicetree(data));
