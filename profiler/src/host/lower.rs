//! Which lower layer of an overlay mount a path comes from, looked up in the layer directories
//! as overlay merges them (whiteouts, opaque directories, non-directories hiding what is below),
//! with the merge of each directory remembered per mount.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::mountinfo::OverlayMount;

impl OverlayMount {
    /// Resolve a path relative to the overlay root (e.g. "d/f") to the topmost lower layer that contains it:
    /// returns (1-based layer index, the layer directory).
    ///
    /// This replays overlayfs's name lookup over the lower layers only (the caller asks
    /// where a copy-up's data came from, which is before the upper layer has the file):
    /// a whiteout (char device 0/0, or an xattr whiteout inside an `opaque=x` directory)
    /// hides the name in every layer below it; an opaque directory (`overlay.opaque=y`)
    /// hides the layers below it for everything under it; a non-directory hides the layers
    /// below it and cannot be descended into. Redirects and metacopy origins are not
    /// followed. Returns `None` if no lower layer has the path, or if `rel` is not a plain
    /// relative path (`..` components are refused rather than guessed at).
    #[must_use]
    pub fn lower_layer_of(&self, rel: &Path) -> Option<(u32, PathBuf)> {
        self.lower_layer_cached(rel, &mut DirStacks::default())
    }

    /// [`Self::lower_layer_of`] with the merge of every parent directory remembered in
    /// `cache` (layers are read-only while mounted): a file's lookup then costs one
    /// `lstat` per layer instead of one per layer and path level plus the opaque xattrs.
    pub fn lower_layer_cached(&self, rel: &Path, cache: &mut DirStacks) -> Option<(u32, PathBuf)> {
        let mut parts = Vec::new();
        for comp in rel.components() {
            match comp {
                Component::Normal(c) => parts.push(c),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => return None,
            }
        }
        let xattr_prefix = if self.options.contains_key("userxattr") {
            "user.overlay."
        } else {
            "trusted.overlay."
        };
        let Some((name, dirs)) = parts.split_last() else {
            // Empty `rel`: the root directory, present in every layer; the topmost wins.
            return self.lowerdirs.first().and_then(|l| layer_result(0, l));
        };
        let parent_rel: PathBuf = dirs.iter().collect();
        if cache.0.len() >= DirStacks::MAX {
            cache.0.clear();
        }
        let stack = cache
            .0
            .entry(parent_rel.clone())
            .or_insert_with(|| self.dir_stack(dirs, xattr_prefix))
            .clone()?;
        let rel_all = parent_rel.join(name);
        for i in stack {
            let layer = &self.lowerdirs[i];
            let candidate = layer.join(&rel_all);
            let Ok(md) = candidate.symlink_metadata() else {
                continue;
            };
            if is_whiteout(&md, &candidate, &layer.join(&parent_rel), xattr_prefix) {
                return None;
            }
            return layer_result(i, layer);
        }
        None
    }

    /// Layers (0-based into lowerdirs) whose copy of the directory `dirs` takes part in the
    /// merge, top first; `None` if none has it. Every layer takes part in the root.
    fn dir_stack(&self, dirs: &[&std::ffi::OsStr], xattr_prefix: &str) -> Option<Vec<usize>> {
        let mut stack: Vec<usize> = (0..self.lowerdirs.len()).collect();
        let mut rel_so_far = PathBuf::new();
        for name in dirs {
            let parent_rel = rel_so_far.clone();
            rel_so_far.push(name);
            let mut next = Vec::new();
            for &i in &stack {
                let layer = &self.lowerdirs[i];
                let candidate = layer.join(&rel_so_far);
                let Ok(md) = candidate.symlink_metadata() else {
                    continue;
                };
                if is_whiteout(&md, &candidate, &layer.join(&parent_rel), xattr_prefix) {
                    // Hides the name in the layers below; directories already found in
                    // higher layers still merge (they simply get nothing from below).
                    break;
                }
                if !md.is_dir() {
                    // A non-directory cannot be descended into and, below a directory,
                    // is ignored together with everything under it.
                    break;
                }
                next.push(i);
                if get_xattr_byte(&candidate, &format!("{xattr_prefix}opaque")) == Some(b'y') {
                    break;
                }
            }
            if next.is_empty() {
                return None;
            }
            stack = next;
        }
        Some(stack)
    }
}

/// The merged lower layers of directories already looked up, for
/// [`OverlayMount::lower_layer_cached`] (one per mount).
#[derive(Debug, Default)]
pub struct DirStacks(std::collections::HashMap<PathBuf, Option<Vec<usize>>>);

impl DirStacks {
    /// Forgotten all at once past this many directories.
    const MAX: usize = 4096;
}

/// Pair a 0-based lowerdir position with its 1-based layer number.
fn layer_result(i: usize, layer: &Path) -> Option<(u32, PathBuf)> {
    Some((u32::try_from(i + 1).ok()?, layer.to_path_buf()))
}

/// Whether a lower-layer entry is an overlay whiteout: the classic char device 0/0, or
/// (6.7+) a zero-size file with an `overlay.whiteout` xattr in a directory marked
/// `overlay.opaque=x`, which is how whiteouts survive being nested in another overlay.
fn is_whiteout(md: &std::fs::Metadata, path: &Path, parent: &Path, xattr_prefix: &str) -> bool {
    let ft = md.file_type();
    if ft.is_char_device() {
        return md.rdev() == 0;
    }
    ft.is_file()
        && md.len() == 0
        && get_xattr_byte(parent, &format!("{xattr_prefix}opaque")) == Some(b'x')
        && get_xattr_byte(path, &format!("{xattr_prefix}whiteout")).is_some()
}

/// First byte of an xattr's value without following symlinks; `Some(0)` for an empty
/// value, `None` if it is absent or unreadable. Overlay's flag xattrs are one byte long.
fn get_xattr_byte(path: &Path, name: &str) -> Option<u8> {
    let cpath = CString::new(path.as_os_str().as_bytes()).ok()?;
    let cname = CString::new(name).ok()?;
    let mut buf = [0u8; 8];
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer
    // pointer and length describe a valid writable array.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    match n {
        0 => Some(0),
        n if n > 0 => Some(buf[0]),
        _ => None,
    }
}
