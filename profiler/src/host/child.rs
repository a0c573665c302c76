//! A child process of cowprof's own executable that answers one JSON line per request (the lab's
//! worker, `image forecast --verify`'s replay): in its own process group, so a terminal's Ctrl-C
//! reaches only cowprof, which then stops it; killed on drop.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde::{de::DeserializeOwned, Serialize};

/// Why a child could not be started or did not answer; the text says which.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot find cowprof's own executable: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot start {what} {exe}: {source}")]
    Spawn {
        what: &'static str,
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Dead { what: &'static str, detail: String },
}

pub struct JsonChild {
    what: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl JsonChild {
    /// Starts `cowprof ARGS…`; `what` names it in errors ("the lab worker").
    pub fn spawn(
        what: &'static str,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Result<Self, ChildError> {
        use std::os::unix::process::CommandExt as _;
        let exe = std::env::current_exe().map_err(ChildError::Exe)?;
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|source| ChildError::Spawn {
                what,
                exe: exe.display().to_string(),
                source,
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self {
            what,
            child,
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one request line and reads the reply line.
    pub fn call<Q: Serialize, R: DeserializeOwned>(&mut self, req: &Q) -> Result<R, ChildError> {
        let dead = |detail: String| ChildError::Dead {
            what: self.what,
            detail,
        };
        let mut line = serde_json::to_string(req).expect("request serializes");
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| dead(e.to_string()))?;
        let mut reply = String::new();
        match self.stdout.read_line(&mut reply) {
            Ok(0) => Err(dead("it exited".into())),
            Ok(_) => {
                serde_json::from_str(&reply).map_err(|e| dead(format!("bad reply {reply:?}: {e}")))
            }
            Err(e) => Err(dead(e.to_string())),
        }
    }
}

impl Drop for JsonChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
