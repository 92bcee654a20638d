#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hypervisor::fuzz_targets::virtio_queue(data));
