//! An I/O error with what was being done and on which path: the one shape the tools' own
//! errors (`LabError::Io`, `ImageError::Io`) wrap.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct PathIoError {
    pub what: String,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// For `map_err`: the error of doing `what` on `path`.
pub fn io_err(
    what: impl Into<String>,
    path: impl AsRef<Path>,
) -> impl FnOnce(std::io::Error) -> PathIoError {
    let what = what.into();
    let path = path.as_ref().to_owned();
    move |source| PathIoError { what, path, source }
}
