//! Builds the eBPF object with the pinned nightly (see `scripts/setup`) for `include_bytes_aligned!`.
use anyhow::anyhow;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // The eBPF crate sits beside this one; its directory is all aya-build needs.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiler-ebpf");
    let root = root
        .canonicalize()
        .map_err(|e| anyhow!("profiler-ebpf not found next to profiler: {e}"))?;
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path"))?
        .to_owned();
    println!("cargo:rerun-if-changed=../profiler-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "profiler-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        // Must be the toolchain bpf-linker was built against (scripts/setup links it).
        Toolchain::Custom("cowprof-nightly"),
    )
}
