#!/bin/busybox sh
# The kprobe backend's floor attaches every hook and leaves none behind (run by vm-init.sh as
# `sh SCRIPT BIN`, packed by `scripts/vm-matrix --after scripts/vm-floor.sh --extra <static
# empty_hooks>`; kernels with kprobes).
#
# `empty_hooks --kprobe` (benches/src/bin/empty_hooks.rs) is what `scripts/bench --vm-floor`
# measures the kprobe backend against: an empty program on each hook `record --backend kprobe`
# attaches. Here, with and without the phase hooks: it says it attached all of them (41; 23
# without the phases), the kernel's kprobe list (debugfs) grows by exactly its kprobes and
# kretprobes while it runs (37; 21), and after SIGINT it exits 0 and the list is back where it was.
# Prints "vm-floor: ..." lines and ends with "vm-floor: PASS" (exit 0) or "vm-floor: FAIL: why"
# (exit 1).
E=/extra/empty_hooks
L=/sys/kernel/debug/kprobes/list
fail() { echo "vm-floor: FAIL: $*"; cat "$out" 2>/dev/null; exit 1; }
[ -x "$E" ] || fail "$E is not packed (scripts/vm-matrix --extra <static empty_hooks>)"
[ -r "$L" ] || fail "$L is missing: this kernel has no kprobes or debugfs is not mounted"
probes() { wc -l <"$L"; }

# $1 = options, $2 = hooks expected, $3 = kprobes expected.
check() {
  # A file of its own per run, made before it starts: the wait below must not read the line
  # of an earlier run (the background redirection may truncate the file after it looks).
  out=/tmp/vm-floor.$2.out
  : >"$out"
  before=$(probes)
  $E --kprobe $1 >>"$out" 2>&1 &
  pid=$!
  i=0
  until grep -q '^attached' "$out"; do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; fail "empty_hooks --kprobe $1 exited ($?) before attaching"; }
    i=$((i + 1)); [ $i -lt 600 ] || fail "empty_hooks --kprobe $1 did not attach in 60 s"
    sleep 0.1
  done
  n=$(sed -n 's/^attached \([0-9]*\) hooks.*/\1/p' "$out")
  during=$(probes)
  kill -INT "$pid"
  wait "$pid"
  rc=$?
  after=$(probes)
  echo "vm-floor: --kprobe${1:+ $1}: attached $n hooks; kprobes listed $before -> $during -> $after; exit $rc"
  [ "$n" = "$2" ] || fail "--kprobe $1 attached $n hooks, not $2"
  [ $((during - before)) = "$3" ] || fail "--kprobe $1 added $((during - before)) kprobes to $L, not $3"
  [ "$rc" = 0 ] || fail "--kprobe $1 exited $rc after SIGINT"
  [ "$after" = "$before" ] || fail "--kprobe $1 left $((after - before)) kprobes behind"
}
check "" 41 37
check "--no-phases" 23 21
echo "vm-floor: PASS"
