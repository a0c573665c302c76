//! Terminal layout shared by every table cowprof prints: the width to fit (`COLUMNS`, else the
//! terminal's own), whether to colour (a terminal and no `NO_COLOR`), and shortening a long key in
//! the middle so the columns after it stay put. Machine outputs (JSON) always carry the full text.

use std::io::IsTerminal as _;

use anstyle::Style;

/// How a table is laid out: the width to fit in (`None`: no limit, e.g. a pipe) and colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: Option<usize>,
    pub color: bool,
}

impl Layout {
    /// For stdout: `COLUMNS` if set to a number, else the terminal's width if stdout is one,
    /// else unlimited; colours only on a terminal and when `NO_COLOR` is unset or empty.
    pub fn stdout() -> Self {
        let tty = std::io::stdout().is_terminal();
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|&c| c > 0)
            .or_else(|| {
                tty.then(|| rustix::termios::tcgetwinsize(std::io::stdout()).ok())
                    .flatten()
                    .map(|w| usize::from(w.ws_col))
                    .filter(|&c| c > 0)
            });
        Self {
            width,
            color: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// No width limit, no colours (files, tests).
    pub const PLAIN: Self = Self {
        width: None,
        color: false,
    };

    /// `text` in `style` when colours are on.
    pub fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    /// The width of a first (key) column that holds `longest` characters and is followed by
    /// `rest` characters of other columns: the whole key if it fits, else what is left, never
    /// below `min`.
    pub fn key_width(&self, longest: usize, rest: usize, min: usize) -> usize {
        match self.width {
            Some(w) => longest.min(w.saturating_sub(rest).max(min)),
            None => longest,
        }
    }
}

/// Characters a string takes on the terminal (one per `char`: keys are paths, names, digests).
pub fn text_width(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to at most `max` characters by replacing its middle with `…`: both ends of a path
/// (the mount's root and the layer's own directory) stay readable.
pub fn shorten_middle(s: &str, max: usize) -> String {
    let n = text_width(s);
    if n <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let keep = max - 1;
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

/// `s` padded with spaces (or shortened in the middle) to exactly `w` characters.
pub fn fit(s: &str, w: usize) -> String {
    let s = shorten_middle(s, w);
    let pad = w - text_width(&s);
    format!("{s}{}", " ".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortens_in_the_middle() {
        assert_eq!(shorten_middle("/var/lib/docker", 40), "/var/lib/docker");
        assert_eq!(shorten_middle("abcdefghij", 5), "ab…ij");
        assert_eq!(text_width(&shorten_middle("abcdefghij", 6)), 6);
        assert_eq!(shorten_middle("abcdefghij", 6), "ab…hij");
        assert_eq!(fit("ab", 4), "ab  ");
        assert_eq!(fit("abcdef", 4), "a…ef");
    }

    #[test]
    fn key_width_fits_the_terminal() {
        let l = Layout {
            width: Some(80),
            color: false,
        };
        assert_eq!(l.key_width(10, 60, 16), 10);
        assert_eq!(l.key_width(100, 60, 16), 20);
        assert_eq!(l.key_width(100, 75, 16), 16);
        assert_eq!(Layout::PLAIN.key_width(100, 60, 16), 100);
    }
}
