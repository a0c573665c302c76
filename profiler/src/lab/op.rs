//! The lab's operations: what each one does to a lower file and which copy-up it makes.

use std::{fmt, str::FromStr};

use serde::Deserialize;

/// One measured operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `open(O_WRONLY|O_APPEND)` + write 1 byte + close of a lower file: data copy-up.
    FirstWrite,
    /// `open(O_WRONLY|O_TRUNC)` + close of a lower file.
    OpenTrunc,
    /// truncate(2) of a lower file to half its size.
    Truncate,
    /// chmod(2) of a lower file: metadata copy-up (data too unless metacopy=on).
    Chmod,
    /// Control: the same append to a file already copied up.
    Rewrite,
    /// open + read everything + close of a lower file (no copy-up).
    ReadLower,
    /// Control: the same read of a file already copied up.
    ReadUpper,
    /// Control: `open(O_CREAT|O_EXCL)` + close of a new empty file (no copy-up).
    Create,
    /// unlink(2) of a lower file: a whiteout.
    Unlink,
    /// rmdir(2) of an empty lower directory, then mkdir(2) of it again: a whiteout, then an
    /// opaque directory in its place.
    RmdirRecreate,
    /// chmod(2) of an empty lower directory to its own mode: a directory copy-up.
    ChmodDir,
    /// rename(2) of a lower file in its directory: a copy-up (metacopy with `metacopy=on`, with
    /// a redirect) and a whiteout at the old name.
    RenameFile,
    /// rename(2) of a lower directory (holding one file) in its directory: with `redirect_dir` on,
    /// a directory copy-up with a redirect and a whiteout at the old name; otherwise EXDEV
    /// (recorded as the cell's outcome; nothing changes).
    RenameDir,
    /// link(2) of a lower file to a new name: a copy-up, then a second name for it.
    Link,
    /// N threads append one byte to N distinct lower files at once: N copy-ups.
    ParallelWrite,
    /// N threads append one byte to the same lower file at once: one copy-up, N appends.
    RaceWrite,
}

/// What one cell of an op is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A lower file of each size in each file layer.
    PerFile,
    /// A lower directory in each file layer (size 0).
    PerDir,
    /// One new file (size 0, depth 0).
    Single,
    /// `[concurrency]` sizes x file layers x thread counts.
    Concurrent,
}

impl Op {
    pub const ALL: [Self; 16] = [
        Self::FirstWrite,
        Self::OpenTrunc,
        Self::Truncate,
        Self::Chmod,
        Self::Rewrite,
        Self::ReadLower,
        Self::ReadUpper,
        Self::Create,
        Self::Unlink,
        Self::RmdirRecreate,
        Self::ChmodDir,
        Self::RenameFile,
        Self::RenameDir,
        Self::Link,
        Self::ParallelWrite,
        Self::RaceWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstWrite => "first_write",
            Self::OpenTrunc => "open_trunc",
            Self::Truncate => "truncate",
            Self::Chmod => "chmod",
            Self::Rewrite => "rewrite",
            Self::ReadLower => "read_lower",
            Self::ReadUpper => "read_upper",
            Self::Create => "create",
            Self::Unlink => "unlink",
            Self::RmdirRecreate => "rmdir_recreate",
            Self::ChmodDir => "chmod_dir",
            Self::RenameFile => "rename_file",
            Self::RenameDir => "rename_dir",
            Self::Link => "link",
            Self::ParallelWrite => "parallel_write",
            Self::RaceWrite => "race_write",
        }
    }

    pub fn shape(self) -> Shape {
        match self {
            Self::Create => Shape::Single,
            Self::RmdirRecreate | Self::ChmodDir | Self::RenameDir => Shape::PerDir,
            Self::ParallelWrite | Self::RaceWrite => Shape::Concurrent,
            _ => Shape::PerFile,
        }
    }

    /// Ops on a lower file of each size in each file layer (the reference copy applies).
    pub fn per_file(self) -> bool {
        self.shape() == Shape::PerFile
    }

    /// The op itself copies up one file or directory per repetition (per thread for
    /// `parallel_write`; `rename_dir` only where it does not fail with EXDEV): the cell's
    /// copy-ups must match exactly.
    pub fn copies_up(self) -> bool {
        matches!(
            self,
            Self::FirstWrite
                | Self::OpenTrunc
                | Self::Truncate
                | Self::Chmod
                | Self::ChmodDir
                | Self::RenameFile
                | Self::RenameDir
                | Self::Link
                | Self::ParallelWrite
                | Self::RaceWrite
        )
    }

    /// The file is copied up (unmeasured) before the measured op.
    pub fn needs_upper_copy(self) -> bool {
        matches!(self, Self::Rewrite | Self::ReadUpper)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown op {s:?}"))
    }
}
