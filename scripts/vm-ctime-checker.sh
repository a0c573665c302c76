#!/bin/busybox sh
# The ctime checkers count what every copy of a ctime program skipped (run by vm-init.sh as
# `sh SCRIPT BIN`, packed by `scripts/vm-matrix --after scripts/vm-ctime-checker.sh`; kernels
# 7.0 and later, where the kernel skips a tracepoint program preempted on a CPU for every other
# task that hits it there).
#
# With one copy of each ctime program instead of three (`--ctime-copies 1`) the lifecycle storm
# loses events under TCG (28 of 420 in one run); `--accounted` fails the storm unless every event
# it did not deliver exactly is covered by a counted loss (`drops`, or `ctime_skipped`). Without
# the checkers it would fail on the first loss. A storm that happened to lose nothing passes and
# says so (it proved nothing that time).
# Prints the selftest's lines and "vm-ctime-checker: PASS" (exit 0) or "... FAIL" (exit 1).
B=$1
out=/tmp/vm-ctime-checker.out
"$B" selftest --tmpfs --backend tracepoint --storm 60 --ctime-copies 1 --accounted >"$out" 2>&1
rc=$?
cat "$out"
if [ "$rc" -ne 0 ]; then
  echo "vm-ctime-checker: FAIL: selftest exited $rc"
  exit 1
fi
line=$(grep 'storm backend=tracepoint' "$out")
case "$line" in
  *"ok (accounted)"*) ;;
  *) echo "vm-ctime-checker: FAIL: no accounted storm verdict"; exit 1 ;;
esac
case "$line" in
  *" missing=0 "*"layer_unknown=0 "*) echo "vm-ctime-checker: PASS (nothing was lost this time: the checkers were not put to the test)" ;;
  *) echo "vm-ctime-checker: PASS (every event lost with one ctime copy was counted)" ;;
esac
exit 0
