//! The one table of exit codes. README.md's "Exit codes" table is checked against it by a test.

use std::process::ExitCode;

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

    /// The code a library error or tool reported as a number; an unknown one is a failure.
    pub fn from_code(code: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|e| e.code() == code)
            .unwrap_or(Self::Failure)
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
    fn unknown_codes_are_failures() {
        assert_eq!(Exit::from_code(130), Exit::Interrupted);
        assert_eq!(Exit::from_code(77), Exit::Failure);
    }
}
