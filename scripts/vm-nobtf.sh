#!/bin/busybox sh
# The kprobe backend on a kernel whose overlay types are not in BTF (run by vm-init.sh as
# `sh SCRIPT BIN`, packed by `scripts/vm-matrix --after scripts/vm-nobtf.sh`; overlay.ko is a
# module there, its split BTF at /sys/kernel/btf/overlay).
#
# 1. `--btf-overlay /nonexistent`: the module's BTF hidden from cowprof.
# 2. `--btf FILE` with a copy of /sys/kernel/btf/vmlinux: a BTF file without overlay types.
# Each runs `selftest --doctor` of the kprobe backend: the scenario's exact events (kinds, paths,
# layers, bytes, the upper directory as ground truth) with the metacopy stack, and doctor's field
# table must say which field comes from where (user space, vmlinux BTF; nothing missing).
# 3. Renames, which the scenario has none of, under `record` with overlay's BTF and with it
#    hidden: a lower file renamed (a data copy-up and a whiteout at the old name, RENAME_WHITEOUT)
#    and a new directory renamed over a whiteout (exchanged with it, which overlay then removes:
#    no whiteout). Both recordings must hold the same events: kind, path and layer.
# 4. `--btf /nonexistent` (a kernel with no BTF at all): one line on stderr, exit code 4.
# Prints "vm-nobtf: ..." lines and ends with "vm-nobtf: PASS" (exit 0) or "vm-nobtf: FAIL: why".
B=$1
T=/tmp/vm-nobtf
mkdir -p "$T"
fail() { echo "vm-nobtf: FAIL: $*"; exit 1; }
grep -q '^overlay ' /proc/modules || insmod /overlay.ko || fail "overlay is not loaded"
[ -r /sys/kernel/btf/overlay ] || fail "no /sys/kernel/btf/overlay: this kernel is not the module case"
cp /sys/kernel/btf/vmlinux "$T/vmlinux-only.btf" || fail "copy of vmlinux BTF"

# $1 = tag, rest = BTF options. Runs the self-test and checks its doctor part.
run() {
  tag=$1; shift
  "$B" selftest --tmpfs --doctor --backend kprobe --expect-chosen kprobe --expect-backends kprobe \
    --expect-metacopy "$@" >"$T/$tag.out" 2>&1
  rc=$?
  sed "s/^/vm-nobtf: $tag: /" "$T/$tag.out"
  [ "$rc" = 0 ] || fail "$tag: selftest rc=$rc"
  grep -q '^btf: .* available; overlay types missing: ' "$T/$tag.out" || fail "$tag: doctor does not say overlay types are missing"
  for want in 'lower_layer +user space' 'kind data/metacopy +user space' \
    'kind deferred_data_copy_up +vmlinux BTF' 'whiteout +vmlinux BTF' \
    'create_over_whiteout, opaque_dir +vmlinux BTF' 'path, mode, size, dev, mnt_ns +vmlinux BTF'; do
    grep -Eq "^  $want " "$T/$tag.out" || fail "$tag: doctor's field table lacks '$want'"
  done
  grep -q '^  missing: ' "$T/$tag.out" && fail "$tag: doctor reports missing fields"
  grep -Eq '^  tracepoint: +needs overlay.s types in BTF' "$T/$tag.out" || fail "$tag: doctor's tracepoint line"
  grep -q '^selftest: ok backend=kprobe .* metacopy=yes$' "$T/$tag.out" || fail "$tag: no ok line with the metacopy stack"
  echo "vm-nobtf: $tag: ok"
}
run hidden --btf-overlay /nonexistent
run vmlinux-only --btf "$T/vmlinux-only.btf"

# "kind path layer;" of every event line of $1, in order.
events() {
  grep '"type":"event"' "$1" | while read -r l; do
    k=$(echo "$l" | grep -o '"kind":"[a-z_]*"' | cut -d'"' -f4)
    p=$(echo "$l" | grep -o '"path":"[^"]*"' | cut -d'"' -f4)
    y=$(echo "$l" | grep -o '"lower_layer":[0-9a-z]*' | cut -d: -f2)
    echo "$k $p $y;"
  done | tr -d '\n'
}
# $1 = tag, rest = BTF options: records the rename workload on a fresh overlay.
renames() {
  tag=$1; shift
  d=$T/r-$tag; mkdir -p "$d/l" "$d/u" "$d/w" "$d/m"
  echo lower >"$d/l/a"; echo lower >"$d/l/b"
  "$B" record --backend kprobe --json "$@" >"$d.json" 2>"$d.err" &
  rp=$!
  i=0
  while [ ! -s "$d.json" ]; do
    kill -0 "$rp" 2>/dev/null || fail "$tag: record exited before attaching: $(cat "$d.err")"
    i=$((i + 1)); [ $i -lt 1200 ] || fail "$tag: record did not attach in 120 s"
    sleep 0.1
  done
  mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" || fail "$tag: mount"
  mv "$d/m/a" "$d/m/a2" && mkdir "$d/m/nd" && rm "$d/m/b" && mv "$d/m/nd" "$d/m/b" || fail "$tag: workload"
  i=0
  while [ "$(grep -c '"type":"event"' "$d.json")" -lt 3 ]; do
    i=$((i + 1)); [ $i -lt 300 ] || break
    sleep 0.1
  done
  sleep 1
  kill -INT "$rp"; wait "$rp"; rrc=$?
  umount "$d/m"
  [ "$rrc" = 0 ] || fail "$tag: record rc=$rrc: $(cat "$d.err")"
  # Ground truth: the upper dir holds a2 (copied up), b (the directory, opaque) and a whiteout
  # at a only.
  [ -c "$d/u/a" ] && [ -f "$d/u/a2" ] && [ -d "$d/u/b" ] || fail "$tag: upper dir: $(ls -l "$d/u")"
  echo "vm-nobtf: renames $tag: $(events "$d.json")"
}
renames btf
renames hidden --btf-overlay /nonexistent
[ "$(events "$T/r-btf.json" | tr ';' '\n' | sort)" = "$(events "$T/r-hidden.json" | tr ';' '\n' | sort)" ] ||
  fail "renames: the recordings differ"
[ "$(events "$T/r-hidden.json" | tr ';' '\n' | grep -c '^whiteout ')" = 2 ] || fail "renames: not exactly 2 whiteouts"
[ "$(events "$T/r-hidden.json" | tr ';' '\n' | grep -c .)" = 3 ] || fail "renames: not exactly 3 events"

"$B" record --btf /nonexistent -- true >"$T/none.out" 2>"$T/none.err"
rc=$?
echo "vm-nobtf: no BTF: rc=$rc stderr: $(cat "$T/none.err")"
[ "$rc" = 4 ] || fail "record --btf /nonexistent: rc=$rc, expected 4"
[ "$(grep -c . "$T/none.err")" = 1 ] || fail "record --btf /nonexistent: stderr is not one line"
grep -q '^cowprof: cannot read kernel BTF at /nonexistent: .* pass --btf FILE' "$T/none.err" || fail "record --btf /nonexistent: not the documented line"
[ -s "$T/none.out" ] && fail "record --btf /nonexistent wrote to stdout"
echo "vm-nobtf: PASS"
