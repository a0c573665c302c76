//! The `/metrics` endpoint: `tiny_http` on a thread of its own, so a slow scrape never holds up
//! the ring-buffer reader (the metric handles are atomics shared with the recorder).

use std::{
    net::{SocketAddr, TcpListener, ToSocketAddrs},
    sync::Arc,
    thread::JoinHandle,
};

use prometheus_client::registry::Registry;

use super::MetricsError;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `PORT`, `:PORT` (both on 127.0.0.1), `HOST:PORT` or `[V6]:PORT`. A host name must resolve.
pub fn parse_addr(spec: &str) -> Result<SocketAddr, MetricsError> {
    let bad = |reason: &str| MetricsError::Addr {
        addr: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let spec_t = spec.trim();
    if let Ok(port) = spec_t.trim_start_matches(':').parse::<u16>() {
        if !spec_t.is_empty() && (spec_t.starts_with(':') || !spec_t.contains(':')) {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    if let Ok(a) = spec_t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = spec_t.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("not HOST:PORT with a port 0-65535"));
    }
    (host, port.parse::<u16>().unwrap_or(0))
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| bad("unknown host"))
}

/// Serves the registry until dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds now (so a bad address fails before any probe is loaded) and serves on a thread.
    pub fn start(spec: &str, registry: Registry) -> Result<Self, MetricsError> {
        let addr = parse_addr(spec)?;
        let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind {
            addr: spec.to_owned(),
            source,
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let server =
            tiny_http::Server::from_listener(listener, None).map_err(|e| MetricsError::Bind {
                addr: spec.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("cowprof-metrics".into())
            .spawn(move || serve(&serving, &registry))
            .map_err(|source| MetricsError::Bind {
                addr: spec.to_owned(),
                source,
            })?;
        Ok(Self {
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// The address bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or_default();
        let response = if path == "/metrics" {
            let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                .expect("a valid static header");
            tiny_http::Response::from_string(super::encode(registry)).with_header(header)
        } else {
            tiny_http::Response::from_string("cowprof: metrics are on /metrics\n")
                .with_status_code(404)
        };
        // A client that went away is its own problem.
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ok = |s: &str, want: &str| assert_eq!(parse_addr(s).unwrap().to_string(), want, "{s}");
        ok("9464", "127.0.0.1:9464");
        ok(":9464", "127.0.0.1:9464");
        ok("0.0.0.0:9464", "0.0.0.0:9464");
        ok("[::1]:9464", "[::1]:9464");
        ok("127.0.0.1:0", "127.0.0.1:0");
        assert!(parse_addr("localhost:9464").unwrap().ip().is_loopback());
        for bad in [
            "",
            "abc",
            "1.2.3.4",
            "1.2.3.4:99999",
            "127.0.0.1:port",
            ":",
            "[::1]",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(matches!(e, MetricsError::Addr { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn address_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = taken.local_addr().unwrap().to_string();
        let (_, reg) = super::super::Recorder::new(1).unwrap();
        let e = MetricsServer::start(&spec, reg).err().unwrap();
        assert!(matches!(e, MetricsError::Bind { .. }));
        assert!(e.to_string().contains("pick a free port"), "{e}");
    }

    #[test]
    fn serves_metrics_and_404() {
        use std::io::{Read, Write};
        let (rec, reg) = super::super::Recorder::new(1).unwrap();
        rec.set_drops(&crate::pipeline::aggregate::Drops {
            ringbuf: 7,
            ..Default::default()
        });
        let server = MetricsServer::start("127.0.0.1:0", reg).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        };
        let body = get("/metrics");
        assert!(
            body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
            "{body}"
        );
        assert!(body.contains("application/openmetrics-text"));
        assert!(
            body.contains(r#"cowprof_dropped_events_total{reason="ringbuf"} 7"#),
            "{body}"
        );
        assert!(get("/").contains(" 404 "));
        drop(server);
    }
}
