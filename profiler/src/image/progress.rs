//! Progress of long image work on a terminal: `image import` (layer n of m, compressed bytes read),
//! `image compare` (image n of m) and `bench --image` (files measured). Drawn with indicatif on
//! stderr only when stderr is a terminal; hidden (nothing printed) when it is a pipe or a file, as
//! the lab's bar.

use std::io::{IsTerminal as _, Read};

use indicatif::{ProgressBar, ProgressStyle};

use crate::fmt::short_digest;

/// One step of an import, reported to the caller's callback by [`super::store::Store::import`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStep<'a> {
    /// Unpacking of a layer starts: `index` (from 1) of `count`, its blob's size as stored.
    Layer {
        index: usize,
        count: usize,
        diff_id: &'a str,
        blob_bytes: u64,
    },
    /// This many more bytes of the current layer's blob were read.
    Read(u64),
}

/// A bar on stderr, hidden unless stderr is a terminal.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// The import bar: one per layer being unpacked, in bytes of its blob.
pub struct ImportBar {
    bar: ProgressBar,
}

impl Default for ImportBar {
    fn default() -> Self {
        Self::new()
    }
}

impl ImportBar {
    pub fn new() -> Self {
        Self {
            bar: bar(
                0,
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
            ),
        }
    }

    /// Feeds one step (the callback of [`super::store::Store::import`]).
    pub fn step(&self, step: ImportStep<'_>) {
        match step {
            ImportStep::Layer {
                index,
                count,
                diff_id,
                blob_bytes,
            } => {
                self.bar.set_length(blob_bytes);
                self.bar.set_position(0);
                self.bar
                    .set_message(format!("layer {index}/{count} {}", short_digest(diff_id)));
            }
            ImportStep::Read(n) => self.bar.inc(n),
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for ImportBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A reader that reports every read's size.
pub(super) struct Counting<'p, R> {
    pub inner: R,
    pub report: &'p mut dyn FnMut(ImportStep<'_>),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            (self.report)(ImportStep::Read(n as u64));
        }
        Ok(n)
    }
}
