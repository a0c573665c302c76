//! Scrape cost and memory of `record --metrics-addr`: label sets are filled with events through
//! the same `Recorder::observe` that `record` calls, then `/metrics` is fetched over loopback
//! from the real server (`tiny_http` thread), as Prometheus would.
//!
//! Reported per configuration: active series (sample lines in the exposition), response bytes,
//! heap held by the metrics (a counting allocator: live bytes after filling minus before), the
//! median and p90 of a full HTTP scrape and of the encoding alone, and the cost of one
//! `observe` on a hot series. Speed figures are reported, never asserted.
//!
//! ```text
//! cargo bench -p profiler --bench metrics_scrape [-- --scrapes N]
//! ```
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use cowprof::{
    event::Event,
    event::Kind,
    pipeline::metrics::{encode, MetricsServer, Recorder},
};

/// Live heap bytes, to measure what the series hold.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn event(kind: Kind, mount: &str, i: u64) -> Event {
    Event {
        latency_ns: 1_000 + (i * 7919) % 5_000_000,
        latency_partial: true,
        pid: 1,
        tid: 1,
        comm: "bench".into(),
        mount_point: Some(mount.into()),
        path: "p".into(),
        size_bytes: 4096,
        bytes_copied: 4096,
        lower_layer: Some(1),
        ..Event::new(kind, cowprof::event::Backend::Tracepoint)
    }
}

fn scrape(addr: std::net::SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("read");
    body.len()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scrapes: usize = args
        .iter()
        .position(|a| a == "--scrapes")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let copy_kinds = [
        Kind::DataCopyUp,
        Kind::Metacopy,
        Kind::DirCopyUp,
        Kind::SpecialCopyUp,
        Kind::DeferredDataCopyUp,
    ];
    let white_kinds = [Kind::Whiteout, Kind::OpaqueDir, Kind::CreateOverWhiteout];
    // (name, budget, label sets, copy-up kinds per set, whiteout kinds per set)
    let configs: [(&str, usize, usize, usize, usize); 3] = [
        ("1,000 series: 34 label sets x data copy-up", 50, 34, 1, 0),
        (
            "default budget full: 50 sets + other, all 8 kinds",
            50,
            60,
            5,
            3,
        ),
        (
            "--metrics-max-series 1000, 1,000 sets x data copy-up",
            1000,
            1000,
            1,
            0,
        ),
    ];
    println!(
        "{:<58} {:>8} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "configuration",
        "series",
        "bytes",
        "heap",
        "scrape p50",
        "scrape p90",
        "encode p50",
        "observe",
        "folded"
    );
    let mut json = Vec::new();
    for (name, budget, sets, ck, wk) in configs {
        let before = LIVE.load(Ordering::Relaxed);
        let (rec, registry) = Recorder::new(budget).expect("recorder");
        let mut i = 0u64;
        for s in 0..sets {
            let mount = format!("/var/lib/docker/overlay2/{s:064x}/merged");
            for k in copy_kinds
                .iter()
                .take(ck)
                .chain(white_kinds.iter().take(wk))
            {
                for _ in 0..20 {
                    rec.observe(&event(*k, &mount, i));
                    i += 1;
                }
            }
        }
        let text = encode(&registry);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        let fixed = {
            let (_, empty) = Recorder::new(1).expect("recorder");
            encode(&empty)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count()
        };
        drop(text);
        let heap = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        // Encoding alone.
        let mut enc: Vec<Duration> = (0..scrapes)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(encode(&registry));
                t.elapsed()
            })
            .collect();
        // observe() on a series of its own, and on one folded into "other".
        let n = 100_000u32;
        let per_event = |ev: &Event| {
            let t = Instant::now();
            for _ in 0..n {
                rec.observe(ev);
            }
            t.elapsed() / n
        };
        let mount0 = format!("/var/lib/docker/overlay2/{:064x}/merged", 0);
        let observe = per_event(&event(Kind::DataCopyUp, &mount0, 1));
        let folded = per_event(&event(Kind::DataCopyUp, "/not/admitted", 1));
        let server = MetricsServer::start("127.0.0.1:0", registry).expect("server");
        let addr = server.local_addr();
        let bytes = scrape(addr);
        let mut http: Vec<Duration> = (0..scrapes)
            .map(|_| {
                let t = Instant::now();
                scrape(addr);
                t.elapsed()
            })
            .collect();
        drop(server);
        let (p50, p90, e50) = (
            percentile(&mut http, 0.5),
            percentile(&mut http, 0.9),
            percentile(&mut enc, 0.5),
        );
        println!(
            "{name:<58} {series:>8} {bytes:>10} {:>9}K {p50:>12.2?} {p90:>12.2?} {e50:>12.2?} {observe:>10.0?} {folded:>10.0?}",
            heap / 1024
        );
        json.push(serde_json::json!({
            "configuration": name, "series": series, "fixed_series": fixed, "response_bytes": bytes,
            "heap_bytes": heap, "scrape_p50_us": p50.as_secs_f64() * 1e6,
            "scrape_p90_us": p90.as_secs_f64() * 1e6, "encode_p50_us": e50.as_secs_f64() * 1e6,
            "observe_ns": observe.as_nanos(), "observe_folded_ns": folded.as_nanos(), "scrapes": scrapes,
        }));
    }
    println!("{}", serde_json::Value::Array(json));
}
