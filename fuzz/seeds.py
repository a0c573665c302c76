#!/usr/bin/env python3
"""Regenerates the seed corpora under fuzz/corpus/ (run from anywhere; needs zstd, docker,
skopeo). Samples are real where the host has them: /proc/self/mountinfo and cgroup, the lab's
built-in spec, the compare test data, `docker save` of the tiny cowprof-base-scratch image and its
OCI form from skopeo. Layer tars and kernel event samples are built here in their real formats."""
import gzip, io, json, os, re, shutil, struct, subprocess, tarfile, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = os.path.join(ROOT, "fuzz", "corpus")

def put(target, name, data):
    d = os.path.join(C, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def layer_with_whiteouts():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None):
            ti = tarfile.TarInfo(name); ti.type = kind; ti.mode = mode; ti.mtime = 1700000000
            ti.linkname = link; ti.size = len(data) if kind == tarfile.REGTYPE else 0
            if pax: ti.pax_headers = pax
            t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("etc/", tarfile.DIRTYPE, mode=0o755)
        add("etc/hosts", data=b"127.0.0.1 localhost\n")
        add("etc/.wh.passwd")
        add("var/", tarfile.DIRTYPE, mode=0o755)
        add("var/cache/", tarfile.DIRTYPE, mode=0o755)
        add("var/cache/.wh..wh..opq")
        add("var/cache/new", data=b"x" * 100)
        add("usr/bin/", tarfile.DIRTYPE, mode=0o755)
        add("usr/bin/tool", data=b"\x7fELF", mode=0o4755, pax={"SCHILY.xattr.user.note": "kept"})
        add("usr/bin/alias", tarfile.SYMTYPE, link="tool")
        add("usr/bin/hard", tarfile.LNKTYPE, link="usr/bin/tool")
        add("run/", tarfile.DIRTYPE, mode=0o755)
        add("run/fifo", tarfile.FIFOTYPE)
        add(".wh..wh.plnk")
    return buf.getvalue()

def main():
    shutil.rmtree(C, ignore_errors=True)
    # layer_tar: plain, gzip, zstd.
    layer = layer_with_whiteouts()
    put("layer_tar", "whiteouts.tar", layer)
    put("layer_tar", "whiteouts.tar.gz", gzip.compress(layer, mtime=0))
    put("layer_tar", "whiteouts.tar.zst", subprocess.run(["zstd", "-q", "-c"], input=layer, capture_output=True, check=True).stdout)
    # mountinfo / cgroup: this host's own.
    put("mountinfo", "host-self", open("/proc/self/mountinfo", "rb").read())
    put("mountinfo", "docker-overlay", b"1234 100 0:77 / /var/lib/docker/overlay2/abc/merged rw,relatime shared:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work,index=off\n"
        b"1235 100 0:78 / /mnt/o\\040x rw - overlay overlay rw,lowerdir=l/CCC:l/DDD,upperdir=abc/diff,workdir=abc/work,redirect_dir=on,metacopy=on\n")
    put("cgroup", "no-container-host-self", open("/proc/self/cgroup", "rb").read())
    cid = "4f1c" * 16
    put("cgroup", "docker-v2", f"0::/system.slice/docker-{cid}.scope\n")
    put("cgroup", "docker-v1", f"12:memory:/docker/{cid}\n11:cpu,cpuacct:/docker/{cid}\n0::/\n")
    put("cgroup", "containerd-k8s", f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{cid}.scope\n")
    put("cgroup", "podman", f"0::/machine.slice/libpod-{cid}.scope/container\n")
    # bench_spec: the built-in spec, verbatim from spec.rs.
    src = open(os.path.join(ROOT, "profiler/src/lab/spec.rs")).read()
    put("bench_spec", "default.toml", re.search(r'pub const DEFAULT_SPEC: &str = r#"(.*?)"#;', src, re.S).group(1))
    # thresholds / results: the compare test data.
    data = os.path.join(ROOT, "profiler/tests/data/compare")
    for n in sorted(os.listdir(data)):
        if n.endswith(".toml"):
            put("bench_spec", n, open(os.path.join(data, n), "rb").read())
    readme = open(os.path.join(ROOT, "docs/compare.md")).read()
    put("thresholds", "cowprof-ci.toml", re.search(r"```toml\n(# \.cowprof-ci\.toml\n.*?)```", readme, re.S).group(1))
    put("thresholds", "flags", "p50=+25%\np99=+50%\nefficiency=-25%\ncopy_ups=+0\nbytes_copied=+0\n")
    for n in ("tmpfs-a.json", "dir-default.json"):
        put("results", n, open(os.path.join(data, n), "rb").read())
    # decode: one sample of each record kind, length-prefixed (see fuzzing::decode).
    def cow(kind, backend, flags, path_parts, comm=b"sh"):
        path = b"\0".join(reversed(path_parts)) + b"\0"
        head = struct.pack("<4I7Q12I", 1, kind, backend, flags, 10**9, 5000, 10**9 - 9000, 4096, 4096, 77, 256,
                           1234, 1234, 4026531840 & 0xffffffff, 77 << 20 | 5, 2, 0, 1, 0o100644, len(path), len(path_parts), 42, 0)
        syscall_ret = struct.pack("<q", 0)
        phases = struct.pack("<8Q2I", 1000, 2000, 300, 40, 500, 60, 0, 4096, 0b111111, 0)
        return head + syscall_ret + phases + comm.ljust(16, b"\0") + path.ljust(512, b"\0")
    end = struct.pack("<IIiIqQQ", 2, 1234, 2, 0, 3, 10**9 - 9000, 10**9 + 100)
    samples = [cow(1, 3, 2, [b"etc", b"hosts"]), cow(4, 2, 0, [b"var", b"gone"]), cow(9, 3, 1, [b"a" * 200, b"b" * 200]), end]
    put("decode", "events", b"".join(struct.pack("<H", len(s)) + s for s in samples))
    put("decode", "no-short", struct.pack("<H", 3) + b"\x01\0\0")
    # Images: docker save of the tiny scratch image, and its OCI layout via skopeo.
    with tempfile.TemporaryDirectory() as tmp:
        save = os.path.join(tmp, "s.tar")
        subprocess.run(["docker", "save", "-o", save, "cowprof-base-scratch:latest"], check=True)
        put("image_archive", "docker-save.tar", open(save, "rb").read())
        with tarfile.open(save) as t:
            man = json.load(t.extractfile("manifest.json"))
            cfg = t.extractfile(man[0]["Config"]).read()
        man[0]["Config"] = "@1.json"
        put("docker_manifest", "docker-save", json.dumps(man).encode() + b"\n--\n" + cfg)
        oci = os.path.join(tmp, "oci")
        subprocess.run(["skopeo", "copy", "-q", f"docker-archive:{save}", f"oci:{oci}:latest"], check=True)
        idx = json.load(open(os.path.join(oci, "index.json")))
        md = idx["manifests"][0]["digest"].split(":")[1]
        m = json.load(open(os.path.join(oci, "blobs/sha256", md)))
        ocfg = open(os.path.join(oci, "blobs/sha256", m["config"]["digest"].split(":")[1]), "rb").read()
        idx["manifests"][0]["digest"] = "sha256:@1"
        m["config"]["digest"] = "sha256:@2"
        put("oci_layout", "skopeo", json.dumps(idx).encode() + b"\n--\n" + json.dumps(m).encode() + b"\n--\n" + ocfg)
        nested = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:@1"}]}
        inner = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:@2",
                                                    "platform": {"architecture": "amd64", "os": "linux"}}]}
        m["config"]["digest"] = "sha256:@3"
        put("oci_layout", "nested-index", json.dumps(nested).encode() + b"\n--\n" + json.dumps(inner).encode() + b"\n--\n" + json.dumps(m).encode() + b"\n--\n" + ocfg)
        # The OCI layout as a tar archive, with the small whiteout layer instead of the binary.
        lz = gzip.compress(layer, mtime=0)
        import hashlib
        h = lambda b: hashlib.sha256(b).hexdigest()
        c = json.loads(ocfg); c["rootfs"]["diff_ids"] = ["sha256:" + h(layer)]; cb = json.dumps(c).encode()
        mm = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
              "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + h(cb), "size": len(cb)},
              "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + h(lz), "size": len(lz)}]}
        mb = json.dumps(mm).encode()
        ib = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": mm["mediaType"], "digest": "sha256:" + h(mb), "size": len(mb),
                                                              "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, b in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", ib),
                            ("blobs/sha256/" + h(cb), cb), ("blobs/sha256/" + h(mb), mb), ("blobs/sha256/" + h(lz), lz)]:
                ti = tarfile.TarInfo(name); ti.size = len(b); ti.mtime = 1700000000
                t.addfile(ti, io.BytesIO(b))
        put("image_archive", "oci-layout.tar", buf.getvalue())

main()
