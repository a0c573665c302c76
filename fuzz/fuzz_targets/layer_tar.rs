#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cowprof::fuzzing::layer_tar(data);
});
