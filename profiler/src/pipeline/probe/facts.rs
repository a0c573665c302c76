//! What the running kernel offers: which backends can attach and why not, where BTF comes from,
//! which overlay symbols exist. `doctor` prints it; `load_and_attach` chooses from it.

use std::{fs, path::Path};

use aya::{
    programs::{FEntry, ProgramError},
    Btf, EbpfLoader,
};

use super::{
    Backend, BtfInfo, BtfPaths, FieldSource, KernelBtf, KPROBE_HOOKS, OVERLAY_SYMBOLS, TP_HOOKS,
    VFS_HOOKS,
};

/// What the running kernel offers, as `doctor` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelFacts {
    pub release: String,
    pub btf: Option<BtfInfo>,
    pub btf_error: Option<String>,
    pub overlay_loaded: bool,
    /// (symbol, present in /proc/kallsyms)
    pub symbols: Vec<(String, bool)>,
    pub backends: Vec<BackendStatus>,
    pub chosen: Option<Backend>,
    /// Where each event field comes from with the kprobe backend (empty without BTF).
    pub fields: Vec<FieldSource>,
    /// The copy-up phases the chosen backend shows on this kernel.
    pub phases: Vec<super::phases::PhaseStatus>,
    /// Overlay mount options this kernel accepts (probed with a superblock never mounted).
    pub overlay_options: Vec<crate::host::overlay_options::OptionSupport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    pub backend: Backend,
    pub usable: bool,
    pub reason: String,
}

/// The names of the text symbols (`t`, `T`) of `/proc/kallsyms`: what kprobes can be placed
/// on. The data symbols (about half of the file's lines) and the addresses are left out while
/// reading; the names (3 MB for 120,000 symbols) are held in one buffer, indexed by a hash of
/// each name sorted as integers, so a lookup is a binary search and a comparison of the names
/// of that hash. (A scan of the text per lookup took about 45 ms under qemu TCG, and `record`
/// makes about forty; sorting the names themselves took 180 ms there.)
#[derive(Default)]
pub(super) struct TextSymbols {
    names: Vec<u8>,
    /// (hash, start, length) of each name in `names`, sorted.
    index: Vec<(u64, u32, u32)>,
}

/// FNV-1a: a few instructions per byte, for an index built once.
fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl TextSymbols {
    /// Reads `/proc/kallsyms` (empty when it cannot be read: every lookup then fails).
    pub(super) fn read() -> Self {
        match fs::File::open("/proc/kallsyms") {
            Ok(f) => Self::parse(std::io::BufReader::with_capacity(1 << 16, f)),
            Err(_) => Self::default(),
        }
    }

    /// Parses `ADDR TYPE NAME [MODULE]` lines.
    pub(super) fn parse(mut r: impl std::io::BufRead) -> Self {
        let mut names = Vec::new();
        let mut index = Vec::new();
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut fields = line
                .split(u8::is_ascii_whitespace)
                .filter(|f| !f.is_empty());
            let (_, ty, name) = (fields.next(), fields.next(), fields.next());
            if let (Some(b"t" | b"T"), Some(name)) = (ty, name) {
                // kallsyms is far below 4 GiB; a name past it would be a corrupt read.
                let (Ok(start), Ok(len)) = (u32::try_from(names.len()), u32::try_from(name.len()))
                else {
                    break;
                };
                names.extend_from_slice(name);
                index.push((name_hash(name), start, len));
            }
        }
        names.shrink_to_fit();
        index.sort_unstable();
        index.shrink_to_fit();
        Self { names, index }
    }

    /// A text symbol of that exact name exists (in the kernel or a loaded module).
    pub(super) fn contains(&self, name: &str) -> bool {
        let h = name_hash(name.as_bytes());
        let first = self.index.partition_point(|&(x, _, _)| x < h);
        self.index[first..]
            .iter()
            .take_while(|&&(x, _, _)| x == h)
            .any(|&(_, start, len)| {
                &self.names[start as usize..(start + len) as usize] == name.as_bytes()
            })
    }
}

pub(super) fn kprobes_supported() -> Result<(), String> {
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        Ok(())
    } else {
        Err("unavailable, CONFIG_KPROBES is not set (no kprobe PMU at /sys/bus/event_source/devices/kprobe)".into())
    }
}

/// Tries to load (not attach) a tiny fentry program: kernels that refuse tracing programs
/// answer EPERM here, before the verifier.
pub(super) fn fentry_supported(
    btf_paths: &BtfPaths,
    kernel_btf: Option<&KernelBtf>,
) -> Result<(), String> {
    let Some(kbtf) = kernel_btf else {
        return Err("no kernel BTF".into());
    };
    if !kbtf.info.overlay_in_vmlinux {
        return Err(
            "overlay is a module: stock aya cannot attach fentry to module functions (aya issue #300); use kprobe"
                .into(),
        );
    }
    let btf = Btf::parse_file(&btf_paths.vmlinux, aya::Endianness::default())
        .map_err(|e| e.to_string())?;
    let mut ebpf = EbpfLoader::new()
        .load(crate::EBPF_OBJECT)
        .map_err(|e| e.to_string())?;
    let prog: &mut FEntry = ebpf
        .program_mut("cowprof_fentry_probe")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    match prog.load("ovl_copy_up_end", &btf) {
        Ok(()) => Err("the kernel accepts fentry, but cowprof's fentry backend is not built yet; kprobe or tracepoint is used".into()),
        Err(e) => {
            let text = format!("{e:#}");
            let chain = error_chain(&e);
            if chain.contains("Operation not permitted") {
                Err("refused by the kernel (EPERM on BPF_PROG_LOAD of a tracing program)".into())
            } else {
                Err(format!("load failed: {text}: {chain}"))
            }
        }
    }
}

pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

pub(super) fn tracepoint_supported(kernel_btf: Option<&KernelBtf>) -> Result<(), String> {
    let Some(kbtf) = kernel_btf else {
        return Err("no kernel BTF (tp_btf needs it)".into());
    };
    if !kbtf.has_overlay_types() {
        return Err(format!(
            "needs overlay's types in BTF (it reads ovl_fs and ovl_inode of mounts made while recording): {}; pass --btf-overlay FILE, or use the kprobe backend",
            kbtf.info.overlay_missing.as_deref().unwrap_or("not found")
        ));
    }
    let missing: Vec<&str> = TP_HOOKS
        .iter()
        .map(|(_, tp)| *tp)
        .filter(|tp| !kbtf.has_type(&format!("btf_trace_{tp}")))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the kernel lacks the ctime tracepoints ({}) that came with 6.13's multigrain timestamps",
            missing.join(", ")
        ))
    }
}

/// Inspects the kernel: BTF, overlay symbols, which backends can attach and which one `record`
/// picks.
pub fn kernel_facts(btf_paths: &BtfPaths) -> KernelFacts {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (kbtf, btf_error) = match KernelBtf::load(btf_paths) {
        Ok(k) => (Some(k), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let syms = TextSymbols::read();
    let symbols: Vec<(String, bool)> = OVERLAY_SYMBOLS
        .iter()
        .map(|s| ((*s).to_owned(), syms.contains(s)))
        .collect();
    let survey = Survey::new(kbtf.as_ref(), btf_error.clone(), &syms);
    let backends = vec![
        status(Backend::Fentry, fentry_supported(btf_paths, kbtf.as_ref())),
        survey.status(Backend::Kprobe),
        survey.status(Backend::Tracepoint),
    ];
    let chosen = backends.iter().find(|b| b.usable).map(|b| b.backend);
    let overlay_loaded = survey.overlay_loaded;
    drop(survey);
    let fields = kbtf
        .as_ref()
        .map(KernelBtf::field_sources)
        .unwrap_or_default();
    KernelFacts {
        fields,
        release,
        btf: kbtf.map(|k| k.info.clone()),
        btf_error,
        overlay_loaded,
        symbols,
        backends,
        chosen,
        phases: chosen
            .map(|b| super::phases::visible_phases(b, &syms))
            .unwrap_or_default(),
        overlay_options: crate::host::overlay_options::probe_all(),
    }
}

/// What `record` needs to know to pick between kprobe and tracepoint, without `doctor`'s extra
/// work (the fentry test load parses the object and vmlinux BTF once more).
pub(super) struct Survey<'a> {
    pub(super) kbtf: Option<&'a KernelBtf>,
    pub(super) btf_error: Option<String>,
    pub(super) offsets_error: Option<String>,
    pub(super) syms: &'a TextSymbols,
    pub(super) overlay_loaded: bool,
}

impl<'a> Survey<'a> {
    pub(super) fn new(
        kbtf: Option<&'a KernelBtf>,
        btf_error: Option<String>,
        syms: &'a TextSymbols,
    ) -> Self {
        Self {
            kbtf,
            btf_error,
            offsets_error: kbtf.and_then(|k| k.offsets().err().map(|e| e.to_string())),
            syms,
            overlay_loaded: fs::read_to_string("/proc/filesystems")
                .unwrap_or_default()
                .contains("\toverlay"),
        }
    }

    pub(super) fn status(&self, backend: Backend) -> BackendStatus {
        let r = match backend {
            Backend::Fentry => Err("not implemented yet".into()),
            Backend::Kprobe => kprobes_supported().and_then(|()| {
                let missing: Vec<&str> = KPROBE_HOOKS
                    .iter()
                    .filter(|(_, f, required)| *required && !self.syms.contains(f))
                    .map(|(_, f, _)| *f)
                    .collect();
                let vfs_missing: Vec<&str> = VFS_HOOKS
                    .iter()
                    .map(|(_, f)| *f)
                    .filter(|f| !self.syms.contains(f))
                    .collect();
                let vmlinux_only = self.kbtf.filter(|k| !k.has_overlay_types());
                if missing.is_empty() {
                    match vmlinux_only {
                        Some(k) => match k.vmlinux_only_gap() {
                            Some(gap) => Err(format!(
                                "overlay's types are not in BTF ({}) and {gap}; pass --btf-overlay FILE",
                                k.info.overlay_missing.as_deref().unwrap_or("not found")
                            )),
                            None if !vfs_missing.is_empty() => Err(format!(
                                "overlay's types are not in BTF and {} are not in /proc/kallsyms",
                                vfs_missing.join(", ")
                            )),
                            None => Ok(()),
                        },
                        None => Ok(()),
                    }
                } else if !self.overlay_loaded {
                    Err("overlay is not loaded (modprobe overlay)".into())
                } else {
                    Err(format!(
                        "overlay functions not found in /proc/kallsyms (inlined?): {}",
                        missing.join(", ")
                    ))
                }
            }),
            Backend::Tracepoint => tracepoint_supported(self.kbtf),
        };
        // Every backend reads kernel structures at offsets from BTF.
        let r = r.and_then(|()| match (self.kbtf, &self.offsets_error) {
            (None, _) => Err(self.btf_error.clone().unwrap_or_default()),
            (Some(_), Some(e)) => Err(e.clone()),
            (Some(_), None) => Ok(()),
        });
        status(backend, r)
    }
}

pub(super) fn status(backend: Backend, r: Result<(), String>) -> BackendStatus {
    match r {
        Ok(()) => BackendStatus {
            backend,
            usable: true,
            reason: "available".into(),
        },
        Err(reason) => BackendStatus {
            backend,
            usable: false,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::TextSymbols;

    /// Text symbols only, exact names (a module's `[overlay]` column ignored), duplicates
    /// (static functions of the same name in several files) found.
    #[test]
    fn text_symbols_lookup() {
        let syms = TextSymbols::parse(
            "ffffffff81000000 T vfs_rename\n\
             ffffffff81000100 t ovl_copy_up_start\t[overlay]\n\
             ffffffff81000200 D ovl_data_symbol\n\
             ffffffff81000300 t dup\n\
             ffffffff81000400 t dup\n\
             ffffffff81000500 t ovl_copy_up_start.isra.0\t[overlay]\n"
                .as_bytes(),
        );
        assert!(syms.contains("vfs_rename"));
        assert!(syms.contains("ovl_copy_up_start"));
        assert!(syms.contains("ovl_copy_up_start.isra.0"));
        assert!(syms.contains("dup"));
        assert!(!syms.contains("ovl_data_symbol"), "a data symbol");
        assert!(!syms.contains("ovl_copy_up"), "a prefix");
        assert!(!syms.contains("vfs_renam"));
        assert!(!TextSymbols::default().contains("vfs_rename"));
    }
}
