#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hypervisor::fuzz_targets::pl031(data));
