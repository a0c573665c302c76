//! `cowprof top`: a live view of copy-on-write activity, the busiest containers, mounts, source
//! layers and files per interval. The same probes and pipeline as `record` (it is an
//! [`Exporter`] of `record` with a tick); drawn with ratatui on a terminal, or as one plain table
//! per interval for pipes (`--plain`, the default when stdout is not a terminal).

use std::{
    collections::BTreeMap,
    io::{self, IsTerminal as _, Write},
    time::{Duration, Instant},
};

use cowprof::{
    event::Event,
    fmt::{self, fit, text_width, Layout},
    pipeline::{
        aggregate::{container_key, layer_key, mount_key, Drops, Group, Summary},
        record,
        report::{Exporter, RunInfo},
    },
};
use ratatui::{
    crossterm::{
        event::{self as term_event, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Direction},
    style::{Modifier, Style},
    widgets::{Block, Borders, Paragraph, Row, Table},
    DefaultTerminal, Terminal,
};

use super::Exit;

/// How often the live view looks at the keyboard.
const KEY_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Total copy-up/whiteout time in the interval.
    Time,
    /// Events in the interval.
    Count,
    /// Bytes copied up in the interval.
    Bytes,
}

#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub filters: super::record::FilterArgs,
    /// Refresh interval (e.g. 1s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "1s")]
    pub interval: Duration,
    /// Stop after this many intervals.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// One plain table per interval, for pipes (the default when stdout is not a terminal).
    #[arg(long)]
    pub plain: bool,
    /// Sort rows by (keys t, c, b switch it in the live view).
    #[arg(long, value_enum, default_value = "time")]
    pub sort: SortKey,
    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rows: usize,
}

/// The four tables of the view.
const TITLES: [&str; 4] = ["container", "mount", "source layer", "file"];

fn keys(ev: &Event) -> [String; 4] {
    let mount = mount_key(ev);
    let file = format!("{}/{}", mount.trim_end_matches('/'), ev.path);
    [container_key(ev), mount, layer_key(ev), file]
}

/// One row: this interval's group, its total time, and the count since the start.
#[derive(Default)]
struct Entry {
    interval: Group,
    time_ns: u64,
    total: u64,
}

/// What the view shows, rolled over every interval.
pub struct Model {
    tables: [BTreeMap<String, Entry>; 4],
    interval_events: u64,
    total_events: u64,
    /// Completed intervals.
    pub intervals: u64,
    pub drops: Drops,
    pub backend: String,
    pub kernel: String,
    pub sort: SortKey,
    pub interval: Duration,
}

/// One printed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowView {
    pub key: String,
    pub count: u64,
    pub rate: String,
    pub bytes: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub time_ns: u64,
    pub total: u64,
}

impl Model {
    pub fn new(sort: SortKey, interval: Duration) -> Self {
        Self {
            tables: Default::default(),
            interval_events: 0,
            total_events: 0,
            intervals: 0,
            drops: Drops::default(),
            backend: String::new(),
            kernel: String::new(),
            sort,
            interval,
        }
    }

    pub fn record(&mut self, ev: &Event) {
        self.interval_events += 1;
        self.total_events += 1;
        for (t, k) in self.tables.iter_mut().zip(keys(ev)) {
            let e = t.entry(k).or_default();
            e.interval.record(ev);
            e.time_ns += ev.latency_ns;
            e.total += 1;
        }
    }

    /// Rows of table `i`, busiest first by the sort key, then by the total, then by name.
    pub fn rows(&self, i: usize, max: usize) -> Vec<RowView> {
        let secs = self.interval.as_secs_f64().max(1e-9);
        let mut rows: Vec<RowView> = self.tables[i]
            .iter()
            .map(|(k, e)| {
                let st = e.interval.stats();
                #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
                let rate = st.count as f64 / secs;
                RowView {
                    key: k.clone(),
                    count: st.count,
                    rate: format!("{rate:.1}"),
                    bytes: st.bytes_copied,
                    p50_ns: if st.count > 0 { st.p50_ns } else { 0 },
                    p99_ns: if st.count > 0 { st.p99_ns } else { 0 },
                    time_ns: e.time_ns,
                    total: e.total,
                }
            })
            .collect();
        let sort = self.sort;
        rows.sort_by(|a, b| {
            let key = |r: &RowView| match sort {
                SortKey::Time => r.time_ns,
                SortKey::Count => r.count,
                SortKey::Bytes => r.bytes,
            };
            key(b)
                .cmp(&key(a))
                .then(b.total.cmp(&a.total))
                .then(a.key.cmp(&b.key))
        });
        rows.truncate(max);
        rows
    }

    /// The header line: interval number, events in it and since start, drops, backend.
    pub fn header(&self) -> String {
        format!(
            "cowprof top: interval {} ({}): {} events, {} since start, {} dropped; backend {} on {}; sort by {}",
            self.intervals,
            humantime::format_duration(self.interval),
            self.interval_events,
            self.total_events,
            self.drops.total(),
            self.backend,
            self.kernel,
            match self.sort {
                SortKey::Time => "time",
                SortKey::Count => "count",
                SortKey::Bytes => "bytes",
            }
        )
    }

    /// Starts a new interval: this one's groups are cleared, totals kept.
    fn roll(&mut self) {
        self.interval_events = 0;
        for t in &mut self.tables {
            for e in t.values_mut() {
                e.interval = Group::default();
                e.time_ns = 0;
            }
        }
    }

    /// The plain tables of the interval that just ended.
    pub fn write_plain(&self, out: &mut dyn Write, layout: &Layout, max: usize) -> io::Result<()> {
        writeln!(out, "{}", self.header())?;
        for (i, title) in TITLES.iter().enumerate() {
            let rows = self.rows(i, max);
            let head = title.to_uppercase();
            let longest = rows
                .iter()
                .map(|r| text_width(&r.key))
                .chain([text_width(&head)])
                .max()
                .unwrap_or(0);
            // Indent, then COUNT RATE/S BYTES P50 P99 TIME TOTAL after the key, a space before each.
            let w = layout.key_width(longest, 2 + 8 + 9 + 11 + 10 + 10 + 10 + 9, 16);
            writeln!(
                out,
                "  {} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8}",
                fit(&head, w),
                "COUNT",
                "RATE/S",
                "BYTES",
                "P50",
                "P99",
                "TIME",
                "TOTAL"
            )?;
            for r in &rows {
                writeln!(
                    out,
                    "  {} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8}",
                    fit(&r.key, w),
                    r.count,
                    r.rate,
                    fmt::bytes(r.bytes),
                    fmt::ns(r.p50_ns),
                    fmt::ns(r.p99_ns),
                    fmt::ns(r.time_ns),
                    r.total
                )?;
            }
        }
        writeln!(out)
    }
}

/// The terminal in raw mode on the alternate screen; restored on drop, however `top` ends.
struct Screen {
    term: DefaultTerminal,
}

impl Screen {
    fn enter() -> io::Result<Self> {
        enable_raw_mode()?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e);
        }
        match Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout())) {
            Ok(mut term) => {
                let _ = term.hide_cursor();
                let _ = term.clear();
                Ok(Self { term })
            }
            Err(e) => {
                let _ = execute!(io::stdout(), LeaveAlternateScreen);
                let _ = disable_raw_mode();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.term.show_cursor();
        let _ = execute!(io::stdout(), LeaveAlternateScreen);
        let _ = disable_raw_mode();
    }
}

/// `top` as an exporter of `record`: counts events, rolls and shows the intervals on ticks.
struct TopExporter {
    model: Model,
    screen: Option<Screen>,
    layout: Layout,
    rows: usize,
    count: Option<u64>,
    started: Instant,
    quit: bool,
}

impl TopExporter {
    fn draw(&mut self) -> io::Result<()> {
        let Some(screen) = &mut self.screen else {
            return Ok(());
        };
        let model = &self.model;
        let rows = self.rows;
        screen.term.draw(|f| {
            let area = f.area();
            let parts = ratatui::layout::Layout::default()
                .direction(Direction::Vertical)
                .constraints([
                    Constraint::Length(2),
                    Constraint::Fill(1),
                    Constraint::Fill(1),
                    Constraint::Fill(1),
                    Constraint::Fill(1),
                ])
                .split(area);
            f.render_widget(
                Paragraph::new(format!(
                    "{}\nkeys: t/c/b sort by time/count/bytes, q or Ctrl-C quit",
                    model.header()
                )),
                parts[0],
            );
            for (i, title) in TITLES.iter().enumerate() {
                let data = model.rows(i, rows);
                let header = Row::new([
                    title.to_uppercase(),
                    "COUNT".into(),
                    "RATE/S".into(),
                    "BYTES".into(),
                    "P50".into(),
                    "P99".into(),
                    "TIME".into(),
                    "TOTAL".into(),
                ])
                .style(Style::default().add_modifier(Modifier::BOLD));
                let key_w = usize::from(area.width).saturating_sub(8 * 10).max(16);
                let body = data.iter().map(|r| {
                    Row::new([
                        fmt::shorten_middle(&r.key, key_w),
                        r.count.to_string(),
                        r.rate.clone(),
                        fmt::bytes(r.bytes),
                        fmt::ns(r.p50_ns),
                        fmt::ns(r.p99_ns),
                        fmt::ns(r.time_ns),
                        r.total.to_string(),
                    ])
                });
                let widths = [
                    Constraint::Fill(1),
                    Constraint::Length(7),
                    Constraint::Length(8),
                    Constraint::Length(10),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(8),
                ];
                f.render_widget(
                    Table::new(body, widths).header(header).block(
                        Block::default()
                            .borders(Borders::TOP)
                            .title(format!(" by {title} ")),
                    ),
                    parts[i + 1],
                );
            }
        })?;
        Ok(())
    }

    /// Keys pressed since the last look: sort switches and quitting.
    fn keys(&mut self) -> io::Result<bool> {
        let mut changed = false;
        while term_event::poll(Duration::ZERO)? {
            if let TermEvent::Key(k) = term_event::read()? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        self.quit = true;
                    }
                    KeyCode::Char('t') => self.model.sort = SortKey::Time,
                    KeyCode::Char('c') => self.model.sort = SortKey::Count,
                    KeyCode::Char('b') => self.model.sort = SortKey::Bytes,
                    _ => continue,
                }
                changed = true;
            }
        }
        Ok(changed)
    }
}

impl Exporter for TopExporter {
    fn header(&mut self, _out: &mut dyn Write, info: &RunInfo) -> io::Result<()> {
        self.model.backend = info.backend.to_string();
        self.model.kernel.clone_from(&info.kernel);
        self.started = Instant::now();
        self.draw()
    }

    fn event(&mut self, _out: &mut dyn Write, ev: &Event) -> io::Result<()> {
        self.model.record(ev);
        Ok(())
    }

    fn summary(&mut self, _out: &mut dyn Write, _s: &Summary) -> io::Result<()> {
        // Leaves the alternate screen and raw mode before `record` returns.
        self.screen = None;
        Ok(())
    }

    fn tick(&mut self, out: &mut dyn Write, drops: &Drops) -> io::Result<bool> {
        self.model.drops = *drops;
        let mut redraw = self.screen.is_some() && self.keys()?;
        if self.quit {
            return Ok(false);
        }
        let due = self.started
            + self.model.interval * u32::try_from(self.model.intervals + 1).unwrap_or(u32::MAX);
        if Instant::now() >= due {
            self.model.intervals += 1;
            if self.screen.is_some() {
                self.draw()?;
                redraw = false;
            } else {
                self.model.write_plain(out, &self.layout, self.rows)?;
                out.flush()?;
            }
            self.model.roll();
            if self.count.is_some_and(|n| self.model.intervals >= n) {
                return Ok(false);
            }
        }
        if redraw {
            self.draw()?;
        }
        Ok(true)
    }
}

pub async fn run(args: TopArgs, out: &mut dyn Write) -> Exit {
    if args.interval < Duration::from_millis(100) {
        eprintln!(
            "cowprof top: --interval {:?} is too short; give at least 100ms",
            args.interval
        );
        return Exit::Usage;
    }
    let plain = args.plain || !io::stdout().is_terminal();
    let mut opts = match args.filters.record_options() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("cowprof top: {msg}");
            return Exit::Usage;
        }
    };
    opts.tick = Some(if plain {
        args.interval.min(KEY_POLL * 5)
    } else {
        KEY_POLL
    });
    let screen = if plain {
        None
    } else {
        match Screen::enter() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("cowprof top: cannot use the terminal ({e}); use --plain");
                return Exit::Failure;
            }
        }
    };
    let mut exp = TopExporter {
        model: Model::new(args.sort, args.interval),
        screen,
        layout: Layout::stdout(),
        rows: args.rows,
        count: args.count,
        started: Instant::now(),
        quit: false,
    };
    let r = record::record(&opts, &mut exp, out).await;
    // The terminal is back before any message.
    exp.screen = None;
    match r {
        Ok(o) if o.overlay_unloaded => {
            eprintln!("cowprof top: {}", record::OVERLAY_UNLOADED);
            Exit::OverlayUnloaded
        }
        Ok(_) => Exit::Ok,
        Err(e) => {
            eprintln!("cowprof top: {e}");
            Exit::from(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(path: &str, latency_ns: u64, bytes: u64) -> Event {
        serde_json::from_value(serde_json::json!({
            "kind": "data_copy_up", "backend": "tracepoint", "time_ns": 0, "latency_ns": latency_ns,
            "latency_partial": false, "errno": 0, "pid": 1, "tid": 1, "comm": "sh",
            "cgroup_id": 0, "mnt_ns": 0, "dev": "0:39", "mount_point": "/m", "path": path,
            "path_truncated": false, "size_bytes": bytes, "bytes_copied": bytes, "lower_layer": 1,
            "lower_layer_dir": "/l", "syscall": null, "syscall_latency_ns": null,
            "syscall_ret": null, "container_id": null,
        }))
        .unwrap()
    }

    #[test]
    fn rows_sort_by_the_chosen_key_and_totals_survive_a_roll() {
        let mut m = Model::new(SortKey::Time, Duration::from_secs(2));
        m.record(&ev("a", 1_000, 10));
        m.record(&ev("a", 1_000, 10));
        m.record(&ev("b", 50_000, 1));
        m.record(&ev("c", 10, 4096));
        let files = |m: &Model| {
            m.rows(3, 10)
                .iter()
                .map(|r| r.key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(files(&m), ["/m/b", "/m/a", "/m/c"]);
        m.sort = SortKey::Count;
        assert_eq!(files(&m), ["/m/a", "/m/b", "/m/c"]);
        m.sort = SortKey::Bytes;
        assert_eq!(files(&m), ["/m/c", "/m/a", "/m/b"]);
        let a = &m.rows(3, 10)[1];
        assert_eq!((a.count, a.rate.as_str(), a.total), (2, "1.0", 2));
        m.roll();
        let rows = m.rows(3, 10);
        assert!(rows.iter().all(|r| r.count == 0), "{rows:?}");
        // Totals order the rows of a quiet interval.
        assert_eq!(files(&m), ["/m/a", "/m/b", "/m/c"]);
        assert_eq!(m.rows(1, 10)[0].total, 4);
    }

    #[test]
    fn plain_table_is_aligned() {
        let mut m = Model::new(SortKey::Count, Duration::from_secs(1));
        m.backend = "tracepoint".into();
        m.kernel = "6.18".into();
        m.intervals = 1;
        m.record(&ev(
            "a-very-long-file-name-that-goes-on-and-on/and/on/and/on.txt",
            1_000,
            10,
        ));
        m.record(&ev("b", 1_000, 10));
        let mut out = Vec::new();
        m.write_plain(
            &mut out,
            &Layout {
                width: Some(90),
                color: false,
            },
            10,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "cowprof top: interval 1 (1s): 2 events, 2 since start, 0 dropped; backend tracepoint on 6.18; sort by count\n"
        ));
        let file_rows: Vec<&str> = text
            .split("  FILE")
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(file_rows.len(), 2);
        assert_eq!(file_rows[0].chars().count(), file_rows[1].chars().count());
        assert!(file_rows.iter().all(|l| l.chars().count() == 90), "{text}");
        assert!(file_rows[0].contains('…'), "{text}");
    }
}
