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

/// The text symbols (`t`, `T`) of `/proc/kallsyms`, one `ADDR TYPE NAME [MODULE]` line each:
/// all that [`symbol_present`] looks at. The data symbols are left out while reading (about half
/// of the file's lines: the whole file held 5–6 MiB through attaching).
pub(super) fn kallsyms() -> String {
    use std::io::BufRead as _;
    let Ok(f) = fs::File::open("/proc/kallsyms") else {
        return String::new();
    };
    let mut out = String::new();
    for line in std::io::BufReader::with_capacity(1 << 16, f).lines() {
        let Ok(line) = line else { break };
        if matches!(line.split_whitespace().nth(1), Some("t" | "T")) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.shrink_to_fit();
    out
}

pub(super) fn symbol_present(kallsyms: &str, name: &str) -> bool {
    kallsyms.lines().any(|l| {
        let mut it = l.split_whitespace();
        let (_, ty, sym) = (it.next(), it.next(), it.next());
        matches!(ty, Some("t" | "T")) && sym == Some(name)
    })
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
    let syms = kallsyms();
    let symbols: Vec<(String, bool)> = OVERLAY_SYMBOLS
        .iter()
        .map(|s| ((*s).to_owned(), symbol_present(&syms, s)))
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
    pub(super) syms: &'a str,
    pub(super) overlay_loaded: bool,
}

impl<'a> Survey<'a> {
    pub(super) fn new(
        kbtf: Option<&'a KernelBtf>,
        btf_error: Option<String>,
        syms: &'a str,
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
                    .filter(|(_, f, required)| *required && !symbol_present(self.syms, f))
                    .map(|(_, f, _)| *f)
                    .collect();
                let vfs_missing: Vec<&str> = VFS_HOOKS
                    .iter()
                    .map(|(_, f)| *f)
                    .filter(|f| !symbol_present(self.syms, f))
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
