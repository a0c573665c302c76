#!/bin/busybox sh
# A neighbour's bpf() calls make the kernel skip kprobe programs, and cowprof says so (run by
# vm-init.sh as `sh SCRIPT BIN`, packed by `scripts/vm-matrix --after scripts/vm-kprobe-guard.sh`;
# kernels 7.0 and later with kprobes).
#
# Every bpf() map call takes the CPU's bpf_prog_active guard, which all kprobe programs share; from
# 7.0 a call preempted while it holds it makes the kernel skip every kprobe program on that CPU
# (docs/backends.md, "Missed kprobes"). `cowprof __bpf-busy` loops two threads on map lookups
# while the lifecycle storm runs under the kprobe backend. Events are lost then (the storm's
# verdict may be FAIL); what this checks is that the loss is not silent: the storm's line of
# skipped runs names kprobe programs, and record's note says what they cost. Or, when the
# neighbour made record's start-up check miss operations in all its attempts, record refuses to
# start and its error names the kprobe programs the kernel skipped. Prints
# "vm-kprobe-guard: PASS" (exit 0) or "... FAIL" (exit 1); on earlier kernels it only says why it
# does not apply.
B=$1
case "$(uname -r)" in
  [0-6].*) echo "vm-kprobe-guard: skip on $(uname -r): before 7.0 a bpf() call holds the guard with preemption disabled"; exit 0 ;;
esac
out=/tmp/vm-kprobe-guard.out
"$B" __bpf-busy 36000 >/dev/null 2>&1 &
busy=$!
"$B" selftest --tmpfs --backend kprobe --storm 60 --storm-only >"$out" 2>&1
rc=$?
kill -KILL "$busy" 2>/dev/null
wait "$busy" 2>/dev/null
grep -v '^selftest-event' "$out" | head -40
echo "vm-kprobe-guard: selftest exited $rc"
if [ "$rc" -ne 0 ] && grep -Eq 'the kprobe backend attached .* while the kernel skipped every copy of [^(]*cowprof_(kp|ph)_.* in its start-up check' "$out"; then
  echo "vm-kprobe-guard: PASS (record refused to start: the kernel skipped kprobe programs in every attempt of its start-up check beside a busy bpf() neighbour, and its error named them)"
  exit 0
fi
if ! grep -q 'runs the kernel skipped (program, runs): .*"cowprof_kp_' "$out"; then
  echo "vm-kprobe-guard: FAIL: the storm's output names no skipped kprobe program"
  exit 1
fi
if ! grep -q 'kprobe programs skipped (another BPF program, or a bpf() map operation of any process, held their CPU)' "$out"; then
  echo "vm-kprobe-guard: FAIL: record's note does not say what the skipped kprobe programs cost"
  exit 1
fi
echo "vm-kprobe-guard: PASS (the kernel skipped kprobe programs beside a busy bpf() neighbour, and cowprof reported it)"
exit 0
