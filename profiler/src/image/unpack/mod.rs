//! Unpacks one layer tar into an overlay-format layer directory, safely.
//!
//! Every write is relative to a directory fd: parents are opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` and leaves are created with
//! `*at` calls on a single name (no `/` in it), with `O_NOFOLLOW`/`O_EXCL`. So `..`, absolute
//! names, symlinks (in the tar or planted earlier in it) and hardlinks cannot reach outside the
//! layer root. Policy (docs/images.md, "Safety policy"):
//! - `..` components, absolute names, NUL, over-long names, bare `.wh.`: refused.
//! - writing through a symlink inside the layer: refused (no legitimate layer needs it).
//! - hardlinks: only to an entry already unpacked in the same layer.
//! - char/block devices: never created (skipped, with a note); the runtime provides /dev.
//!   FIFOs are created (harmless).
//! - setuid/setgid: kept (the image must behave the same) except on group/world-writable files,
//!   where they are dropped; the store is 0700, so nothing outside root reaches them.
//! - xattrs: `trusted.overlay.*` / `user.overlay.*` refuse the layer; `user.*` and
//!   `security.capability` are kept; any other namespace is dropped with a note.
//! - duplicate entries: the later one wins, as with tar; a note is kept.
//! - limits: total uncompressed bytes, entries, path length, decompression ratio.
//!
//! Whiteouts become overlay's own form: `.wh.<name>` → char device 0/0 at `<name>`,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory, other `.wh..wh.*` skipped.

use std::{
    cell::Cell,
    collections::HashSet,
    io::{BufRead, BufReader, Read},
    os::fd::OwnedFd,
    rc::Rc,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{hex, ImageError};
use crate::host::cancel::Cancel;

mod entry;
mod names;

use entry::{apply_meta, unpack_entry, Ctx};
pub use names::{classify, safe_mode, split_path, Whiteout};

/// Bounds on what one layer may make the unpacker do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes of one layer's tar stream.
    pub max_layer_bytes: u64,
    pub max_entries: u64,
    /// Bytes of a whole entry path.
    pub max_path: usize,
    /// Uncompressed/compressed ratio allowed once past `ratio_floor` bytes (bomb guard).
    pub max_ratio: u64,
    pub ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_layer_bytes: 16 << 30,
            max_entries: 1_000_000,
            max_path: 4096,
            max_ratio: 1000,
            ratio_floor: 64 << 20,
        }
    }
}

/// What one layer held, kept next to it in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub fifos: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Bytes of regular file data.
    pub file_bytes: u64,
    /// Uncompressed tar stream bytes.
    pub tar_bytes: u64,
    /// Blob bytes as stored (compressed, if it was).
    pub blob_bytes: u64,
    /// `none`, `gzip` or `zstd`.
    pub compression: String,
    /// One line each: devices skipped, xattrs dropped, duplicates, setuid dropped.
    pub notes: Vec<String>,
}

/// What a finished unpack proved about the stream.
pub struct Unpacked {
    pub stats: LayerStats,
    /// `sha256:…` of the uncompressed stream (the diffID).
    pub diff_id: String,
    /// `sha256:…` of the raw blob.
    pub blob_digest: String,
}

/// Counts and hashes what passes through; stops with a recorded reason at a limit.
struct Hashing<R> {
    inner: R,
    /// None once it is known the digest is not needed (a plain blob is its own diffID).
    hasher: Option<Sha256>,
    count: Rc<Cell<u64>>,
    /// For the decompressed side: the compressed count to compare with, and the limits.
    guard: Option<(Rc<Cell<u64>>, Limits)>,
    tripped: Rc<Cell<Option<&'static str>>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        let total = self.count.get() + n as u64;
        self.count.set(total);
        if let Some((compressed, limits)) = &self.guard {
            if total > limits.max_layer_bytes {
                self.tripped.set(Some("size"));
                return Err(std::io::Error::other("layer size limit"));
            }
            if total > limits.ratio_floor && total / compressed.get().max(1) > limits.max_ratio {
                self.tripped.set(Some("ratio"));
                return Err(std::io::Error::other("decompression ratio limit"));
            }
        }
        Ok(n)
    }
}

/// Reads the stream to its end so that the hash covers every byte (tar padding included).
fn drain(r: &mut impl Read) -> std::io::Result<()> {
    std::io::copy(r, &mut std::io::sink()).map(|_| ())
}

/// Unpacks `blob` (plain, gzip or zstd, by magic bytes) into the empty directory `root`.
/// Verifies nothing itself: the caller compares the returned digests with the expected ones.
#[expect(
    clippy::too_many_lines,
    reason = "the hostile-tar state machine: every entry type and its checks in one place, so no path skips a check"
)]
pub fn unpack_layer(
    blob: impl Read,
    layer: &str,
    root: &OwnedFd,
    limits: Limits,
    cancel: Option<&Cancel>,
) -> Result<Unpacked, ImageError> {
    let stream_err = |reason: String| ImageError::Stream {
        layer: layer.to_owned(),
        reason,
    };
    let tripped = Rc::new(Cell::new(None));
    let compressed_count = Rc::new(Cell::new(0));
    let mut raw = BufReader::with_capacity(
        256 << 10,
        Hashing {
            inner: blob,
            hasher: Some(Sha256::new()),
            count: Rc::clone(&compressed_count),
            guard: None,
            tripped: Rc::clone(&tripped),
        },
    );
    let magic = raw
        .fill_buf()
        .map_err(|e| stream_err(format!("reading: {e}")))?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let (compression, decoder): (&str, Box<dyn Read + '_>) = if magic.starts_with(&[0x1f, 0x8b]) {
        (
            "gzip",
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut raw)),
        )
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let d = zstd::stream::read::Decoder::with_buffer(&mut raw)
            .map_err(|e| stream_err(format!("zstd: {e}")))?;
        ("zstd", Box::new(d))
    } else {
        // Uncompressed: the blob digest is the diffID, hashed once below.
        raw.get_mut().hasher = None;
        ("none", Box::new(&mut raw))
    };
    let tar_count = Rc::new(Cell::new(0));
    let mut plain = Hashing {
        inner: decoder,
        hasher: Some(Sha256::new()),
        count: Rc::clone(&tar_count),
        guard: Some((Rc::clone(&compressed_count), limits)),
        tripped: Rc::clone(&tripped),
    };
    let mut ctx = Ctx {
        layer,
        root,
        limits,
        stats: LayerStats {
            compression: compression.to_owned(),
            ..LayerStats::default()
        },
        seen: HashSet::new(),
        dirs: Vec::new(),
    };
    let limit_err = |what: &str| match tripped.get() {
        Some("size") => stream_err(format!(
            "uncompressed size over the {}-byte limit{what}; refused",
            limits.max_layer_bytes
        )),
        Some(_) => stream_err(format!(
            "decompresses more than {}x (a decompression bomb?){what}; refused",
            limits.max_ratio
        )),
        None => stream_err(format!("corrupt or truncated stream{what}")),
    };
    {
        let mut ar = tar::Archive::new(&mut plain);
        let entries = ar
            .entries()
            .map_err(|e| stream_err(format!("not a tar stream: {}", super::one_line(&e))))?;
        let mut last = String::from("(start)");
        for entry in entries {
            if cancel.is_some_and(Cancel::is_set) {
                return Err(ImageError::Interrupted);
            }
            let entry = entry.map_err(|e| {
                let base = limit_err(&format!(" after entry {last:?}"));
                if tripped.get().is_some() {
                    base
                } else {
                    stream_err(format!(
                        "corrupt or truncated tar stream after entry {last:?}: {}",
                        super::one_line(&e)
                    ))
                }
            })?;
            let raw_path = entry.path_bytes().into_owned();
            last = String::from_utf8_lossy(&raw_path)
                .chars()
                .take(200)
                .collect();
            ctx.stats.entries += 1;
            if ctx.stats.entries > limits.max_entries {
                return Err(ctx.refuse(
                    &last,
                    format!(
                        "more than {} entries in one layer; refused",
                        limits.max_entries
                    ),
                ));
            }
            unpack_entry(&mut ctx, entry, &raw_path, &last).map_err(|e| {
                if tripped.get().is_some() {
                    limit_err(&format!(" in entry {last:?}"))
                } else {
                    e
                }
            })?;
        }
    }
    drain(&mut plain).map_err(|e| {
        if tripped.get().is_some() {
            limit_err(" at the end")
        } else {
            stream_err(format!(
                "corrupt or truncated stream at the end: {}",
                super::one_line(&e)
            ))
        }
    })?;
    let diff_id = format!(
        "sha256:{}",
        hex(&plain.hasher.take().unwrap_or_default().finalize())
    );
    drop(plain);
    drain(&mut raw).map_err(|e| stream_err(format!("reading: {e}")))?;
    let blob_digest = match raw.get_mut().hasher.take() {
        Some(h) => format!("sha256:{}", hex(&h.finalize())),
        None => diff_id.clone(),
    };
    // Directory metadata last, deepest first.
    let mut dirs = std::mem::take(&mut ctx.dirs);
    dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    for (comps, meta) in &dirs {
        let name = comps.join("/");
        let fd = ctx.open_dir(&name, comps)?;
        apply_meta(&ctx, &name, &fd, meta)?;
    }
    ctx.stats.tar_bytes = tar_count.get();
    ctx.stats.blob_bytes = compressed_count.get();
    Ok(Unpacked {
        stats: ctx.stats,
        diff_id,
        blob_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names_convert() {
        assert_eq!(classify("a"), Ok(Whiteout::None));
        assert_eq!(classify(".wh.a"), Ok(Whiteout::Delete("a")));
        assert_eq!(classify(".wh..wh..opq"), Ok(Whiteout::Opaque));
        assert_eq!(classify(".wh..wh.plnk"), Ok(Whiteout::Reserved));
        assert!(classify(".wh.").is_err());
        assert!(classify(".wh...").is_err());
        assert_eq!(classify(".wh.a.wh.b"), Ok(Whiteout::Delete("a.wh.b")));
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            split_path(b"./a//b/", 4096),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(split_path(b"a/../../x", 4096).is_err());
        assert!(split_path(b"/etc/passwd", 4096).is_err());
        assert!(split_path(b"a\0b", 4096).is_err());
        assert!(split_path(&[b'a'; 300], 4096).is_err());
        assert!(split_path(&[b'a'; 20], 10).is_err());
    }

    #[test]
    fn setuid_is_dropped_only_when_writable_by_others() {
        assert_eq!(safe_mode(0o104_755), (0o4755, false));
        assert_eq!(safe_mode(0o4777), (0o777, true));
        assert_eq!(safe_mode(0o2775), (0o775, true));
        assert_eq!(safe_mode(0o1777), (0o1777, false));
    }
}
