//! Docker helpers shared by the container tests: run a command and fail with its output, the
//! `docker` CLI, and a static busybox for building test images without a registry.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

pub fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A statically linked busybox: the VM matrix's cached copy, else `busybox-static` from
/// Debian's archive unpacked (never installed: it conflicts with Debian's `busybox`).
pub fn static_busybox(cache: &Path) -> PathBuf {
    let vm =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm-cache/busybox-static/bin/busybox");
    if vm.exists() {
        return vm;
    }
    let bin = cache.join("root/bin/busybox");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(cache).expect("cache dir");
    let download = || {
        Command::new("apt-get")
            .args(["download", "busybox-static"])
            .current_dir(cache)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        run(Command::new("apt-get").args(["update", "-qq"]));
        assert!(download(), "apt-get download busybox-static failed");
    }
    let deb = std::fs::read_dir(cache)
        .expect("cache dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("busybox-static .deb");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("root")));
    bin
}
