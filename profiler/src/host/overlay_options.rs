//! Which overlay mount options this kernel accepts, found by asking it: an overlay superblock is
//! configured with the options (`fsopen` + `fsconfig`, the new mount API) over scratch layers and
//! created, never mounted anywhere. The kernel's own message says why an option is refused
//! (`overlayfs: Unknown parameter 'fsync'`), read back from the configuration fd.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsopen, FsOpenFlags};

/// The options `doctor` probes: (option, options it needs beside it).
pub const PROBED: &[(&str, &[&str])] = &[
    ("metacopy=on", &[]),
    ("redirect_dir=on", &[]),
    ("index=on", &[]),
    ("nfs_export=on", &["index=on"]),
    ("xino=on", &[]),
    ("volatile", &[]),
    ("userxattr", &[]),
    ("uuid=on", &[]),
    ("uuid=auto", &[]),
    ("uuid=null", &[]),
    ("uuid=off", &[]),
    ("verity=on", &["metacopy=on", "redirect_dir=on"]),
    ("verity=require", &["metacopy=on", "redirect_dir=on"]),
    ("fsync=strict", &[]),
    ("fsync=auto", &[]),
    ("fsync=volatile", &[]),
];

/// One probed option.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OptionSupport {
    pub option: String,
    pub accepted: bool,
    /// Why not: the kernel's message, or the errno.
    pub reason: Option<String>,
}

/// Scratch layers for the probes, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Scratch {
    fn new() -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cowprof-optprobe-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for d in ["l", "u", "w"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        Ok(Self(dir))
    }
}

/// Creates (does not mount) an overlay superblock with `options` over fresh scratch layers.
/// `Err` holds the kernel's reason.
pub fn try_options(options: &[String]) -> Result<(), String> {
    let scratch = Scratch::new().map_err(|e| format!("scratch layers: {e}"))?;
    try_in(&scratch.0, options)
}

fn try_in(dir: &Path, options: &[String]) -> Result<(), String> {
    let fd = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
        rustix::io::Errno::PERM => "not probed: needs root (CAP_SYS_ADMIN)".to_owned(),
        rustix::io::Errno::NODEV => {
            "not probed: overlay is not loaded (modprobe overlay)".to_owned()
        }
        e => format!("fsopen(overlay): {e}"),
    })?;
    let why = |e: rustix::io::Errno| {
        // The kernel's messages for this context, one per read ("e overlayfs: ...").
        let mut f = std::fs::File::from(fd.try_clone().expect("dup"));
        let mut msgs = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            msgs.push(
                line.split_once(' ')
                    .map_or(line.clone(), |(_, m)| m.to_owned()),
            );
        }
        if msgs.is_empty() {
            format!("refused ({e}); the kernel log says why (dmesg | grep overlayfs)")
        } else {
            format!("refused: {}", msgs.join("; "))
        }
    };
    for (key, sub) in [("lowerdir", "l"), ("upperdir", "u"), ("workdir", "w")] {
        fsconfig_set_string(&fd, key, dir.join(sub)).map_err(why)?;
    }
    for o in options {
        match o.split_once('=') {
            Some((k, v)) => fsconfig_set_string(&fd, k, v),
            None => fsconfig_set_flag(&fd, o.as_str()),
        }
        .map_err(why)?;
    }
    fsconfig_create(&fd).map_err(why)
}

/// Probes every option of [`PROBED`] (each with what it needs).
pub fn probe_all() -> Vec<OptionSupport> {
    PROBED
        .iter()
        .map(|(option, needs)| {
            let mut set: Vec<String> = needs.iter().map(|s| (*s).to_owned()).collect();
            set.push((*option).to_owned());
            let r = try_options(&set);
            OptionSupport {
                option: (*option).to_owned(),
                accepted: r.is_ok(),
                reason: r.err(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the running kernel (root): the basic options every supported kernel has are
    /// accepted, a made-up one is refused with the kernel's own words.
    #[test]
    fn the_kernel_says_what_it_accepts() {
        // SAFETY: no arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (fsopen)");
            return;
        }
        assert_eq!(try_options(&[]), Ok(()));
        assert_eq!(try_options(&["index=on".into()]), Ok(()));
        let err = try_options(&["no_such_option".into()]).unwrap_err();
        assert!(err.contains("no_such_option"), "{err}");
        // A combination the kernel refuses (metacopy needs redirects); overlay says why in
        // the kernel log only.
        let err = try_options(&["metacopy=on".into(), "redirect_dir=off".into()]).unwrap_err();
        assert!(
            err.starts_with("refused (") && err.contains("dmesg"),
            "{err}"
        );
        let all = probe_all();
        assert_eq!(all.len(), PROBED.len());
        assert!(
            all.iter().any(|o| o.option == "volatile" && o.accepted),
            "{all:?}"
        );
    }
}
