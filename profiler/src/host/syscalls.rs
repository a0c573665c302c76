//! `x86_64` syscall numbers cowprof tracks, their names and what they can do to an overlay.
//!
//! The eBPF side records the syscall number a copy-up or whiteout happened under (from the
//! `raw_syscalls` tracepoint), so userspace needs the number → name map to report it, and
//! the class bits to tell a data copy-up (`OPEN`) from a metadata-only one (`META`, which
//! with `metacopy=on` copies no data) or a whiteout (`REMOVE`, `RENAME`).
//!
//! Numbers are `x86_64`'s (`arch/x86/entry/syscalls/syscall_64.tbl`); other architectures
//! number differently and lack the legacy calls (`open`, `creat`, `chmod`, ...).

// The class bits are shared with the eBPF side (it reads them from the `SYSCALLS` map).
// OPEN: with write access or `O_TRUNC` this copies the file's data up. CREATE: over a whiteout
// this goes through `ovl_create_over_whiteout`. REMOVE: a lower-layer name leaves a whiteout.
// RENAME: copies the source up, may leave a whiteout. META: metadata only (a metadata-only
// copy-up with `metacopy=on`). MKDIR: over a whiteout the new directory is opaque.
pub use profiler_common::class::{CREATE, META, MKDIR, MOUNT, OPEN, REMOVE, RENAME};

/// (number, name, class bits) for every syscall that can trigger a copy-up, whiteout or create over a whiteout
///
/// Sorted by number. `open`-family calls are classified `OPEN | CREATE` statically: only
/// the flags (`O_CREAT`) decide at run time. `truncate`/`fallocate` are `OPEN` because they
/// change data, so even with metacopy the data must be copied up.
pub const TRACKED: &[(u32, &str, u8)] = &[
    (2, "open", OPEN | CREATE),
    (76, "truncate", OPEN),
    (77, "ftruncate", OPEN),
    (82, "rename", RENAME),
    (83, "mkdir", MKDIR | CREATE),
    (84, "rmdir", REMOVE),
    (85, "creat", OPEN | CREATE),
    (86, "link", CREATE),
    (87, "unlink", REMOVE),
    (88, "symlink", CREATE),
    (90, "chmod", META),
    (91, "fchmod", META),
    (92, "chown", META),
    (93, "fchown", META),
    (94, "lchown", META),
    (132, "utime", META),
    (133, "mknod", CREATE),
    (165, "mount", MOUNT),
    (188, "setxattr", META),
    (189, "lsetxattr", META),
    (190, "fsetxattr", META),
    (197, "removexattr", META),
    (198, "lremovexattr", META),
    (199, "fremovexattr", META),
    (235, "utimes", META),
    (257, "openat", OPEN | CREATE),
    (258, "mkdirat", MKDIR | CREATE),
    (259, "mknodat", CREATE),
    (260, "fchownat", META),
    (261, "futimesat", META),
    (263, "unlinkat", REMOVE),
    (264, "renameat", RENAME),
    (265, "linkat", CREATE),
    (266, "symlinkat", CREATE),
    (268, "fchmodat", META),
    (280, "utimensat", META),
    (285, "fallocate", OPEN),
    (316, "renameat2", RENAME),
    (431, "fsconfig", MOUNT),
    (437, "openat2", OPEN | CREATE),
    (452, "fchmodat2", META),
    (463, "setxattrat", META),
    (466, "removexattrat", META),
];

/// The entry for a syscall number, if tracked. Negative numbers (no syscall, as the
/// tracepoint reports for kernel threads) are never tracked.
fn entry(nr: i32) -> Option<&'static (u32, &'static str, u8)> {
    let nr = u32::try_from(nr).ok()?;
    TRACKED
        .binary_search_by_key(&nr, |&(n, _, _)| n)
        .ok()
        .map(|i| &TRACKED[i])
}

/// Name of a tracked syscall; `None` for untracked or invalid numbers.
#[must_use]
pub fn name(nr: i32) -> Option<&'static str> {
    entry(nr).map(|&(_, n, _)| n)
}

/// Class bits of a tracked syscall; 0 for untracked or invalid numbers.
#[must_use]
pub fn class(nr: i32) -> u8 {
    entry(nr).map_or(0, |&(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// libc's `x86_64` numbers for every entry it knows; the rest are checked below.
    fn libc_nr(name: &str) -> Option<libc::c_long> {
        Some(match name {
            "open" => libc::SYS_open,
            "openat" => libc::SYS_openat,
            "openat2" => libc::SYS_openat2,
            "creat" => libc::SYS_creat,
            "truncate" => libc::SYS_truncate,
            "ftruncate" => libc::SYS_ftruncate,
            "fallocate" => libc::SYS_fallocate,
            "chmod" => libc::SYS_chmod,
            "fchmod" => libc::SYS_fchmod,
            "fchmodat" => libc::SYS_fchmodat,
            "fchmodat2" => libc::SYS_fchmodat2,
            "chown" => libc::SYS_chown,
            "fchown" => libc::SYS_fchown,
            "lchown" => libc::SYS_lchown,
            "fchownat" => libc::SYS_fchownat,
            "utime" => libc::SYS_utime,
            "utimes" => libc::SYS_utimes,
            "futimesat" => libc::SYS_futimesat,
            "utimensat" => libc::SYS_utimensat,
            "setxattr" => libc::SYS_setxattr,
            "lsetxattr" => libc::SYS_lsetxattr,
            "fsetxattr" => libc::SYS_fsetxattr,
            "removexattr" => libc::SYS_removexattr,
            "lremovexattr" => libc::SYS_lremovexattr,
            "fremovexattr" => libc::SYS_fremovexattr,
            "link" => libc::SYS_link,
            "linkat" => libc::SYS_linkat,
            "symlink" => libc::SYS_symlink,
            "symlinkat" => libc::SYS_symlinkat,
            "mknod" => libc::SYS_mknod,
            "mknodat" => libc::SYS_mknodat,
            "mkdir" => libc::SYS_mkdir,
            "mkdirat" => libc::SYS_mkdirat,
            "unlink" => libc::SYS_unlink,
            "unlinkat" => libc::SYS_unlinkat,
            "rmdir" => libc::SYS_rmdir,
            "rename" => libc::SYS_rename,
            "renameat" => libc::SYS_renameat,
            "renameat2" => libc::SYS_renameat2,
            "mount" => libc::SYS_mount,
            "fsconfig" => libc::SYS_fsconfig,
            _ => return None,
        })
    }

    /// Linux 6.13 calls that neither libc 0.2 nor older kernel headers define; numbers from
    /// `syscall_64.tbl` (463 setxattrat, 464 getxattrat, 465 listxattrat, 466 removexattrat).
    const NOT_IN_LIBC: &[(&str, u32)] = &[("setxattrat", 463), ("removexattrat", 466)];

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn numbers_match_libc_and_headers() {
        let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
            .or_else(|_| std::fs::read_to_string("/usr/include/asm/unistd_64.h"))
            .unwrap_or_default();
        for &(nr, name, _) in TRACKED {
            if let Some(want) = libc_nr(name) {
                assert_eq!(i64::from(nr), want, "{name}: libc says {want}");
                continue;
            }
            let &(_, table) = NOT_IN_LIBC
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name}: no libc constant and no table entry"));
            assert_eq!(nr, table, "{name}");
            // Newer headers define it; when they do they must agree.
            let define = format!("#define __NR_{name} ");
            if let Some(line) = header.lines().find(|l| l.starts_with(&define)) {
                let from_header: u32 = line[define.len()..].trim().parse().expect("number");
                assert_eq!(nr, from_header, "{name}: header says {from_header}");
            }
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(
            TRACKED.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted by number, no repeats"
        );
        let names: HashSet<_> = TRACKED.iter().map(|e| e.1).collect();
        assert_eq!(names.len(), TRACKED.len());
        assert_eq!(TRACKED.len(), 43);
    }

    #[test]
    fn classes() {
        let c = |n: &str| {
            TRACKED
                .iter()
                .find(|e| e.1 == n)
                .map_or_else(|| panic!("{n} tracked"), |e| e.2)
        };
        for n in ["open", "openat", "openat2", "creat"] {
            assert_eq!(c(n), OPEN | CREATE, "{n}");
        }
        for n in ["truncate", "ftruncate", "fallocate"] {
            assert_eq!(c(n), OPEN, "{n}");
        }
        for n in ["mkdir", "mkdirat"] {
            assert_eq!(c(n), MKDIR | CREATE, "{n}");
        }
        for n in ["link", "linkat", "symlink", "symlinkat", "mknod", "mknodat"] {
            assert_eq!(c(n), CREATE, "{n}");
        }
        for n in ["unlink", "unlinkat", "rmdir"] {
            assert_eq!(c(n), REMOVE, "{n}");
        }
        for n in ["rename", "renameat", "renameat2"] {
            assert_eq!(c(n), RENAME, "{n}");
        }
        let meta = TRACKED.iter().filter(|e| e.2 == META).count();
        assert_eq!(meta, 20);
        let bits = [OPEN, CREATE, REMOVE, RENAME, META, MKDIR];
        assert_eq!(
            bits.iter().fold(0, |a, b| a | b),
            0b11_1111,
            "distinct bits"
        );
    }

    #[test]
    fn name_and_class_lookup() {
        assert_eq!(name(257), Some("openat"));
        assert_eq!(name(2), Some("open"));
        assert_eq!(name(466), Some("removexattrat"));
        assert_eq!(name(0), None); // read
        assert_eq!(name(1), None); // write
        assert_eq!(name(-1), None);
        assert_eq!(name(i32::MAX), None);
        assert_eq!(class(87), REMOVE);
        assert_eq!(class(0), 0);
        assert_eq!(class(-1), 0);
    }
}
