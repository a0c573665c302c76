//! Kernel structure offsets from the running kernel's BTF.
//!
//! The eBPF side is compiled once and reads kernel memory at offsets it gets from here, so one
//! binary runs on 6.1, 6.12 and 6.18. Overlay's own types (`ovl_inode`, `ovl_entry`, ...) are in
//! vmlinux BTF when overlay is built in, and in the module's split BTF
//! (`/sys/kernel/btf/overlay`) when it is a module.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use profiler_common::Offsets;

/// Where BTF is read from; tests and `--btf` point it elsewhere.
#[derive(Debug, Clone)]
pub struct BtfPaths {
    pub vmlinux: PathBuf,
    pub overlay_module: PathBuf,
}

impl Default for BtfPaths {
    fn default() -> Self {
        Self {
            vmlinux: PathBuf::from("/sys/kernel/btf/vmlinux"),
            overlay_module: PathBuf::from("/sys/kernel/btf/overlay"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source}; cowprof needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (or pass --btf PATH)"
    )]
    Vmlinux {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error(
        "the kernel's BTF has no `struct {name}`: is overlayfs loaded? run `modprobe overlay` \
         (module BTF is read from {module})"
    )]
    MissingOverlayType { name: &'static str, module: PathBuf },
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
}

pub struct KernelBtf {
    vmlinux: Btf,
    module: Option<Btf>,
    pub info: BtfInfo,
}

impl KernelBtf {
    pub fn load(paths: &BtfPaths) -> Result<Self, BtfError> {
        // Mapped and parsed lazily where the file allows it (a fraction of the memory of a full
        // parse); parsed into memory otherwise.
        let vmlinux = Btf::from_file_with_backend(&paths.vmlinux, btf_rs::Backend::Mmap)
            .or_else(|_| Btf::from_file(&paths.vmlinux))
            .map_err(|source| BtfError::Vmlinux {
                path: paths.vmlinux.clone(),
                source,
            })?;
        let overlay_in_vmlinux = !vmlinux
            .resolve_ids_by_name("ovl_inode")
            .unwrap_or_default()
            .is_empty();
        let module = if overlay_in_vmlinux {
            None
        } else {
            Btf::from_split_file(&paths.overlay_module, &vmlinux).ok()
        };
        let info = BtfInfo {
            vmlinux: paths.vmlinux.display().to_string(),
            overlay_module: module
                .as_ref()
                .map(|_| paths.overlay_module.display().to_string()),
            overlay_in_vmlinux,
        };
        Ok(Self {
            vmlinux,
            module,
            info,
        })
    }

    /// The BTF that holds overlay's types.
    fn ovl(&self) -> &Btf {
        self.module.as_ref().unwrap_or(&self.vmlinux)
    }

    pub fn has_overlay_types(&self) -> bool {
        !self
            .ovl()
            .resolve_ids_by_name("ovl_inode")
            .unwrap_or_default()
            .is_empty()
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

    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        let v = &self.vmlinux;
        let o = self.ovl();
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
        if !self.has_overlay_types() {
            return Err(BtfError::MissingOverlayType {
                name: "ovl_inode",
                module: PathBuf::from(
                    self.info
                        .overlay_module
                        .clone()
                        .unwrap_or_else(|| "/sys/kernel/btf/overlay".into()),
                ),
            });
        }
        // 6.5 moved the lower stack from dentry->d_fsdata to ovl_inode->oe.
        let oe = member_offset(o, "ovl_inode", &["oe"]);
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
            ovl_inode_vfs_inode: need(o, "ovl_inode", &["vfs_inode"])?,
            ovl_inode_upperdentry: need(o, "ovl_inode", &["__upperdentry"])?,
            ovl_inode_oe: oe.unwrap_or(u32::MAX),
            ovl_inode_flags: need(o, "ovl_inode", &["flags"])?,
            dentry_d_fsdata: need(v, "dentry", &["d_fsdata"])?,
            ovl_entry_numlower: any(o, "ovl_entry", &[&["__numlower"], &["numlower"]])?,
            ovl_entry_lowerstack: any(o, "ovl_entry", &[&["__lowerstack"], &["lowerstack"]])?,
            ovl_path_layer: need(o, "ovl_path", &["layer"])?,
            ovl_layer_idx: need(o, "ovl_layer", &["idx"])?,
            ovl_flag_upperdata: enum_value(o, "ovl_inode_flag", "OVL_UPPERDATA").ok_or_else(
                || BtfError::Missing {
                    what: "enum OVL_UPPERDATA".into(),
                },
            )?,
            ovl_e_opaque: enum_value(o, "ovl_entry_flag", "OVL_E_OPAQUE").ok_or_else(|| {
                BtfError::Missing {
                    what: "enum OVL_E_OPAQUE".into(),
                }
            })?,
            dentry_d_sb: need(v, "dentry", &["d_sb"])?,
            sb_s_magic: need(v, "super_block", &["s_magic"])?,
            sb_s_root: need(v, "super_block", &["s_root"])?,
            sb_s_fs_info: need(v, "super_block", &["s_fs_info"])?,
            ovl_fs_workdir: need(o, "ovl_fs", &["workdir"])?,
            inode_i_state: need(v, "inode", &["i_state"])?,
            // An enum since 6.18; a #define of the same value (1 << 14) before.
            i_ovl_inuse: enum_value(v, "inode_state_flags_t", "I_OVL_INUSE").unwrap_or(1 << 14),
            // Only the copy-up phases need it: without it off-CPU time is all "other".
            task_in_iowait_bit: member_bit_offset(v, "task_struct", &["in_iowait"])
                .unwrap_or(u32::MAX),
            _pad: 0,
        })
    }
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

    /// Runs against the machine's own kernel BTF (every supported kernel has it).
    #[test]
    fn host_offsets_resolve() {
        let paths = BtfPaths::default();
        if !readable(&paths.vmlinux) {
            eprintln!(
                "skipped: {} not readable (kernel without CONFIG_DEBUG_INFO_BTF)",
                paths.vmlinux.display()
            );
            return;
        }
        let btf = KernelBtf::load(&paths).expect("load");
        let off = btf.offsets().expect("offsets");
        // `struct dentry` starts with d_flags and d_seq; d_parent cannot be at 0.
        assert!(off.dentry_d_parent > 0);
        assert_eq!(
            off.dentry_d_name_len,
            off.dentry_d_name_name - 4,
            "qstr is {{hash, len}} then name"
        );
        assert!(off.ovl_inode_upperdentry > off.ovl_inode_vfs_inode);
        // A one-bit field among task_struct's flag words, past its first members.
        assert_ne!(off.task_in_iowait_bit, u32::MAX);
        assert!(off.task_in_iowait_bit / 8 > off.task_cred.min(off.task_nsproxy) / 2);
    }

    #[test]
    fn missing_vmlinux_is_a_clear_error() {
        let paths = BtfPaths {
            vmlinux: "/nonexistent/vmlinux".into(),
            overlay_module: "/nonexistent".into(),
        };
        let err = KernelBtf::load(&paths)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
