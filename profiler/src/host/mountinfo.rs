//! Overlay mounts and their layers, read from `/proc/PID/mountinfo`.
//!
//! cowprof's eBPF side reports the overlay superblock's `s_dev` and the index of the lower
//! layer a copy-up came from. Both only mean something once joined with the mount table:
//! `s_dev` is the anonymous `0:N` device in the third mountinfo field, and the layer index
//! counts the `lowerdir` entries of that mount's super options. mountinfo is the one source
//! that works for Docker's overlay2 driver, containerd's snapshotter and hand-made mounts
//! alike, which is why this module parses it rather than asking the container engines.
//!
//! Escaping has two levels. The kernel's `seq_file` code escapes space, tab, newline,
//! backslash and (in options) comma as three-digit octal (`\040`, `\011`, `\012`, `\134`,
//! `\054`); some kernels also write `\072` for a ':' inside one lowerdir entry. Below that,
//! overlayfs's own option syntax lets a backslash quote the next character (`\:`, `\,`),
//! and since 6.5 the kernel shows the user's original `lowerdir=` string, so such a quote
//! reaches mountinfo as `\134:`. The tokenizer here undoes both levels at once: only a raw,
//! unquoted ':' separates layers.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Where [`read_overlay_mounts`] looks: our own mount namespace, the one the profiler's
/// path lookups happen in.
const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// Bits of the minor number in the kernel's internal `dev_t` (`MINORBITS`), which is what
/// the eBPF side reads from `sb->s_dev`; userspace's `makedev` packs the numbers differently.
const KERNEL_MINOR_BITS: u32 = 20;

/// One overlay mount from mountinfo, with its layer directories resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// First mountinfo field; unique per mount, reused after unmount.
    pub mount_id: u32,
    /// `st_dev` of the overlay as the kernel encodes `s_dev`: `(major << 20) | minor` (NOT the userspace
    /// `makedev` encoding), so it compares directly with what the eBPF side reads.
    pub kdev: u32,
    /// Major number of the overlay superblock's device (0: overlays get anonymous devices).
    pub major: u32,
    /// Minor number of the overlay superblock's device.
    pub minor: u32,
    /// Where the overlay is mounted, unescaped.
    pub mount_point: PathBuf,
    /// Lower layers, top first, absolute, unescaped; index 0 = layer 1 (topmost lower).
    pub lowerdirs: Vec<PathBuf>,
    /// Data-only lower layers (`datadir+=` or after `::`); reached only through metacopy
    /// redirects, never by name lookup. The kernel numbers them after the regular lowers.
    pub datadirs: Vec<PathBuf>,
    /// The writable layer; `None` for a read-only overlay.
    pub upperdir: Option<PathBuf>,
    /// As given in the options; the kernel's real work dir is `workdir/work`.
    pub workdir: Option<PathBuf>,
    /// All super options, e.g. `"metacopy" -> Some("on")`, `"userxattr" -> None`.
    ///
    /// Values are kept as mountinfo shows them (still escaped), because unescaping a
    /// `lowerdir=` list would erase the difference between a separator and a quoted ':'.
    /// Use the typed fields for paths. A key given more than once (`lowerdir+`, `datadir+`)
    /// has its values joined with ',', which cannot be ambiguous since a ',' inside a
    /// value is always escaped.
    pub options: BTreeMap<String, Option<String>>,
}

impl OverlayMount {
    /// Whether the super options contain `key=value`, e.g. `("metacopy", "on")`.
    #[must_use]
    pub fn has_option(&self, key: &str, value: &str) -> bool {
        matches!(self.options.get(key), Some(Some(v)) if v == value)
    }

    /// Metacopy is on for this mount: `metacopy=on`, or the module's default (mountinfo shows
    /// the option only where it differs from `/sys/module/overlay/parameters/metacopy`).
    pub fn metacopy_on(&self) -> bool {
        self.has_option("metacopy", "on")
            || (!self.has_option("metacopy", "off")
                && crate::host::mounts::overlay_param("metacopy").as_deref() == Some("Y"))
    }

    /// The directory of layer `idx`, 1-based as in the kernel's `ovl_layer.idx`: the
    /// regular lowers first, then the data-only layers. 0 (the upper layer) gives `None`.
    #[must_use]
    pub fn layer_dir(&self, idx: u32) -> Option<&Path> {
        let i = usize::try_from(idx).ok()?.checked_sub(1)?;
        self.lowerdirs
            .get(i)
            .or_else(|| self.datadirs.get(i - self.lowerdirs.len()))
            .map(PathBuf::as_path)
    }
}

/// Why mountinfo could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    /// The mountinfo file could not be read.
    #[error("reading {}", path.display())]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line does not have mountinfo's shape; `line` is 1-based.
    #[error("mountinfo line {line}: {reason}")]
    Malformed {
        /// 1-based line number in the input.
        line: usize,
        /// What was wrong with it.
        reason: &'static str,
    },
}

/// Overlay mounts from mountinfo text; other filesystems are skipped.
///
/// Relative layer paths are resolved by probing the real filesystem; see
/// [`parse_mountinfo_with`].
///
/// # Errors
/// [`MountinfoError::Malformed`] if any line lacks mountinfo's shape, or an overlay line
/// has a bad mount id, device number or mount point.
pub fn parse_mountinfo(text: &str) -> Result<Vec<OverlayMount>, MountinfoError> {
    parse_mountinfo_with(text, |p| p.try_exists().unwrap_or(false))
}

/// [`parse_mountinfo`] with the existence check used to resolve relative layer paths
/// injected, so the resolution can be tested without the directories existing.
///
/// Relative paths appear because Docker and containerd chdir into their root and pass
/// relative lowerdirs when the absolute option string would exceed a page, and the kernel
/// shows the strings it was given. For a relative lowerdir the first ancestor `A` of the
/// upperdir (nearest first) for which `exists(A/rel)` holds is used: that is
/// `<root>/overlay2` for Docker's `l/XXXX` links and `<root>/snapshots` for containerd's
/// `12/fs`. If none matches, `upperdir/../../rel` is used, which is right for both layouts.
/// A relative upperdir or workdir (Docker's `<id>/diff`) is resolved the same way from the
/// mount point (`<root>/overlay2/<id>/merged`), and a read-only overlay with relative
/// lowers falls back to the mount point too.
///
/// # Errors
/// As [`parse_mountinfo`].
pub fn parse_mountinfo_with(
    text: &str,
    exists: impl Fn(&Path) -> bool,
) -> Result<Vec<OverlayMount>, MountinfoError> {
    let mut mounts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(m) = parse_line(line, i + 1, &exists)? {
            mounts.push(m);
        }
    }
    Ok(mounts)
}

/// The overlay mount `mount(2)` made from `target` and `data` (its options), as if read from
/// mountinfo: relative paths are taken from `cwd` (the mounting process's working directory)
/// when it is known, else resolved as [`parse_mountinfo`] does. `None` if the options do not
/// describe an overlay.
#[must_use]
pub fn from_mount_args(
    target: &str,
    data: &str,
    cwd: Option<&Path>,
    kdev: u32,
) -> Option<OverlayMount> {
    let absolute = |p: &str| -> String {
        match cwd {
            Some(cwd) if !p.is_empty() && !p.starts_with('/') => cwd.join(p).display().to_string(),
            _ => p.to_owned(),
        }
    };
    let options: Vec<String> = data
        .split(',')
        .map(|opt| match opt.split_once('=') {
            Some((key @ ("upperdir" | "workdir" | "lowerdir+" | "datadir+"), v)) => {
                format!("{key}={}", absolute(v))
            }
            Some(("lowerdir", v)) => format!(
                "lowerdir={}",
                v.split(':').map(&absolute).collect::<Vec<_>>().join(":")
            ),
            _ => opt.to_owned(),
        })
        .collect();
    let escape = |s: &str| {
        s.replace('\\', "\\134")
            .replace(' ', "\\040")
            .replace('\t', "\\011")
            .replace('\n', "\\012")
    };
    let line = format!(
        "0 0 {}:{} / {} rw - overlay overlay rw,{}",
        kdev >> 20,
        kdev & 0xf_ffff,
        escape(&absolute(target)),
        options.join(",")
    );
    parse_mountinfo(&line).ok()?.into_iter().next()
}

/// Overlay mounts visible in our own mount namespace (`/proc/self/mountinfo`).
///
/// # Errors
/// [`MountinfoError::Io`] if the file cannot be read, else as [`parse_mountinfo`].
pub fn read_overlay_mounts() -> Result<Vec<OverlayMount>, MountinfoError> {
    read_overlay_mounts_from(Path::new(SELF_MOUNTINFO))
}

/// Overlay mounts from a given mountinfo file, e.g. `/proc/PID/mountinfo` of a process in
/// another mount namespace.
///
/// # Errors
/// [`MountinfoError::Io`] if the file cannot be read, else as [`parse_mountinfo`].
pub fn read_overlay_mounts_from(path: &Path) -> Result<Vec<OverlayMount>, MountinfoError> {
    let text = std::fs::read_to_string(path).map_err(|source| MountinfoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_mountinfo(&text)
}

/// The mount whose superblock device is `kdev` (as the eBPF side reads `sb->s_dev`).
/// Bind mounts of one overlay share a device; the first listed is returned.
#[must_use]
/// One line of mountinfo, the fields every caller needs (overlay mounts get [`OverlayMount`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The superblock device in the kernel's encoding (`sb->s_dev`).
    pub kdev: u32,
}

/// Every mount of this mount namespace, in mountinfo order (parents before children).
/// Unreadable or malformed lines are skipped.
pub fn mount_entries() -> Vec<MountEntry> {
    std::fs::read_to_string(SELF_MOUNTINFO)
        .map(|text| text.lines().filter_map(mount_entry).collect())
        .unwrap_or_default()
}

fn mount_entry(line: &str) -> Option<MountEntry> {
    let (pre, post) = line.split_once(" - ")?;
    let mut fields = pre.split(' ');
    let devno = fields.nth(2)?;
    let mnt = fields.nth(1)?;
    let (major, minor) = devno.split_once(':')?;
    let (major, minor) = (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?);
    Some(MountEntry {
        mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(mnt))),
        fstype: post.split(' ').next()?.to_owned(),
        kdev: (major << KERNEL_MINOR_BITS) | minor,
    })
}

/// The superblock device (kernel encoding, `major << 20 | minor`) of the filesystem that holds
/// `path`, from the mountinfo entry with the longest mount point above it. This is
/// `sb->s_dev`, what kernel code sees in `inode->i_sb->s_dev`; `stat`'s `st_dev` can differ
/// (btrfs reports a per-subvolume device).
pub fn superblock_kdev_of(path: &Path) -> Option<u32> {
    let path = path.canonicalize().ok()?;
    let mut best: Option<(usize, u32)> = None;
    for m in mount_entries() {
        if path.starts_with(&m.mount_point) {
            let depth = m.mount_point.components().count();
            // `>=`: a later mount on the same point hides the earlier one.
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, m.kdev));
            }
        }
    }
    best.map(|(_, kdev)| kdev)
}

pub fn find_by_kdev(mounts: &[OverlayMount], kdev: u32) -> Option<&OverlayMount> {
    mounts.iter().find(|m| m.kdev == kdev)
}

/// The mount whose `mount_point` is `path` or the deepest one containing it (`path` is
/// canonicalized first, so symlinks and `..` do not hide the mount).
///
/// If `path` cannot be canonicalized (it may not exist any more) it is compared as given.
/// When overlays are stacked on one mount point the last listed, which is the visible one,
/// wins.
#[must_use]
pub fn find_by_path<'a>(mounts: &'a [OverlayMount], path: &Path) -> Option<&'a OverlayMount> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// Parse one mountinfo line; `Ok(None)` if it is not an overlay mount.
fn parse_line(
    line: &str,
    lineno: usize,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Option<OverlayMount>, MountinfoError> {
    let bad = |reason| MountinfoError::Malformed {
        line: lineno,
        reason,
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or_else(|| bad("no ' - ' separator"))?;
    if sep < 6 {
        return Err(bad("fewer than 6 fields before the separator"));
    }
    let fstype = fields
        .get(sep + 1)
        .ok_or_else(|| bad("no filesystem type"))?;
    if *fstype != "overlay" {
        return Ok(None);
    }
    let mount_id = fields[0]
        .parse::<u32>()
        .map_err(|_| bad("mount id is not a number"))?;
    let (major, minor) = fields[2]
        .split_once(':')
        .ok_or_else(|| bad("device is not major:minor"))?;
    let major = major
        .parse::<u32>()
        .map_err(|_| bad("device major is not a number"))?;
    let minor = minor
        .parse::<u32>()
        .map_err(|_| bad("device minor is not a number"))?;
    if minor >> KERNEL_MINOR_BITS != 0 || major >> (32 - KERNEL_MINOR_BITS) != 0 {
        return Err(bad("device number does not fit the kernel's dev_t"));
    }
    let kdev = (major << KERNEL_MINOR_BITS) | minor;
    let mount_point = bytes_to_path(unescape_octal(fields[4]));
    if !mount_point.is_absolute() {
        return Err(bad("mount point is not absolute"));
    }
    let super_opts = fields.get(sep + 3).copied().unwrap_or("");

    let opts = parse_super_options(super_opts);

    // Docker mounts from its root with relative paths when the options are long: anchor
    // the upper and work dirs at the mount point (<root>/overlay2/<id>/merged).
    let upperdir = opts.upper.map(|u| resolve(&u, &mount_point, exists));
    let workdir = opts.work.map(|w| resolve(&w, &mount_point, exists));
    let anchor = upperdir.as_deref().unwrap_or(&mount_point);
    let lowerdirs = opts
        .lower
        .iter()
        .map(|l| resolve(l, anchor, exists))
        .collect();
    let datadirs = opts
        .data
        .iter()
        .map(|d| resolve(d, anchor, exists))
        .collect();

    Ok(Some(OverlayMount {
        mount_id,
        kdev,
        major,
        minor,
        mount_point,
        lowerdirs,
        datadirs,
        upperdir,
        workdir,
        options: opts.options,
    }))
}

/// Overlay super options split into what they say about layers, paths still unresolved.
#[derive(Default)]
struct SuperOptions {
    options: BTreeMap<String, Option<String>>,
    lower: Vec<PathBuf>,
    data: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
}

/// Parse the super options field of an overlay line.
fn parse_super_options(super_opts: &str) -> SuperOptions {
    let mut o = SuperOptions::default();
    for opt in split_unquoted(super_opts.as_bytes(), b',') {
        let opt = String::from_utf8_lossy(opt);
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_ref(), None),
        };
        if key.is_empty() {
            continue;
        }
        match (key, value) {
            ("lowerdir", Some(v)) => {
                let mut in_data = false;
                for part in split_lowerdir_list(v) {
                    if part.is_empty() {
                        // "::" (an empty entry): every layer after it is data-only.
                        in_data = true;
                    } else if in_data {
                        o.data.push(bytes_to_path(part));
                    } else {
                        o.lower.push(bytes_to_path(part));
                    }
                }
            }
            // One path each, taken verbatim by the kernel: no list syntax, only the
            // seq_file octal escapes to undo.
            ("lowerdir+", Some(v)) => o.lower.push(bytes_to_path(unescape_octal(v))),
            ("datadir+", Some(v)) => o.data.push(bytes_to_path(unescape_octal(v))),
            ("upperdir", Some(v)) => o.upper = Some(bytes_to_path(unescape_overlay(v))),
            ("workdir", Some(v)) => o.work = Some(bytes_to_path(unescape_overlay(v))),
            _ => {}
        }
        match (o.options.get_mut(key), value) {
            (Some(Some(prev)), Some(v)) => {
                prev.push(',');
                prev.push_str(v);
            }
            _ => {
                o.options.insert(key.to_owned(), value.map(str::to_owned));
            }
        }
    }
    o
}

/// Make a relative layer path absolute: the nearest proper ancestor `A` of `anchor` with
/// `exists(A/rel)`, else `anchor/../../rel` (the layout of both Docker and containerd).
fn resolve(rel: &Path, anchor: &Path, exists: &dyn Fn(&Path) -> bool) -> PathBuf {
    if rel.is_absolute() {
        return rel.to_path_buf();
    }
    if let Some(found) = anchor
        .ancestors()
        .skip(1)
        .map(|a| a.join(rel))
        .find(|p| exists(p))
    {
        return found;
    }
    let base = anchor
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("/"));
    base.join(rel)
}

fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// The byte value of a `\ooo` octal escape starting at `s[i]` (the backslash), if any.
fn octal_at(s: &[u8], i: usize) -> Option<u8> {
    let digits = s.get(i + 1..i + 4)?;
    if s.get(i) != Some(&b'\\') || !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
    u8::try_from(v).ok()
}

/// Undo the `seq_file` escapes (`\040`, `\011`, `\012`, `\134`, ...) as in a mount point.
pub(crate) fn unescape_octal(s: &str) -> Vec<u8> {
    let s = s.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let Some(b) = octal_at(s, i) {
            out.push(b);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Undo both escape levels in one overlay path (upperdir, workdir): octal escapes, then
/// overlayfs's backslash quoting, whether the backslash is raw or shown as `\134`.
fn unescape_overlay(s: &str) -> Vec<u8> {
    split_overlay(s.as_bytes(), None)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Split a `lowerdir=` list on raw, unquoted ':' and unescape each entry; an empty entry
/// marks the `::` before data-only layers.
fn split_lowerdir_list(s: &str) -> Vec<Vec<u8>> {
    split_overlay(s.as_bytes(), Some(b':'))
}

/// Read one escape unit at `s[i]`: an octal escape or a raw byte. Returns the byte, the
/// units' length, and whether it came from an escape (so cannot be a separator).
fn unit_at(s: &[u8], i: usize) -> Option<(u8, usize, bool)> {
    if let Some(b) = octal_at(s, i) {
        return Some((b, 4, true));
    }
    s.get(i).map(|&b| (b, 1, false))
}

/// The two-level tokenizer described in the module docs. With `sep`, a raw `sep` byte ends
/// an entry; everything escaped at either level is literal.
fn split_overlay(s: &[u8], sep: Option<u8>) -> Vec<Vec<u8>> {
    let mut parts = vec![Vec::new()];
    let mut i = 0;
    while let Some((b, len, escaped)) = unit_at(s, i) {
        i += len;
        if b == b'\\' {
            // Overlay-level quote (raw `\` or `\134`): the next unit is literal. A trailing
            // backslash stays itself.
            if let Some((next, next_len, _)) = unit_at(s, i) {
                i += next_len;
                push_last(&mut parts, next);
            } else {
                push_last(&mut parts, b);
            }
        } else if !escaped && Some(b) == sep {
            parts.push(Vec::new());
        } else {
            push_last(&mut parts, b);
        }
    }
    parts
}

fn push_last(parts: &mut [Vec<u8>], b: u8) {
    if let Some(last) = parts.last_mut() {
        last.push(b);
    }
}

/// Split super options on ',' not quoted by a backslash. The kernel writes a ',' inside a
/// value as `\054`, so only user-style `\,` quoting needs care here; escapes are kept for
/// the per-option unescaping.
fn split_unquoted(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// (superblock device, inode) of an upper directory, as the kernel side sees them: the device
/// comes from mountinfo (`sb->s_dev`), not `stat` (btrfs reports a subvolume device there).
pub fn upper_root_key(upper: &Path) -> Option<(u32, u64)> {
    let md = std::fs::metadata(upper).ok()?;
    let kdev = superblock_kdev_of(upper)
        .unwrap_or_else(|| to_kdev(std::os::unix::fs::MetadataExt::dev(&md)));
    Some((kdev, std::os::unix::fs::MetadataExt::ino(&md)))
}

/// Userspace `dev_t` (glibc encoding) to the kernel's internal `s_dev` (major << MINORBITS | minor).
pub fn to_kdev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (major << KERNEL_MINOR_BITS) | minor
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    #[test]
    fn mount_entry_fields() {
        let l = r"36 35 8:17 / /mnt/a\040b rw,noatime shared:1 - ext4 /dev/sdb1 rw";
        assert_eq!(
            super::mount_entry(l),
            Some(super::MountEntry {
                mount_point: "/mnt/a b".into(),
                fstype: "ext4".into(),
                kdev: (8 << 20) + 17,
            })
        );
        assert_eq!(super::mount_entry("garbage"), None);
    }

    use super::*;
    use std::collections::HashSet;

    fn no_fs(_: &Path) -> bool {
        false
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn one(line: &str) -> OverlayMount {
        let mut v = parse_mountinfo_with(line, no_fs).expect("parses");
        assert_eq!(v.len(), 1, "expected one overlay in {line}");
        v.remove(0)
    }

    const D: &str = "/var/lib/docker/overlay2";
    const C: &str = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";

    #[test]
    fn docker_overlay2_absolute_lowers() {
        let id = "4f1c0e9a0d3b";
        let line = format!(
            "1391 1234 0:61 / {D}/{id}/merged rw,relatime - overlay overlay \
             rw,lowerdir={D}/l/INITLINKAAAAAAAAAAAAAAAAAA:{D}/l/IMGLINKBBBBBBBBBBBBBBBBBBB,\
             upperdir={D}/{id}/diff,workdir={D}/{id}/work,nouserxattr"
        );
        let m = one(&line);
        assert_eq!(m.mount_id, 1391);
        assert_eq!((m.major, m.minor, m.kdev), (0, 61, 61));
        assert_eq!(m.mount_point, p(&format!("{D}/{id}/merged")));
        // The first link is the container's <id>-init layer.
        assert_eq!(
            m.lowerdirs,
            vec![
                p(&format!("{D}/l/INITLINKAAAAAAAAAAAAAAAAAA")),
                p(&format!("{D}/l/IMGLINKBBBBBBBBBBBBBBBBBBB"))
            ]
        );
        assert_eq!(m.upperdir, Some(p(&format!("{D}/{id}/diff"))));
        assert_eq!(m.workdir, Some(p(&format!("{D}/{id}/work"))));
        assert!(m.datadirs.is_empty());
        assert_eq!(m.options.get("nouserxattr"), Some(&None));
        assert_eq!(m.options.get("rw"), Some(&None));
    }

    #[test]
    fn docker_overlay2_init_layer_diff_dirs() {
        // The form `docker inspect` reports and pre-link overlay2 mounted: diff dirs.
        let id = "9e8d";
        let line = format!(
            "52 30 0:47 / {D}/{id}/merged rw - overlay overlay rw,\
             lowerdir={D}/{id}-init/diff:{D}/aaaa/diff:{D}/bbbb/diff,\
             upperdir={D}/{id}/diff,workdir={D}/{id}/work,index=off"
        );
        let m = one(&line);
        assert_eq!(m.lowerdirs.len(), 3);
        assert_eq!(
            m.layer_dir(1),
            Some(p(&format!("{D}/{id}-init/diff")).as_path())
        );
        assert_eq!(m.layer_dir(3), Some(p(&format!("{D}/bbbb/diff")).as_path()));
        assert_eq!(m.layer_dir(0), None);
        assert_eq!(m.layer_dir(4), None);
        assert!(m.has_option("index", "off"));
        assert!(!m.has_option("index", "on"));
    }

    #[test]
    fn docker_relative_l_links_fall_back_to_upper_grandparent() {
        let id = "0c5e";
        let line = format!(
            "2001 29 0:88 / {D}/{id}/merged rw,relatime shared:7 - overlay overlay \
             rw,lowerdir=l/ABCDEFGHIJKLMNOPQRSTUVWXYZ:l/ZYXWVUTSRQPONMLKJIHGFEDCBA,\
             upperdir={D}/{id}/diff,workdir={D}/{id}/work"
        );
        let m = one(&line);
        assert_eq!(
            m.lowerdirs,
            vec![
                p(&format!("{D}/l/ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
                p(&format!("{D}/l/ZYXWVUTSRQPONMLKJIHGFEDCBA"))
            ]
        );
    }

    #[test]
    fn relative_lowers_use_first_existing_ancestor() {
        // A layout where the grandparent guess is wrong: the probe must win.
        let line = "7 1 0:90 / /m rw - overlay overlay rw,lowerdir=l/AAA,\
                    upperdir=/srv/root/x/y/diff,workdir=/srv/root/x/y/work";
        let exists = |q: &Path| q == Path::new("/srv/root/l/AAA");
        let m = parse_mountinfo_with(line, exists)
            .expect("parses")
            .remove(0);
        assert_eq!(m.lowerdirs, vec![p("/srv/root/l/AAA")]);
    }

    #[test]
    fn docker_relative_upper_and_work_resolve_from_mount_point() {
        let line = format!(
            "2002 29 0:89 / {D}/abc/merged rw - overlay overlay \
             rw,lowerdir=l/AAA:l/BBB,upperdir=abc/diff,workdir=abc/work"
        );
        let seen: HashSet<PathBuf> = [format!("{D}/abc/diff"), format!("{D}/l/AAA")]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let m = parse_mountinfo_with(&line, |q| seen.contains(q))
            .expect("parses")
            .remove(0);
        assert_eq!(m.upperdir, Some(p(&format!("{D}/abc/diff"))));
        assert_eq!(m.workdir, Some(p(&format!("{D}/abc/work"))));
        assert_eq!(
            m.lowerdirs,
            vec![p(&format!("{D}/l/AAA")), p(&format!("{D}/l/BBB"))]
        );
    }

    #[test]
    fn containerd_snapshotter_absolute_and_relative() {
        let rootfs = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/7f3a/rootfs";
        let abs = format!(
            "3120 3100 0:123 / {rootfs} rw,relatime - overlay overlay \
             rw,lowerdir={C}/12/fs:{C}/11/fs:{C}/3/fs,upperdir={C}/13/fs,workdir={C}/13/work"
        );
        let m = one(&abs);
        assert_eq!(m.kdev, 123);
        assert_eq!(
            m.lowerdirs,
            vec![
                p(&format!("{C}/12/fs")),
                p(&format!("{C}/11/fs")),
                p(&format!("{C}/3/fs"))
            ]
        );
        assert_eq!(m.upperdir, Some(p(&format!("{C}/13/fs"))));

        let rel = format!(
            "3121 3100 0:124 / {rootfs} rw,relatime - overlay overlay \
             rw,lowerdir=12/fs:11/fs:3/fs,upperdir={C}/13/fs,workdir={C}/13/work"
        );
        // Textual fallback and the probe agree for this layout.
        assert_eq!(one(&rel).lowerdirs, m.lowerdirs);
        let on_disk: HashSet<PathBuf> = ["12/fs", "11/fs", "3/fs"]
            .iter()
            .map(|r| PathBuf::from(format!("{C}/{r}")))
            .collect();
        let probed = parse_mountinfo_with(&rel, |q| on_disk.contains(q))
            .expect("parses")
            .remove(0);
        assert_eq!(probed.lowerdirs, m.lowerdirs);
    }

    #[test]
    fn new_mount_api_lowerdir_plus_and_datadir_plus() {
        let line = "88 1 0:70 / /sysroot/etc rw,relatime - overlay composefs \
                    ro,lowerdir+=/run/l1,lowerdir+=/run/l2,datadir+=/repo/objects,\
                    datadir+=/repo/more,redirect_dir=on,metacopy=on";
        let m = one(line);
        assert_eq!(m.lowerdirs, vec![p("/run/l1"), p("/run/l2")]);
        assert_eq!(m.datadirs, vec![p("/repo/objects"), p("/repo/more")]);
        assert_eq!(m.upperdir, None);
        assert!(m.has_option("metacopy", "on"));
        assert!(m.has_option("redirect_dir", "on"));
        assert_eq!(
            m.options.get("lowerdir+"),
            Some(&Some("/run/l1,/run/l2".to_owned()))
        );
        // Kernel numbering continues into the data layers.
        assert_eq!(m.layer_dir(3), Some(Path::new("/repo/objects")));
        assert_eq!(m.layer_dir(4), Some(Path::new("/repo/more")));
    }

    #[test]
    fn lowerdir_plus_value_is_verbatim_apart_from_octal() {
        let m = one(r"1 1 0:1 / /m rw - overlay o rw,lowerdir+=/a:b\054c\134d");
        assert_eq!(m.lowerdirs, vec![p(r"/a:b,c\d")]);
    }

    #[test]
    fn mount_point_with_escaped_space_tab_newline_backslash() {
        let m = one(
            r"40 1 0:50 / /mnt/my\040merged\011x\012y\134z rw - overlay overlay rw,lowerdir=/lo\040wer,upperdir=/up\040per,workdir=/w",
        );
        assert_eq!(m.mount_point, p("/mnt/my merged\tx\ny\\z"));
        assert_eq!(m.lowerdirs, vec![p("/lo wer")]);
        assert_eq!(m.upperdir, Some(p("/up per")));
    }

    #[test]
    fn octal_colon_inside_lowerdir_is_not_a_separator() {
        let m = one(
            r"41 1 0:51 / /m rw - overlay overlay rw,lowerdir=/a\072b:/c,upperdir=/u,workdir=/w",
        );
        assert_eq!(m.lowerdirs, vec![p("/a:b"), p("/c")]);
    }

    #[test]
    fn backslash_quoted_colon_and_comma() {
        // User-style quoting, raw and as the 6.5+ kernel shows it (`\` written as `\134`).
        let raw = one(
            r"42 1 0:52 / /m rw - overlay overlay rw,lowerdir=/a\:b:/c\,d,upperdir=/u,workdir=/w",
        );
        assert_eq!(raw.lowerdirs, vec![p("/a:b"), p("/c,d")]);
        let shown = one(
            r"43 1 0:53 / /m rw - overlay overlay rw,lowerdir=/a\134:b:/c\134\054d:/e\134\134f,upperdir=/u\134:x,workdir=/w",
        );
        assert_eq!(shown.lowerdirs, vec![p("/a:b"), p("/c,d"), p(r"/e\f")]);
        assert_eq!(shown.upperdir, Some(p("/u:x")));
        assert!(shown.has_option("workdir", "/w"));
    }

    #[test]
    fn double_colon_starts_data_only_layers() {
        let m = one("44 1 0:54 / /m ro - overlay overlay ro,lowerdir=/A:/B::/C::/D,metacopy=on,redirect_dir=follow");
        assert_eq!(m.lowerdirs, vec![p("/A"), p("/B")]);
        assert_eq!(m.datadirs, vec![p("/C"), p("/D")]);
    }

    #[test]
    fn flags_and_options_are_recorded() {
        let m = one(
            "45 1 0:55 / /m rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,\
             index=off,metacopy=on,redirect_dir=on,xino=off,userxattr,volatile,uuid=on",
        );
        for (k, v) in [
            ("index", "off"),
            ("metacopy", "on"),
            ("redirect_dir", "on"),
            ("xino", "off"),
            ("uuid", "on"),
        ] {
            assert!(m.has_option(k, v), "{k}={v}");
        }
        assert_eq!(m.options.get("userxattr"), Some(&None));
        assert_eq!(m.options.get("volatile"), Some(&None));
        assert!(!m.has_option("userxattr", ""));
    }

    #[test]
    fn non_overlay_lines_are_skipped() {
        let text =
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    \n\
                    25 1 0:22 / /sys rw,nosuid shared:2 - sysfs sysfs rw\n\
                    99 36 0:77 / /o rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n";
        let v = parse_mountinfo_with(text, no_fs).expect("parses");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].mount_id, 99);
    }

    #[test]
    fn kdev_is_kernel_encoding_not_makedev() {
        let m = one("46 1 8:17 / /m rw - overlay overlay rw,lowerdir=/l");
        assert_eq!(m.kdev, (8 << 20) + 17);
        // Userspace makedev would give 0x811; the kernel's s_dev differs.
        assert_ne!(u64::from(m.kdev), libc::makedev(8, 17));
        assert_eq!(
            one("47 1 0:4095 / /m rw - overlay overlay rw,lowerdir=/l").kdev,
            4095
        );
    }

    #[test]
    fn malformed_lines_report_their_number() {
        let err =
            parse_mountinfo_with("ok\n1 2 0:3 / /m rw overlay overlay rw", no_fs).unwrap_err();
        assert!(
            matches!(err, MountinfoError::Malformed { line: 1, .. }),
            "{err}"
        );
        let text =
            "25 1 0:22 / /sys rw - sysfs sysfs rw\nx 1 0:3 / /m rw - overlay o rw,lowerdir=/l";
        let err = parse_mountinfo_with(text, no_fs).unwrap_err();
        assert!(
            matches!(err, MountinfoError::Malformed { line: 2, .. }),
            "{err}"
        );
        let err = parse_mountinfo_with("1 1 0:1048576 / /m rw - overlay o rw", no_fs).unwrap_err();
        assert!(
            matches!(err, MountinfoError::Malformed { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn find_by_kdev_and_path() {
        let text = "10 1 0:60 / /a rw - overlay overlay rw,lowerdir=/l\n\
                    11 1 0:61 / /a/b rw - overlay overlay rw,lowerdir=/l\n\
                    12 1 0:62 / /a/bc rw - overlay overlay rw,lowerdir=/l\n";
        let v = parse_mountinfo_with(text, no_fs).expect("parses");
        assert_eq!(find_by_kdev(&v, 61).map(|m| m.mount_id), Some(11));
        assert!(find_by_kdev(&v, 63).is_none());
        let id = |q: &str| find_by_path(&v, Path::new(q)).map(|m| m.mount_id);
        assert_eq!(id("/a/b/c/d"), Some(11));
        assert_eq!(id("/a/b"), Some(11));
        assert_eq!(id("/a/bc/x"), Some(12));
        assert_eq!(id("/a/x"), Some(10));
        assert_eq!(id("/z"), None);
    }

    #[test]
    fn reads_own_mountinfo() {
        // Whatever is mounted here, reading and parsing the live table must succeed.
        read_overlay_mounts().expect("/proc/self/mountinfo parses");
        let err = read_overlay_mounts_from(Path::new("/nonexistent/mountinfo")).unwrap_err();
        assert!(matches!(err, MountinfoError::Io { .. }));
    }

    /// A scratch directory removed on drop, so a failing assertion does not leave it behind.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir = std::env::temp_dir()
                .join(format!("cowprof-mi-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("mkdir scratch");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mkfile(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir -p");
        std::fs::write(path, b"x").expect("write");
    }

    fn cstr(path: &Path) -> CString {
        CString::new(path.as_os_str().as_bytes()).expect("no NUL")
    }

    fn whiteout(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir -p");
        let c = cstr(path);
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
        assert_eq!(
            rc,
            0,
            "mknod whiteout (needs root): {}",
            std::io::Error::last_os_error()
        );
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let c = cstr(path);
        let n = CString::new(name).expect("no NUL");
        // SAFETY: valid NUL-terminated strings; value pointer/len describe a valid slice.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "setxattr {name}: {}",
            std::io::Error::last_os_error()
        );
    }

    fn mount_over(layers: &[PathBuf], userxattr: bool) -> OverlayMount {
        let mut options = BTreeMap::new();
        if userxattr {
            options.insert("userxattr".to_owned(), None);
        }
        OverlayMount {
            mount_id: 1,
            kdev: 1,
            major: 0,
            minor: 1,
            mount_point: PathBuf::from("/m"),
            lowerdirs: layers.to_vec(),
            datadirs: Vec::new(),
            upperdir: None,
            workdir: None,
            options,
        }
    }

    #[test]
    fn lower_layer_of_real_tree() {
        let s = Scratch::new("lower");
        let l: Vec<PathBuf> = (1..=3).map(|i| s.0.join(format!("L{i}"))).collect();
        for d in &l {
            std::fs::create_dir_all(d).expect("mkdir layer");
        }
        // Same file in the middle and bottom layers: the middle one wins.
        mkfile(&l[1].join("a/f"));
        mkfile(&l[2].join("a/f"));
        // Only in the bottom layer.
        mkfile(&l[2].join("c/only3"));
        // Whited out in layer 1, present in 2.
        mkfile(&l[1].join("a/g"));
        whiteout(&l[0].join("a/g"));
        // Opaque dir in layer 1 hides layer 3's children but not its own.
        mkfile(&l[2].join("b/x"));
        mkfile(&l[0].join("b/y"));
        set_xattr(&l[0].join("b"), "trusted.overlay.opaque", b"y");
        // A file in layer 1 hides a directory of the same name below.
        mkfile(&l[0].join("d"));
        mkfile(&l[1].join("d/e"));
        // A whited-out directory hides everything beneath it.
        whiteout(&l[0].join("gone"));
        mkfile(&l[2].join("gone/deep"));
        // A whiteout below a directory does not hide the directory's own entries,
        // only what lies beneath the whiteout.
        mkfile(&l[0].join("w/f"));
        whiteout(&l[1].join("w"));
        mkfile(&l[2].join("w/h"));

        let m = mount_over(&l, false);
        let at = |q: &str| m.lower_layer_of(Path::new(q)).map(|(i, _)| i);
        assert_eq!(m.lower_layer_of(Path::new("a/f")), Some((2, l[1].clone())));
        assert_eq!(at("/a/f"), Some(2));
        assert_eq!(at("c/only3"), Some(3));
        assert_eq!(at("a/g"), None);
        assert_eq!(at("b/x"), None);
        assert_eq!(at("b/y"), Some(1));
        assert_eq!(at("b"), Some(1));
        assert_eq!(at("d"), Some(1));
        assert_eq!(at("d/e"), None);
        assert_eq!(at("gone/deep"), None);
        assert_eq!(at("gone"), None);
        assert_eq!(at("w/f"), Some(1));
        assert_eq!(at("w/h"), None);
        assert_eq!(at("w"), Some(1));
        assert_eq!(at("missing"), None);
        assert_eq!(at("a/missing"), None);
        assert_eq!(at("a"), Some(1)); // L1/a exists: it holds the whiteout
        assert_eq!(at(""), Some(1));
        assert_eq!(at("c/../a/f"), None);
        // One cache for every lookup, twice over (the second pass answers from the cache):
        // the same answers as fresh lookups.
        let mut cache = crate::host::lower::DirStacks::default();
        for _ in 0..2 {
            for q in [
                "a/f",
                "/a/f",
                "c/only3",
                "a/g",
                "b/x",
                "b/y",
                "b",
                "d",
                "d/e",
                "gone/deep",
                "gone",
                "w/f",
                "w/h",
                "w",
                "missing",
                "a/missing",
                "a",
                "",
                "c/../a/f",
            ] {
                assert_eq!(
                    m.lower_layer_cached(Path::new(q), &mut cache),
                    m.lower_layer_of(Path::new(q)),
                    "{q}"
                );
            }
        }
    }

    #[test]
    fn lower_layer_of_userxattr_and_xwhiteouts() {
        let s = Scratch::new("user");
        let l: Vec<PathBuf> = (1..=2).map(|i| s.0.join(format!("L{i}"))).collect();
        mkfile(&l[1].join("o/x"));
        mkfile(&l[0].join("o/y"));
        // With userxattr only the user.* namespace counts.
        set_xattr(&l[0].join("o"), "trusted.overlay.opaque", b"y");
        mkfile(&l[1].join("p/x"));
        std::fs::create_dir_all(l[0].join("p")).expect("mkdir");
        set_xattr(&l[0].join("p"), "user.overlay.opaque", b"y");
        // xattr whiteout: empty file with overlay.whiteout in an opaque=x directory.
        mkfile(&l[1].join("q/w"));
        std::fs::create_dir_all(l[0].join("q")).expect("mkdir");
        std::fs::write(l[0].join("q/w"), b"").expect("write");
        set_xattr(&l[0].join("q"), "user.overlay.opaque", b"x");
        set_xattr(&l[0].join("q/w"), "user.overlay.whiteout", b"");

        let m = mount_over(&l, true);
        let at = |q: &str| m.lower_layer_of(Path::new(q)).map(|(i, _)| i);
        assert_eq!(at("o/x"), Some(2));
        assert_eq!(at("p/x"), None);
        assert_eq!(at("q/w"), None);
        // Without userxattr the trusted.* opaque applies and user.* is ignored.
        let t = mount_over(&l, false);
        let at = |q: &str| t.lower_layer_of(Path::new(q)).map(|(i, _)| i);
        assert_eq!(at("o/x"), None);
        assert_eq!(at("p/x"), Some(2));
        assert_eq!(at("q/w"), Some(1));
    }
}
