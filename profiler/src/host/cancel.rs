//! Cancellation by signal: SIGINT, SIGTERM and SIGHUP set a flag that long work checks between
//! steps, so every guard (mounts, loop devices, temp dirs) gets to undo its work.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

/// A signal arrived; what was made so far has been (or will be, on drop) removed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Set by SIGINT, SIGTERM and SIGHUP; checked between steps, so every guard gets to run.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Registers the handlers (alongside any others, e.g. tokio's).
    pub fn install() -> std::io::Result<Self> {
        let c = Self::default();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            signal_hook::flag::register(sig, Arc::clone(&c.0))?;
        }
        Ok(c)
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// `Err(Interrupted)` once a signal has arrived: `cancel.check()?` between steps.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_set() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }
}
