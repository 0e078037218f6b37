//! Arbitrary bytes, and arbitrary JSON built from them with `arbitrary`, into
//! `select::map_record` / `select::select`: no panic, every input mapped (each line accounted
//! for, consent rules obeyed) or given an `Invalid` reason (see `elevate_sink_fuzz::check_map`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    elevate_sink_fuzz::check_map(data);
});
