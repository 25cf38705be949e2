#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrotel_probe_fuzz::pclntab(data));
