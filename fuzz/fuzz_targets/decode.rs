//! Arbitrary bytes into `decode::decode`: no panic, every input a `CartEvent` or an `Invalid`
//! with a reason (see `elevate_sink_fuzz::check_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    elevate_sink_fuzz::check_decode(data);
});
