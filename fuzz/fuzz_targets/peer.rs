//! libFuzzer target: see [`sramlink_fuzz::peer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sramlink_fuzz::peer(data));
