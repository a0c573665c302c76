//! Builds the eBPF object with the pinned nightly (see `scripts/setup`) for `include_bytes_aligned!`.
//!
//! aya-build compiles the eBPF crate (and `core` for `bpfel-unknown-none`) in a cargo target
//! directory under `OUT_DIR`, which differs for every profile and host target: a check, a test
//! build, a release and a static (musl) build each compiled the same object again (about 35 s
//! each on a 2-core machine). It is given one shared `OUT_DIR` instead, `<target dir>/bpf`, whose
//! nested build cargo finds fresh after the first, and the object is copied from there.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// The cargo target directory this build runs in: `OUT_DIR` is
/// `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
fn target_root(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir
        .ancestors()
        .find(|p| p.file_name() == Some("build".as_ref()))?;
    let mut root = build.parent()?.parent()?;
    if let Some(triple) = env::var_os("TARGET") {
        if root.file_name() == Some(triple.as_os_str()) {
            root = root.parent()?;
        }
    }
    Some(root.to_path_buf())
}

fn main() -> anyhow::Result<()> {
    // The eBPF crate sits beside this one; its directory is all aya-build needs. Read when the
    // script runs, not when it was compiled: a checkout moved with its target directory keeps
    // this script's binary, and the path baked into it would name the old place.
    let manifest_dir =
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?;
    let root = Path::new(&manifest_dir).join("../profiler-ebpf");
    let root = root
        .canonicalize()
        .map_err(|e| anyhow!("profiler-ebpf not found next to profiler: {e}"))?;
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path"))?
        .to_owned();
    println!("cargo:rerun-if-changed=../profiler-common/src");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let Some(shared) = target_root(&out_dir).map(|t| t.join("bpf")) else {
        return build(&root);
    };
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    // Builds running at once share the directory: one at a time builds and copies.
    let lock = fs::File::create(shared.join(".lock"))?;
    lock.lock()?;
    // Only this build script runs in this process; aya-build reads the variable.
    env::set_var("OUT_DIR", &shared);
    build(&root)?;
    env::set_var("OUT_DIR", &out_dir);
    let (from, to) = (shared.join("cowprof"), out_dir.join("cowprof"));
    fs::copy(&from, &to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The eBPF object into `OUT_DIR`'s `cowprof`.
fn build(root: &str) -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [Package {
            name: "profiler-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        // Must be the toolchain bpf-linker was built against (scripts/setup links it).
        Toolchain::Custom("cowprof-nightly"),
    )
}
