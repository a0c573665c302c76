//! Container images as users know them: `docker save` archives and OCI layouts, imported into a
//! content-addressed store of overlay-format layer directories ([`store`]), inspected for waste
//! and likely copy-ups ([`inspect`]), and compared on their real layer stacks ([`compare`]).
//!
//! Data flow: [`archive`] finds the blobs (tar index or directory, never following a path out of
//! the archive) → [`manifest`] parses docker's manifest.json or OCI index/manifest/config →
//! [`unpack`] streams each layer (plain, gzip or zstd by magic bytes), verifying digests while it
//! writes entries relative to directory fds → [`store`] renames the finished layer into place.

pub mod archive;
pub mod bench;
pub mod compare;
pub mod forecast;
pub mod inspect;
pub mod manifest;
pub mod model;
pub mod progress;
pub mod store;
pub mod unpack;
pub mod verify;

use std::path::PathBuf;

/// Everything that can go wrong with an image. `BadInput` variants (exit 2) name the archive
/// entry or blob at fault; the rest are environment failures (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A hostile or malformed layer entry: refused, the layer is not kept.
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Entry {
        layer: String,
        entry: String,
        reason: String,
    },
    /// A blob whose content does not match its digest.
    #[error("blob {blob}: {what} digest mismatch: expected {expected}, got {actual}; the archive is corrupt or was tampered with")]
    Digest {
        blob: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// A layer stream that cannot be decompressed or parsed.
    #[error("layer {layer}: {reason}")]
    Stream { layer: String, reason: String },
    /// Manifest, index or config problems, and blobs the archive does not hold.
    #[error("{archive}: {reason}")]
    Archive { archive: String, reason: String },
    /// An image reference not found in the store.
    #[error("no image {reference:?} in the store {store}; import it first with `cowprof image import ARCHIVE`")]
    NotFound { reference: String, store: PathBuf },
    /// Needs root (mknod of whiteouts, trusted.* xattrs, mounts).
    #[error("{what} needs root (CAP_SYS_ADMIN and CAP_MKNOD); rerun with sudo")]
    NotRoot { what: &'static str },
    #[error(transparent)]
    Io(#[from] crate::host::io::PathIoError),
    /// A trace file that is not a usable `record --json` trace.
    #[error("trace {trace}: {reason}")]
    Trace { trace: PathBuf, reason: String },
    #[error("interrupted")]
    Interrupted,
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The lab run of a calibration failed (its own message).
    #[error("{0}")]
    Calibration(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Mount(#[from] crate::host::mounts::OverlayMountError),
    /// More layers than one page of overlay mount options can name.
    #[error("{layers} layers make {bytes} bytes of overlay options, over the kernel's 4095; use a shorter --store path")]
    OptionsTooLong { layers: usize, bytes: usize },
}

pub use crate::host::io::io_err;

/// An image as tables and charts name it: its first tag, else its short digest.
pub(crate) fn image_label(tags: &[String], id: &str) -> String {
    tags.first()
        .cloned()
        .unwrap_or_else(|| crate::fmt::short_digest(id).to_owned())
}

/// Hex of a SHA-256 digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `sha256:<64 hex>` → the hex part; anything else is refused (it would become a path).
pub(crate) fn digest_hex(d: &str) -> Option<&str> {
    let h = d.strip_prefix("sha256:")?;
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(h)
}

/// An error from a parser of outside input, as one short line (the tar crate quotes raw bytes,
/// newlines included).
pub fn one_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("");
    let mut out: String = first
        .chars()
        .filter(|c| !c.is_control())
        .take(160)
        .collect();
    if first.chars().count() > 160 || s.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_accepts_only_sha256_hex() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok), Some("a".repeat(64).as_str()));
        assert_eq!(digest_hex("sha256:../../etc"), None);
        assert_eq!(digest_hex(&format!("sha512:{}", "a".repeat(64))), None);
        assert_eq!(digest_hex(&format!("sha256:{}", "A".repeat(64))), None);
    }
}
