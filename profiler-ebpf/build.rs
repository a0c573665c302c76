//! Exports the object's global BPF functions from bpf-linker, which makes every other symbol
//! static: a global function is verified once, by itself (see `cowprof_emit_op` and
//! `cowprof_walk_kp`). Only for the BPF target: `cargo test --workspace` also builds this crate
//! for the host, whose linker has no such option.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg=--export=cowprof_emit_op");
        println!("cargo:rustc-link-arg=--export=cowprof_walk_kp");
    }
}
