//! Where an image's blobs come from: a tar archive (`docker save`, an OCI layout in tar form) or
//! a directory (an OCI layout). Names are looked up in the archive's own index or resolved
//! beneath the directory fd, so a manifest that points at `../../etc/shadow` finds nothing.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek as _, SeekFrom},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::{io_err, ImageError};

/// Manifests and configs are small; a bigger one is an attack or a mistake.
pub const MAX_METADATA_BYTES: u64 = 16 << 20;
/// Archive entries (the outer tar, not the layers).
const MAX_ARCHIVE_ENTRIES: usize = 100_000;

pub enum Item {
    File { offset: u64, size: u64 },
    Symlink(String),
}

pub enum Source {
    Dir {
        path: PathBuf,
        fd: OwnedFd,
    },
    Tar {
        path: PathBuf,
        items: HashMap<String, Item>,
    },
}

/// `./a//b/` → `a/b`; `..`, absolute names and NULs are refused (None).
pub fn clean_name(name: &str) -> Option<String> {
    if name.starts_with('/') || name.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Joins a symlink's target onto its directory lexically; None if it climbs out of the archive.
fn resolve_link(from: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Source {
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let meta = std::fs::metadata(path).map_err(io_err("reading", path))?;
        if meta.is_dir() {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("opening", path)(e.into()))?;
            return Ok(Self::Dir {
                path: path.to_owned(),
                fd,
            });
        }
        let bad = |reason: String| ImageError::Archive {
            archive: path.display().to_string(),
            reason,
        };
        let file = File::open(path).map_err(io_err("opening", path))?;
        let mut ar = tar::Archive::new(file);
        let mut items = HashMap::new();
        let entries = ar.entries_with_seek().map_err(|e| {
            bad(format!(
                "not a tar archive or OCI layout directory ({}); give a `docker save` archive",
                super::one_line(&e)
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("not a readable tar archive ({}); give a `docker save` archive or an OCI layout", super::one_line(&e))))?;
            if items.len() >= MAX_ARCHIVE_ENTRIES {
                return Err(bad(format!(
                    "more than {MAX_ARCHIVE_ENTRIES} entries; not an image archive"
                )));
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = clean_name(&raw) else {
                if raw.trim_start_matches("./").is_empty() || raw == "." {
                    continue;
                }
                return Err(bad(format!(
                    "entry {raw:?} has an absolute or `..` name; refused"
                )));
            };
            let item = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Item::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                tar::EntryType::Symlink => Item::Symlink(
                    entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                ),
                _ => continue,
            };
            if items.insert(name.clone(), item).is_some() {
                return Err(bad(format!("entry {name:?} appears twice; refused")));
            }
        }
        Ok(Self::Tar {
            path: path.to_owned(),
            items,
        })
    }

    pub fn display(&self) -> String {
        match self {
            Self::Dir { path, .. } | Self::Tar { path, .. } => path.display().to_string(),
        }
    }

    fn not_found(&self, name: &str, why: &str) -> ImageError {
        ImageError::Archive {
            archive: self.display(),
            reason: format!("{name:?} {why}"),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        self.open_blob(name).is_ok()
    }

    /// Opens a named blob for reading, with its size.
    pub fn open_blob(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let Some(clean) = clean_name(name) else {
            return Err(self.not_found(name, "points outside the archive; refused"));
        };
        match self {
            Self::Dir { path, fd } => {
                let f = rustix::fs::openat2(
                    fd,
                    clean.as_str(),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|e| match e {
                    rustix::io::Errno::XDEV | rustix::io::Errno::NOENT => {
                        self.not_found(name, "is not in the layout (or resolves outside it)")
                    }
                    e => io_err("opening", path.join(&clean))(e.into()).into(),
                })?;
                let f = File::from(f);
                let size = f
                    .metadata()
                    .map_err(io_err("reading", path.join(&clean)))?
                    .len();
                Ok((Box::new(f), size))
            }
            Self::Tar { path, items } => {
                let mut cur = clean;
                for _ in 0..8 {
                    match items.get(&cur) {
                        Some(Item::File { offset, size }) => {
                            let mut f = File::open(path).map_err(io_err("opening", path))?;
                            f.seek(SeekFrom::Start(*offset))
                                .map_err(io_err("reading", path))?;
                            return Ok((Box::new(f.take(*size)), *size));
                        }
                        Some(Item::Symlink(t)) => {
                            cur = resolve_link(&cur, t).ok_or_else(|| {
                                self.not_found(
                                    name,
                                    "is a symlink pointing outside the archive; refused",
                                )
                            })?;
                        }
                        None => return Err(self.not_found(name, "is not in the archive")),
                    }
                }
                Err(self.not_found(name, "is a symlink loop"))
            }
        }
    }

    /// Reads a small metadata blob (manifest, index, config) whole.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (r, size) = self.open_blob(name)?;
        if size > MAX_METADATA_BYTES {
            return Err(self.not_found(
                name,
                &format!("is {size} bytes, over the {MAX_METADATA_BYTES}-byte limit for metadata"),
            ));
        }
        let mut buf = Vec::new();
        r.take(MAX_METADATA_BYTES)
            .read_to_end(&mut buf)
            .map_err(io_err(format!("reading {name} from"), self.display()))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_escapes_refused() {
        assert_eq!(clean_name("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(clean_name("../x"), None);
        assert_eq!(clean_name("a/../../x"), None);
        assert_eq!(clean_name("/etc/passwd"), None);
        assert_eq!(clean_name("./"), None);
    }

    #[test]
    fn docker_layer_symlinks_resolve_inside_only() {
        assert_eq!(
            resolve_link("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(resolve_link("abc/layer.tar", "../../etc/passwd"), None);
        assert_eq!(resolve_link("abc/layer.tar", "/etc/passwd"), None);
    }
}
