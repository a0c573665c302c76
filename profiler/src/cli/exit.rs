//! The one table of exit codes. README.md's "Exit codes" table is checked against it by a test.

use std::process::ExitCode;

use cowprof::{
    compare::CompareError,
    image::ImageError,
    lab::stack::LabError,
    pipeline::{
        enrich::container::ContainerError, metrics::MetricsError, probe::ProbeError,
        record::RecordError,
    },
    scenario::selftest::SelftestError,
};

/// How `cowprof` ends. The numbers never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (also a closed stdout, e.g. `| head`).
    Ok = 0,
    /// The command ran and failed: an event check, a regression (`compare`), an I/O error.
    Failure = 1,
    /// Bad input: a flag, a file, a name, a spec; nothing was attached or mounted.
    Usage = 2,
    /// Not permitted: needs root or capabilities.
    NotRoot = 3,
    /// No backend can attach on this kernel (`doctor` says why).
    NoBackend = 4,
    /// `record`: the overlay module was unloaded under the probes; restart after `modprobe overlay`.
    OverlayUnloaded = 5,
    /// The backend attached but its start-up check (canary) did not see a data copy-up, a
    /// directory copy-up and a whiteout on a private overlay: it is blind on this kernel.
    CanaryBlind = 6,
    /// Interrupted (Ctrl-C, SIGTERM); everything made so far was removed.
    Interrupted = 130,
}

impl Exit {
    /// Every code, in order.
    pub const ALL: [Self; 8] = [
        Self::Ok,
        Self::Failure,
        Self::Usage,
        Self::NotRoot,
        Self::NoBackend,
        Self::OverlayUnloaded,
        Self::CanaryBlind,
        Self::Interrupted,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

// Each library error's exit code, here and nowhere else.

impl From<&ProbeError> for Exit {
    fn from(e: &ProbeError) -> Self {
        match e {
            ProbeError::NotRoot | ProbeError::MissingCaps { .. } => Self::NotRoot,
            ProbeError::Btf(_) | ProbeError::Unavailable { .. } | ProbeError::NoBackend { .. } => {
                Self::NoBackend
            }
            ProbeError::Load { .. } | ProbeError::Program { .. } | ProbeError::Map { .. } => {
                Self::Failure
            }
            ProbeError::CanaryBlind { .. } => Self::CanaryBlind,
        }
    }
}

impl From<&MetricsError> for Exit {
    /// Every metrics error is a bad `--metrics-*` flag.
    fn from(_: &MetricsError) -> Self {
        Self::Usage
    }
}

impl From<&RecordError> for Exit {
    fn from(e: &RecordError) -> Self {
        match e {
            RecordError::Probe(e) => e.into(),
            RecordError::Container(ContainerError::Docker(_))
            | RecordError::Mountinfo(_)
            | RecordError::Io { .. } => Self::Failure,
            RecordError::NotOverlay { .. }
            | RecordError::Spawn { .. }
            | RecordError::Container(_) => Self::Usage,
        }
    }
}

impl From<&SelftestError> for Exit {
    fn from(e: &SelftestError) -> Self {
        match e {
            SelftestError::Record(e) => e.into(),
            SelftestError::Interrupted => Self::Interrupted,
            _ => Self::Failure,
        }
    }
}

impl From<&CompareError> for Exit {
    /// Unreadable results, gates or report directory: bad input. (A regression is not an
    /// error: it is a comparison that did not pass.)
    fn from(_: &CompareError) -> Self {
        Self::Usage
    }
}

impl From<&LabError> for Exit {
    fn from(e: &LabError) -> Self {
        match e {
            LabError::Spec(_) | LabError::SpecFile { .. } => Self::Usage,
            LabError::NotRoot => Self::NotRoot,
            LabError::Interrupted => Self::Interrupted,
            _ => Self::Failure,
        }
    }
}

impl From<&ImageError> for Exit {
    fn from(e: &ImageError) -> Self {
        match e {
            ImageError::Entry { .. }
            | ImageError::Digest { .. }
            | ImageError::Stream { .. }
            | ImageError::Archive { .. }
            | ImageError::NotFound { .. }
            | ImageError::Trace { .. } => Self::Usage,
            ImageError::NotRoot { .. } => Self::NotRoot,
            ImageError::Interrupted => Self::Interrupted,
            ImageError::Io(_)
            | ImageError::Signals(_)
            | ImageError::Calibration(_)
            | ImageError::Mount(_)
            | ImageError::OptionsTooLong { .. } => Self::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    /// Every code is in README.md's exit-code table and the table has no other code.
    #[test]
    fn readme_table_matches() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let codes: Vec<u8> = readme
            .lines()
            .skip_while(|l| !l.starts_with("## Exit codes"))
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| {
                l.strip_prefix("| ")?
                    .split(" |")
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect();
        let ours: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes, ours,
            "README.md's exit-code table and cli/exit.rs disagree"
        );
    }

    #[test]
    fn lab_errors() {
        use cowprof::lab::stack::LabError;
        assert_eq!(Exit::from(&LabError::Interrupted), Exit::Interrupted);
        assert_eq!(Exit::from(&LabError::NotRoot), Exit::NotRoot);
        // A calibration's lab run keeps its codes through the image error.
        for (lab, exit) in [
            (LabError::Interrupted, Exit::Interrupted),
            (LabError::NotRoot, Exit::NotRoot),
            (LabError::Other("x".into()), Exit::Failure),
        ] {
            assert_eq!(
                Exit::from(&super::super::image::calibration_error(lab)),
                exit
            );
        }
    }
}
