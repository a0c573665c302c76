//! Shell completions and man pages, generated from the clap definitions of [`super::Cli`].
//!
//! They live in the binary crate because the clap types do; `cargo xtask assets` runs the hidden
//! `cowprof __assets DIR` to regenerate `deploy/completions/` and `deploy/man/`, and the unit test
//! below fails when the checked-in copies are stale.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

/// The shells we ship completions for, and the file name each expects.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "cowprof.bash"),
    (Shell::Zsh, "_cowprof"),
    (Shell::Fish, "cowprof.fish"),
];

/// Every generated file as (path relative to the output directory, contents).
pub fn render() -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for (shell, name) in SHELLS {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut visible(), "cowprof", &mut buf);
        files.push((Path::new("completions").join(name), buf));
    }
    // As `clap_mangen::generate_to`, in memory: built once so subcommands carry their display
    // names (`cowprof-image-import`), hidden ones (`__workload`) and `help` left out.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(cmd, &mut files)?;
    Ok(files)
}

/// The command line without its hidden subcommands (`__workload` and the like), which
/// `clap_complete` would otherwise offer.
fn visible() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("cowprof")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true);
    for a in full.get_arguments() {
        cmd = cmd.arg(a.clone());
    }
    for s in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(s.clone());
    }
    cmd
}

/// `cowprof.1`, then `cowprof-SUB.1` for every visible subcommand, recursively.
fn man_pages(cmd: clap::Command, files: &mut Vec<(PathBuf, Vec<u8>)>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        man_pages(sub, files)?;
    }
    let man = clap_mangen::Man::new(cmd);
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    files.push((Path::new("man").join(man.get_filename()), buf));
    Ok(())
}

/// Writes every file under `dir` (the hidden `__assets DIR` command).
pub fn write(dir: &Path) -> io::Result<usize> {
    let files = render()?;
    for sub in ["completions", "man"] {
        let d = dir.join(sub);
        // Stale pages of removed subcommands go with the old directory.
        if d.exists() {
            fs::remove_dir_all(&d)?;
        }
        fs::create_dir_all(&d)?;
    }
    for (rel, body) in &files {
        fs::write(dir.join(rel), body)?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/completions` and `deploy/man` match the clap definitions; after changing a flag,
    /// run `cargo xtask assets` and commit the result.
    #[test]
    fn checked_in_assets_are_current() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let files = render().unwrap();
        let mut stale = Vec::new();
        for (rel, body) in &files {
            if fs::read(deploy.join(rel)).ok().as_deref() != Some(body.as_slice()) {
                stale.push(rel.display().to_string());
            }
        }
        for sub in ["completions", "man"] {
            for e in fs::read_dir(deploy.join(sub)).unwrap() {
                let rel = Path::new(sub).join(e.unwrap().file_name());
                if !files.iter().any(|(r, _)| *r == rel) {
                    stale.push(format!("{} (no longer generated)", rel.display()));
                }
            }
        }
        assert!(
            stale.is_empty(),
            "stale generated files, run `cargo xtask assets`: {stale:?}"
        );
    }

    #[test]
    fn every_visible_command_has_a_man_page() {
        let files = render().unwrap();
        for sub in ["record", "bench", "image", "image-import", "compare"] {
            let p = PathBuf::from(format!("man/cowprof-{sub}.1"));
            assert!(files.iter().any(|(r, _)| *r == p), "no {}", p.display());
        }
        assert!(!files
            .iter()
            .any(|(r, _)| r.to_string_lossy().contains("__")));
    }
}
