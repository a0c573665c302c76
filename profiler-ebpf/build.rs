//! Exports the object's global BPF functions from bpf-linker, which makes every other symbol
//! static: a global function is verified once, by itself (see `cowprof_emit_op`).
fn main() {
    println!("cargo:rustc-link-arg=--export=cowprof_emit_op");
}
