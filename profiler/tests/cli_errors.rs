//! Every documented failure: one clear line on stderr, the documented exit code, and nothing left
//! attached or mounted afterwards.

mod common;

use std::process::Command;

use common::{kprobes_missing, lock, require_root, Baseline, BIN};

/// Runs cowprof with `args`, asserts the exit code and that stderr's first line is a message
/// naming the problem; returns stderr. stdout must stay empty (errors never go there).
fn fails(args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = assert_cmd::Command::new(BIN)
        .args(args)
        .timeout(std::time::Duration::from_mins(2))
        .assert()
        .code(code);
    let out = out.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.stdout.is_empty(),
        "cowprof {args:?}: unexpected stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let first = stderr
        .lines()
        .next()
        .unwrap_or_else(|| panic!("cowprof {args:?}: empty stderr"));
    for n in needles {
        assert!(
            first.contains(n),
            "cowprof {args:?}: first stderr line {first:?} lacks {n:?}; stderr:\n{stderr}"
        );
    }
    stderr
}

/// cowprof's own errors (not clap's) are exactly one line.
fn one_line(stderr: &str) {
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(stderr.starts_with("cowprof: "), "{stderr}");
}

/// Runs `f` under the test lock and checks that it left no mount and no BPF link behind.
fn clean(name: &str, f: impl FnOnce()) {
    if !require_root(name) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    f();
    baseline.assert_clean(name);
}

#[test]
fn unknown_backend_is_usage_error() {
    clean("unknown_backend_is_usage_error", || {
        let e = fails(
            &["record", "--backend", "nope"],
            2,
            &["invalid value 'nope'", "--backend"],
        );
        assert!(e.contains("possible values: kprobe, tracepoint"), "{e}");
    });
}

/// fentry cannot attach to overlay's functions with cowprof's loader: it is not offered.
#[test]
fn fentry_is_not_an_accepted_backend() {
    clean("fentry_is_not_an_accepted_backend", || {
        let e = fails(
            &["record", "--backend", "fentry"],
            2,
            &["invalid value 'fentry'", "--backend"],
        );
        assert!(e.contains("possible values: kprobe, tracepoint"), "{e}");
    });
}

#[test]
fn mount_not_overlay_is_usage_error() {
    clean("mount_not_overlay_is_usage_error", || {
        let e = fails(
            &["record", "--mount", "/tmp", "--", "true"],
            2,
            &["--mount /tmp", "not an overlay"],
        );
        one_line(&e);
    });
}

#[test]
fn kprobe_backend_unavailable_without_kprobes() {
    if !kprobes_missing() {
        common::skip(
            "kprobe_backend_unavailable_without_kprobes",
            "kprobes-present",
            "this kernel has kprobes",
        );
        return;
    }
    clean("kprobe_backend_unavailable_without_kprobes", || {
        let e = fails(
            &["record", "--backend", "kprobe", "--", "true"],
            4,
            &["backend kprobe", "CONFIG_KPROBES"],
        );
        one_line(&e);
    });
}

#[test]
fn record_missing_btf_is_unsupported() {
    clean("record_missing_btf_is_unsupported", || {
        let e = fails(
            &["record", "--btf", "/nonexistent", "--", "true"],
            4,
            &[
                "cannot read kernel BTF at /nonexistent",
                "pass --btf FILE",
                "Supported kernels",
            ],
        );
        one_line(&e);
    });
}

#[test]
fn doctor_missing_btf_reports_and_exits_4() {
    clean("doctor_missing_btf_reports_and_exits_4", || {
        // doctor still prints its whole report on stdout, and says why nothing can attach.
        let out = Command::new(BIN)
            .args(["doctor", "--btf", "/nonexistent"])
            .output()
            .expect("run doctor");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "stdout:\n{stdout}");
        assert!(
            out.stderr.is_empty(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("btf: unavailable: cannot read kernel BTF at /nonexistent"),
            "{stdout}"
        );
        assert!(stdout.contains("tracepoint: no kernel BTF"), "{stdout}");
        assert!(
            stdout.lines().last() == Some("record would use: nothing (no backend can attach)"),
            "{stdout}"
        );

        let out = Command::new(BIN)
            .args(["doctor", "--json", "--btf", "/nonexistent"])
            .output()
            .expect("run doctor");
        assert_eq!(out.status.code(), Some(4));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
        assert!(v["chosen"].is_null(), "{v}");
        assert!(v["btf"].is_null(), "{v}");
        assert_eq!(v["fields"], serde_json::json!([]), "{v}");
        let backends = v["backends"].as_array().expect("backends");
        assert_eq!(backends.len(), 3);
        assert!(backends.iter().all(|b| b["usable"] == false), "{v}");
    });
}

#[test]
fn bad_cgroup_is_usage_error() {
    clean("bad_cgroup_is_usage_error", || {
        let e = fails(
            &["record", "--cgroup", "/nonexistent", "--", "true"],
            2,
            &["--cgroup /nonexistent", "cgroup v2"],
        );
        one_line(&e);
    });
}

#[test]
fn bad_min_latency_is_usage_error() {
    clean("bad_min_latency_is_usage_error", || {
        fails(
            &["record", "--min-latency", "banana"],
            2,
            &["invalid value 'banana'", "--min-latency"],
        );
    });
}

#[test]
fn not_root_exits_3() {
    clean("not_root_exits_3", || {
        // Drop to nobody; try setpriv, then runuser.
        let attempts: [(&str, &[&str]); 2] = [
            (
                "setpriv",
                &["--reuid=65534", "--regid=65534", "--clear-groups", "--"],
            ),
            ("runuser", &["-u", "nobody", "--"]),
        ];
        let Some((tool, pre)) = attempts
            .iter()
            .find(|(t, _)| Command::new(t).arg("--help").output().is_ok())
        else {
            common::skip(
                "not_root_exits_3",
                "no-setpriv",
                "neither setpriv nor runuser is installed (Debian package util-linux)",
            );
            return;
        };
        let out = Command::new(tool)
            .args(*pre)
            .args([BIN, "record", "--", "true"])
            .output()
            .expect("run as nobody");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{tool}: stderr: {stderr}");
        assert!(out.stdout.is_empty());
        one_line(&stderr);
        assert!(
            stderr.contains("must run as root") && stderr.contains("sudo"),
            "{stderr}"
        );
    });
}
