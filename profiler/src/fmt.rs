//! How numbers and ids look to people. Terminal tables use the compact forms ([`ns`], [`bytes`]:
//! `12.3µs`, `4.0KiB`, as hyperfine prints them); charts, HTML and compare reports use the
//! labelled forms ([`ns_label`], [`bytes_label`]: three significant digits and a space,
//! `12.3 µs`, `4 KiB`). Nothing else in the crate formats a duration, a size or a short id.

/// `12.3µs`-style durations, as hyperfine prints them.
pub fn ns(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.2}s", f / 1e9)
    }
}

/// `512B`, `4.0KiB`, `1.5MiB`: compact, for terminal tables.
pub fn bytes(b: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = b as f64;
    if b < 1024 {
        format!("{b}B")
    } else if b < 1 << 20 {
        format!("{:.1}KiB", f / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1}MiB", f / 1_048_576.0)
    } else {
        format!("{:.2}GiB", f / 1_073_741_824.0)
    }
}

/// `v` with `decimals` decimals, trailing zeros (and a bare point) dropped.
pub fn trim_number(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Three significant digits, trailing zeros dropped: 1.5, 12.3, 512.
fn sig3(v: f64) -> String {
    let decimals = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    trim_number(v, decimals)
}

/// For charts and reports: a byte count with binary units: `4 KiB`, `1.5 MiB`, `512 B`.
pub fn bytes_label(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", sig3(v), UNITS[unit])
}

/// For charts and reports: a duration in nanoseconds with the unit that keeps it readable: `850 ns`, `12.3 µs`, `4 ms`.
pub fn ns_label(ns: f64) -> String {
    let (v, unit) = if ns.abs() < 1e3 {
        (ns, "ns")
    } else if ns.abs() < 1e6 {
        (ns / 1e3, "µs")
    } else if ns.abs() < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if v == 0.0 {
        return "0".to_string();
    }
    format!("{} {unit}", sig3(v))
}

/// The 12-character form `docker ps` shows.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// `sha256:0123456789ab…` → `0123456789ab`.
#[must_use]
pub fn short_digest(digest: &str) -> &str {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    h.get(..12).unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms() {
        assert_eq!(ns(850), "850ns");
        assert_eq!(ns(12_345), "12.3µs");
        assert_eq!(ns(4_560_000), "4.56ms");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 << 20), "3.0MiB");
    }

    #[test]
    fn labelled_forms() {
        assert_eq!(ns_label(850.0), "850 ns");
        assert_eq!(ns_label(12_345.0), "12.3 µs");
        assert_eq!(ns_label(0.0), "0");
        assert_eq!(bytes_label(4096), "4 KiB");
        assert_eq!(bytes_label(1_572_864), "1.5 MiB");
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("abc"), "abc");
    }
}
