//! Xpress chunk decoder on arbitrary input: never panics, never hangs, never
//! writes past the requested size. The first 3 bytes pick the output size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wimguard_sdk::Codec;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let size = (u32::from_le_bytes([data[0], data[1], data[2], 0]) as usize) % 65536 + 1;
    let chunk = size.next_power_of_two().max(32768);
    let mut d = wimguard_xpress::Xpress.decompressor(chunk);
    let mut out = vec![0u8; size];
    let _ = d.decompress(&data[3..], &mut out);
});
