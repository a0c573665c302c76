#!/bin/busybox sh
# The kprobe backend counts a copy-up whose pair of probes did not both run (run by vm-init.sh as
# `sh SCRIPT BIN`, packed by `scripts/vm-matrix --after scripts/vm-kprobe-unpaired.sh`; a kernel
# with kprobes).
#
# The test hook COWPROF_TEST_DETACH_AFTER_CANARY detaches `cowprof_kp_copy_up_start` once the
# start-up check has passed: every later copy-up reaches `ovl_copy_up_end` with no start, the way
# a start probe the kernel missed would. The storm of 20 stacks then loses its 100 copy-ups (5 a
# stack) and keeps its 40 whiteouts; each lost copy-up must be counted in `drops.unpaired`
# (`dropped=100`), nothing else may be wrong. Without the pairing counter the storm fails
# `--accounted` (100 missing, 0 counted); a counter that counted anything else fails the exact
# match below.
# Prints the selftest's lines and "vm-kprobe-unpaired: PASS" (exit 0) or "... FAIL" (exit 1).
B=$1
out=/tmp/vm-kprobe-unpaired.out
COWPROF_TEST_DETACH_AFTER_CANARY=cowprof_kp_copy_up_start \
  "$B" selftest --tmpfs --backend kprobe --storm 20 --storm-only --accounted >"$out" 2>&1
rc=$?
cat "$out"
if [ "$rc" -ne 0 ]; then
  echo "vm-kprobe-unpaired: FAIL: selftest exited $rc"
  exit 1
fi
line=$(grep 'storm backend=kprobe' "$out")
case "$line" in
  *"ok (accounted)"*) ;;
  *) echo "vm-kprobe-unpaired: FAIL: no accounted storm verdict"; exit 1 ;;
esac
case "$line" in
  *" expected=140 exact=40 missing=100 misattributed=0 layer_unknown=0 duplicates=0 from_removal=0 dropped=100 "*)
    echo "vm-kprobe-unpaired: PASS (100 copy-ups lost to the detached start probe, 100 counted)" ;;
  *) echo "vm-kprobe-unpaired: FAIL: expected 100 copy-ups missing and exactly those counted"; exit 1 ;;
esac
exit 0
