//! libFuzzer target: see [`sramlink_fuzz::service`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sramlink_fuzz::service(data));
