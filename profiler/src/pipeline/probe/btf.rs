//! Kernel structure offsets from the running kernel's BTF.
//!
//! The eBPF side is compiled once and reads kernel memory at offsets it gets from here, so one
//! binary runs on 6.1, 6.12 and 6.18. Overlay's own types (`ovl_inode`, `ovl_entry`, ...) are in
//! vmlinux BTF when overlay is built in, and in the module's split BTF
//! (`/sys/kernel/btf/overlay`) when it is a module. Kernels built without
//! `CONFIG_DEBUG_INFO_BTF_MODULES` have no module BTF: the overlay offsets are then marked
//! absent and the kprobe backend works from vmlinux types alone (see [`FieldSource`]).

use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use btf_rs::{Btf, Type};
use profiler_common::Offsets;

/// Where BTF is read from; tests and `--btf`/`--btf-overlay` point it elsewhere.
#[derive(Debug, Clone)]
pub struct BtfPaths {
    pub vmlinux: PathBuf,
    /// The overlay module's split BTF (its base is `vmlinux`); `None` = none.
    pub overlay_module: Option<PathBuf>,
}

impl Default for BtfPaths {
    fn default() -> Self {
        Self {
            vmlinux: PathBuf::from("/sys/kernel/btf/vmlinux"),
            overlay_module: Some(PathBuf::from("/sys/kernel/btf/overlay")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source}; the kernel has no BTF (CONFIG_DEBUG_INFO_BTF): \
         pass --btf FILE with this kernel's BTF (docs/backends.md, \"Supported kernels\", says where to get one)"
    )]
    Vmlinux {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("the kernel's BTF lacks `{what}`; this kernel layout is not supported yet")]
    Missing { what: String },
}

/// Which BTF blobs were found, for `doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BtfInfo {
    pub vmlinux: String,
    /// `Some(path)` when overlay types came from the module's split BTF.
    pub overlay_module: Option<String>,
    pub overlay_in_vmlinux: bool,
    /// Why overlay's types are not used, when they are not (e.g. no module BTF).
    pub overlay_missing: Option<String>,
}

/// Where a field of an event comes from on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Read from overlay's own structures (offsets from overlay's BTF).
    OverlayBtf,
    /// Read from vmlinux structures or learnt from `vfs_*` calls (offsets from vmlinux BTF).
    VmlinuxBtf,
    /// Resolved by cowprof in user space.
    UserSpace,
    /// Not available: the field is not filled.
    Missing,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverlayBtf => "overlay BTF",
            Self::VmlinuxBtf => "vmlinux BTF",
            Self::UserSpace => "user space",
            Self::Missing => "missing",
        }
    }
}

/// One row of `doctor`'s field table (kprobe backend).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldSource {
    pub field: &'static str,
    pub source: Source,
    /// How it is obtained from that source.
    pub how: &'static str,
}

/// The overlay-typed part of [`Offsets`], all `u32::MAX` when overlay's types are not used.
#[derive(Clone, Copy)]
struct OvlOffsets {
    vfs_inode: u32,
    upperdentry: u32,
    oe: u32,
    flags: u32,
    numlower: u32,
    lowerstack: u32,
    path_layer: u32,
    layer_idx: u32,
    flag_upperdata: u32,
    e_opaque: u32,
    fs_workdir: u32,
}

impl OvlOffsets {
    const ABSENT: Self = Self {
        vfs_inode: u32::MAX,
        upperdentry: u32::MAX,
        oe: u32::MAX,
        flags: u32::MAX,
        numlower: u32::MAX,
        lowerstack: u32::MAX,
        path_layer: u32::MAX,
        layer_idx: u32::MAX,
        flag_upperdata: u32::MAX,
        e_opaque: u32::MAX,
        fs_workdir: u32::MAX,
    };
}

pub struct KernelBtf {
    vmlinux: Btf,
    module: Option<Btf>,
    /// Overlay's members cowprof reads, when its types were found and every one is there.
    ovl: Option<OvlOffsets>,
    /// [`KernelBtf::offsets`], found once (each lookup walks the BTF by name: the survey and
    /// the loader both ask, and it is a tenth of the attach time on the host).
    offsets: std::cell::OnceCell<Offsets>,
    pub info: BtfInfo,
}

/// `path`'s BTF parsed lazily from a mapped copy of it in memory (for files that cannot be
/// mapped themselves).
fn map_copy(path: &Path) -> Result<Btf, btf_rs::Error> {
    let copy = mappable_copy(path)?;
    // The mapping keeps the copy's pages once the descriptor is closed.
    Btf::from_file_with_backend(
        format!("/proc/self/fd/{}", copy.as_raw_fd()),
        btf_rs::Backend::Mmap,
    )
}

/// `path`'s bytes in an anonymous memory file (`memfd_create`), which can be mapped.
fn mappable_copy(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a NUL-terminated name and valid flags; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"cowprof-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
    std::io::copy(&mut std::fs::File::open(path)?, &mut copy)?;
    Ok(copy)
}

fn has_ovl(btf: &Btf) -> bool {
    !btf.resolve_ids_by_name("ovl_inode")
        .unwrap_or_default()
        .is_empty()
}

impl KernelBtf {
    pub fn load(paths: &BtfPaths) -> Result<Self, BtfError> {
        // Mapped and parsed lazily (a fraction of the memory of a full parse: 5.5 MiB of
        // pages against about 36 MiB). Where the file cannot be mapped (sysfs maps vmlinux's
        // BTF only on newer kernels; not 6.1 or 6.12), a copy in memory is mapped instead;
        // parsed into memory only if that fails too.
        let vmlinux = Btf::from_file_with_backend(&paths.vmlinux, btf_rs::Backend::Mmap)
            .or_else(|_| map_copy(&paths.vmlinux))
            .or_else(|_| Btf::from_file(&paths.vmlinux))
            .map_err(|source| BtfError::Vmlinux {
                path: paths.vmlinux.clone(),
                source,
            })?;
        let overlay_in_vmlinux = has_ovl(&vmlinux);
        let (module, mut overlay_missing) = match (&paths.overlay_module, overlay_in_vmlinux) {
            (_, true) => (None, None),
            (None, false) => (
                None,
                Some("no overlay module BTF (--btf without --btf-overlay)".to_owned()),
            ),
            (Some(path), false) => match Btf::from_split_file(path, &vmlinux) {
                Ok(m) if has_ovl(&m) => (Some(m), None),
                Ok(_) => (
                    None,
                    Some(format!("{} has no struct ovl_inode", path.display())),
                ),
                Err(e) => (
                    None,
                    Some(format!(
                        "no overlay module BTF at {} ({e}): is overlay loaded, and the kernel \
                         built with CONFIG_DEBUG_INFO_BTF_MODULES?",
                        path.display()
                    )),
                ),
            },
        };
        let overlay_module = module
            .as_ref()
            .and(paths.overlay_module.as_ref())
            .map(|p| p.display().to_string());
        let mut kbtf = Self {
            vmlinux,
            module,
            ovl: None,
            offsets: std::cell::OnceCell::new(),
            info: BtfInfo {
                vmlinux: paths.vmlinux.display().to_string(),
                overlay_module,
                overlay_in_vmlinux,
                overlay_missing: None,
            },
        };
        if overlay_missing.is_none() {
            // Overlay's types are there but not in a layout cowprof knows: work without them.
            match kbtf.ovl_offsets() {
                Ok(o) => kbtf.ovl = Some(o),
                Err(e) => overlay_missing = Some(e.to_string()),
            }
        }
        kbtf.info.overlay_missing = overlay_missing;
        Ok(kbtf)
    }

    /// The BTF that holds overlay's types.
    fn ovl(&self) -> &Btf {
        self.module.as_ref().unwrap_or(&self.vmlinux)
    }

    /// Overlay's own types are available and usable: the programs read overlay's structures.
    pub fn has_overlay_types(&self) -> bool {
        self.ovl.is_some()
    }

    /// Whether a type of that name exists (e.g. `btf_trace_<tracepoint>` for `tp_btf` targets).
    pub fn has_type(&self, name: &str) -> bool {
        !self
            .vmlinux
            .resolve_ids_by_name(name)
            .unwrap_or_default()
            .is_empty()
    }

    /// Every kernel function name in BTF (vmlinux and, when present, overlay's module).
    pub fn has_function(&self, name: &str) -> bool {
        let has = |btf: &Btf| {
            btf.resolve_types_by_name(name)
                .unwrap_or_default()
                .iter()
                .any(|t| matches!(t, Type::Func(_)))
        };
        has(&self.vmlinux) || self.module.as_ref().is_some_and(has)
    }

    fn ovl_offsets(&self) -> Result<OvlOffsets, BtfError> {
        let o = self.ovl();
        let need = |s: &str, path: &[&str]| {
            member_offset(o, s, path).ok_or_else(|| BtfError::Missing {
                what: format!("{s}.{}", path.join(".")),
            })
        };
        let any = |s: &str, paths: &[&[&str]]| {
            paths
                .iter()
                .find_map(|p| member_offset(o, s, p))
                .ok_or_else(|| BtfError::Missing {
                    what: format!("{s}.{}", paths[0].join(".")),
                })
        };
        let flag = |e: &str, name: &str| {
            enum_value(o, e, name).ok_or_else(|| BtfError::Missing {
                what: format!("enum {name}"),
            })
        };
        Ok(OvlOffsets {
            vfs_inode: need("ovl_inode", &["vfs_inode"])?,
            upperdentry: need("ovl_inode", &["__upperdentry"])?,
            // 6.5 moved the lower stack from dentry->d_fsdata to ovl_inode->oe.
            oe: member_offset(o, "ovl_inode", &["oe"]).unwrap_or(u32::MAX),
            flags: need("ovl_inode", &["flags"])?,
            numlower: any("ovl_entry", &[&["__numlower"], &["numlower"]])?,
            lowerstack: any("ovl_entry", &[&["__lowerstack"], &["lowerstack"]])?,
            path_layer: need("ovl_path", &["layer"])?,
            layer_idx: need("ovl_layer", &["idx"])?,
            flag_upperdata: flag("ovl_inode_flag", "OVL_UPPERDATA")?,
            e_opaque: flag("ovl_entry_flag", "OVL_E_OPAQUE")?,
            fs_workdir: need("ovl_fs", &["workdir"])?,
        })
    }

    /// Why the kprobe backend cannot work from vmlinux types alone on this kernel, if it
    /// cannot (the `vfs_rename` argument it reads is a `struct renamedata` since 5.12).
    pub fn vmlinux_only_gap(&self) -> Option<String> {
        let v = &self.vmlinux;
        let missing: Vec<&str> = ["old_dentry", "new_dentry", "flags"]
            .into_iter()
            .filter(|m| member_offset(v, "renamedata", &[m]).is_none())
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "vmlinux BTF has no struct renamedata {} (kernels before 5.12)",
                missing.join(", ")
            ));
        }
        match param_name(v, "vfs_unlink", 2) {
            Some(n) if n == "dentry" => None,
            other => Some(format!(
                "vfs_unlink's third parameter is {other:?}, not `dentry` (kernels before 5.12)"
            )),
        }
    }

    /// Where each event field comes from with the kprobe backend on this kernel.
    pub fn field_sources(&self) -> Vec<FieldSource> {
        let ovl = self.has_overlay_types();
        let vfs = if self.vmlinux_only_gap().is_none() {
            Source::VmlinuxBtf
        } else {
            Source::Missing
        };
        let pick = |with: (Source, &'static str), without: (Source, &'static str)| {
            if ovl {
                with
            } else {
                without
            }
        };
        let row = |field, (source, how)| FieldSource { field, source, how };
        vec![
            row(
                "path, mode, size, dev, mnt_ns",
                (
                    Source::VmlinuxBtf,
                    "dentry, inode, super_block, task_struct",
                ),
            ),
            row(
                "lower_layer",
                pick(
                    (Source::OverlayBtf, "ovl_entry lower stack -> ovl_layer.idx"),
                    (
                        Source::UserSpace,
                        "the path looked up in the mount's lower dirs",
                    ),
                ),
            ),
            row(
                "kind data/metacopy",
                pick(
                    (Source::OverlayBtf, "ovl_inode.flags OVL_UPPERDATA"),
                    (Source::UserSpace, "metacopy=on and a metadata-only syscall"),
                ),
            ),
            row(
                "kind deferred_data_copy_up",
                pick(
                    (
                        Source::OverlayBtf,
                        "ovl_inode.__upperdentry before the copy-up",
                    ),
                    (vfs, "no vfs_link/vfs_rename of a new upper in the copy-up"),
                ),
            ),
            row(
                "errno of a copy-up",
                pick(
                    (
                        Source::OverlayBtf,
                        "ovl_inode.__upperdentry after (EIO if none)",
                    ),
                    (vfs, "vfs_link/vfs_rename placed the upper (EIO if not)"),
                ),
            ),
            row(
                "whiteout",
                pick(
                    (
                        Source::OverlayBtf,
                        "ovl_entry numlower of the removed dentry",
                    ),
                    (
                        vfs,
                        "vfs_rename of a char 0/0 (or RENAME_WHITEOUT) in ovl_unlink/rmdir/rename",
                    ),
                ),
            ),
            row(
                "create_over_whiteout, opaque_dir",
                pick(
                    (Source::OverlayBtf, "OVL_E_OPAQUE of the new dentry"),
                    (
                        vfs,
                        "vfs_rename onto a char 0/0 in ovl_create/mkdir/mknod/symlink/link",
                    ),
                ),
            ),
        ]
    }

    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        if let Some(o) = self.offsets.get() {
            return Ok(*o);
        }
        let o = self.find_offsets()?;
        Ok(*self.offsets.get_or_init(|| o))
    }

    fn find_offsets(&self) -> Result<Offsets, BtfError> {
        let v = &self.vmlinux;
        let need = |btf: &Btf, s: &str, path: &[&str]| {
            member_offset(btf, s, path).ok_or_else(|| BtfError::Missing {
                what: format!("{s}.{}", path.join(".")),
            })
        };
        let any = |btf: &Btf, s: &str, paths: &[&[&str]]| {
            paths
                .iter()
                .find_map(|p| member_offset(btf, s, p))
                .ok_or_else(|| BtfError::Missing {
                    what: format!("{s}.{}", paths[0].join(".")),
                })
        };
        let o = self.ovl.unwrap_or(OvlOffsets::ABSENT);
        let opt = |s: &str, m: &str| member_offset(v, s, &[m]).unwrap_or(u32::MAX);
        Ok(Offsets {
            dentry_d_parent: need(v, "dentry", &["d_parent"])?,
            dentry_d_name_name: need(v, "dentry", &["d_name", "name"])?,
            dentry_d_name_len: need(v, "dentry", &["d_name", "len"])?,
            dentry_d_inode: need(v, "dentry", &["d_inode"])?,
            dentry_d_alias: any(v, "dentry", &[&["d_u", "d_alias"], &["d_alias"]])?,
            inode_i_mode: need(v, "inode", &["i_mode"])?,
            inode_i_ino: need(v, "inode", &["i_ino"])?,
            inode_i_sb: need(v, "inode", &["i_sb"])?,
            inode_i_size: need(v, "inode", &["i_size"])?,
            inode_i_nlink: any(v, "inode", &[&["__i_nlink"], &["i_nlink"]])?,
            inode_i_rdev: need(v, "inode", &["i_rdev"])?,
            inode_i_dentry: need(v, "inode", &["i_dentry"])?,
            sb_s_dev: need(v, "super_block", &["s_dev"])?,
            task_cred: need(v, "task_struct", &["cred"])?,
            task_real_cred: need(v, "task_struct", &["real_cred"])?,
            task_nsproxy: need(v, "task_struct", &["nsproxy"])?,
            nsproxy_mnt_ns: need(v, "nsproxy", &["mnt_ns"])?,
            mnt_ns_inum: need(v, "mnt_namespace", &["ns", "inum"])?,
            ovl_inode_vfs_inode: o.vfs_inode,
            ovl_inode_upperdentry: o.upperdentry,
            ovl_inode_oe: o.oe,
            ovl_inode_flags: o.flags,
            dentry_d_fsdata: need(v, "dentry", &["d_fsdata"])?,
            ovl_entry_numlower: o.numlower,
            ovl_entry_lowerstack: o.lowerstack,
            ovl_path_layer: o.path_layer,
            ovl_layer_idx: o.layer_idx,
            ovl_flag_upperdata: o.flag_upperdata,
            ovl_e_opaque: o.e_opaque,
            dentry_d_sb: need(v, "dentry", &["d_sb"])?,
            sb_s_magic: need(v, "super_block", &["s_magic"])?,
            sb_s_root: need(v, "super_block", &["s_root"])?,
            sb_s_fs_info: need(v, "super_block", &["s_fs_info"])?,
            ovl_fs_workdir: o.fs_workdir,
            inode_i_state: need(v, "inode", &["i_state"])?,
            // An enum since 6.18; a #define of the same value (1 << 14) before.
            i_ovl_inuse: enum_value(v, "inode_state_flags_t", "I_OVL_INUSE").unwrap_or(1 << 14),
            renamedata_old_dentry: opt("renamedata", "old_dentry"),
            renamedata_new_dentry: opt("renamedata", "new_dentry"),
            renamedata_flags: opt("renamedata", "flags"),
            // Only the copy-up phases need it: without it off-CPU time is all "other".
            task_in_iowait_bit: member_bit_offset(v, "task_struct", &["in_iowait"])
                .unwrap_or(u32::MAX),
        })
    }
}

/// The name of parameter `idx` of kernel function `func`.
fn param_name(btf: &Btf, func: &str, idx: usize) -> Option<String> {
    let f = btf
        .resolve_types_by_name(func)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Func(f) => Some(f),
            _ => None,
        })?;
    let Type::FuncProto(proto) = btf.resolve_chained_type(&f).ok()? else {
        return None;
    };
    btf.resolve_name(proto.parameters.get(idx)?).ok()
}

/// Follows typedefs and qualifiers to the struct or union behind `t`.
fn strip(btf: &Btf, mut t: Type) -> Option<btf_rs::Struct> {
    for _ in 0..16 {
        match t {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                t = btf.resolve_chained_type(t.as_btf_type()?).ok()?;
            }
            _ => return None,
        }
    }
    None
}

/// Byte offset of `path` (member names, descending through named members) inside `struct name`,
/// looking through anonymous structs and unions at each level.
pub fn member_offset(btf: &Btf, name: &str, path: &[&str]) -> Option<u32> {
    member_bit_offset(btf, name, path).map(|bits| bits / 8)
}

/// Bit offset of `path` inside `struct name` (bitfields included), as [`member_offset`].
pub fn member_bit_offset(btf: &Btf, name: &str, path: &[&str]) -> Option<u32> {
    let root = btf
        .resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })?;
    let mut current = root;
    let mut total_bits = 0u32;
    for (depth, want) in path.iter().enumerate() {
        let (bits, member_type) = find_member(btf, &current, want)?;
        total_bits += bits;
        if depth + 1 < path.len() {
            current = strip(btf, member_type)?;
        }
    }
    Some(total_bits)
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, want: &str) -> Option<(u32, Type)> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == want {
            return Some((m.bit_offset(), btf.resolve_chained_type(m).ok()?));
        }
        if name.is_empty() {
            let inner = strip(btf, btf.resolve_chained_type(m).ok()?)?;
            if let Some((bits, t)) = find_member(btf, &inner, want) {
                return Some((m.bit_offset() + bits, t));
            }
        }
    }
    None
}

/// Value of the enumerator `name` in `enum enum_name`.
pub fn enum_value(btf: &Btf, enum_name: &str, name: &str) -> Option<u32> {
    btf.resolve_types_by_name(enum_name)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).ok().as_deref() == Some(name))
                .map(btf_rs::EnumMember::val),
            _ => None,
        })
}

/// True if `path` exists and is readable (the doctor's BTF check).
pub fn readable(path: &Path) -> bool {
    std::fs::File::open(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel BTF, or `None` (said on stderr) where it has none.
    fn host_btf() -> Option<BtfPaths> {
        let paths = BtfPaths::default();
        if readable(&paths.vmlinux) {
            return Some(paths);
        }
        eprintln!(
            "skipped: {} not readable (kernel without CONFIG_DEBUG_INFO_BTF)",
            paths.vmlinux.display()
        );
        None
    }

    /// The in-memory copy kernels that cannot map sysfs's BTF get parses as the file does.
    #[test]
    fn a_mapped_copy_resolves_as_the_file() {
        let Some(paths) = host_btf() else { return };
        let mapped = map_copy(&paths.vmlinux).unwrap();
        let parsed = Btf::from_file(&paths.vmlinux).unwrap();
        for name in ["task_struct", "inode", "super_block"] {
            assert_eq!(
                mapped.resolve_ids_by_name(name).unwrap(),
                parsed.resolve_ids_by_name(name).unwrap(),
                "{name}"
            );
        }
    }

    /// Runs against the machine's own kernel BTF (every supported kernel has it).
    #[test]
    fn host_offsets_resolve() {
        let Some(paths) = host_btf() else { return };
        let btf = KernelBtf::load(&paths).expect("load");
        let off = btf.offsets().expect("offsets");
        assert_eq!(btf.vmlinux_only_gap(), None, "6.1+ has struct renamedata");
        // `struct dentry` starts with d_flags and d_seq; d_parent cannot be at 0.
        assert!(off.dentry_d_parent > 0);
        assert_eq!(
            off.dentry_d_name_len,
            off.dentry_d_name_name - 4,
            "qstr is {{hash, len}} then name"
        );
        if btf.has_overlay_types() {
            assert!(off.ovl_inode_upperdentry > off.ovl_inode_vfs_inode);
        }
        // A one-bit field among task_struct's flag words, past its first members.
        assert_ne!(off.task_in_iowait_bit, u32::MAX);
        assert!(off.task_in_iowait_bit / 8 > off.task_cred.min(off.task_nsproxy) / 2);
    }

    /// A vmlinux BTF without overlay's types (overlay a module, its BTF not given): every
    /// overlay offset is marked absent, the vmlinux ones resolve, and the field table says
    /// where each field comes from instead.
    #[test]
    fn without_overlay_types_offsets_are_marked_absent() {
        let paths = BtfPaths {
            overlay_module: Some("/nonexistent".into()),
            ..BtfPaths::default()
        };
        if !readable(&paths.vmlinux) {
            eprintln!("skipped: no kernel BTF");
            return;
        }
        let btf = KernelBtf::load(&paths).expect("load");
        if btf.info.overlay_in_vmlinux {
            // Overlay built in (this host): its types are in vmlinux and cannot be hidden
            // by --btf-overlay; the VM matrix covers the module case.
            assert!(btf.has_overlay_types());
            return;
        }
        assert!(!btf.has_overlay_types());
        assert!(btf.info.overlay_missing.is_some());
        let off = btf.offsets().expect("offsets");
        assert_eq!(off.ovl_inode_vfs_inode, u32::MAX);
        assert_eq!(off.ovl_entry_numlower, u32::MAX);
        assert_ne!(off.renamedata_flags, u32::MAX);
        let layer = btf
            .field_sources()
            .into_iter()
            .find(|f| f.field == "lower_layer")
            .unwrap();
        assert_eq!(layer.source, Source::UserSpace);
    }

    #[test]
    fn missing_vmlinux_is_a_clear_error() {
        let paths = BtfPaths {
            vmlinux: "/nonexistent/vmlinux".into(),
            overlay_module: Some("/nonexistent".into()),
        };
        let err = KernelBtf::load(&paths)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
