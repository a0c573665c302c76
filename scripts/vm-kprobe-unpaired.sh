#!/bin/busybox sh
# The kprobe backend counts a copy-up or whiteout whose pair of probes did not both run (run by
# vm-init.sh as `sh SCRIPT BIN`, packed by `scripts/vm-matrix --after scripts/vm-kprobe-unpaired.sh`;
# a kernel with kprobes).
#
# The test hook COWPROF_TEST_DETACH_AFTER_CANARY detaches one program once the start-up check has
# passed, the way a probe the kernel missed loses its hits. The storm of 10 stacks makes 50
# copy-ups (5 a stack) and 20 whiteouts (2 a stack).
# 1. `cowprof_kp_copy_up_start` detached: every copy-up reaches `ovl_copy_up_end` with no start;
#    the storm must miss exactly its 50 copy-ups, keep its 20 whiteouts, and count exactly 50 in
#    `drops.unpaired` (`dropped=50`).
# 2. `cowprof_kp_dir_op_ret` (the return of unlink, rmdir, rename...) detached: every whiteout's
#    start stays; each is counted at its thread's next one, the last ones at the end of the
#    recording. The storm must miss exactly its 20 whiteouts and count exactly 20.
# Without the counting, `--accounted` fails (missing, 0 counted); a count of anything else fails
# the exact match. The test command boots 6.1 and 6.12 with this script: 6.1 runs check 1, 6.12
# check 2 (the counting is the same code on both; one check per boot keeps the stage's time).
# On any other kernel both run. Prints the selftest's lines and "vm-kprobe-unpaired: PASS" (exit 0) or
# "... FAIL" (exit 1).
B=$1
out=/tmp/vm-kprobe-unpaired.out
# $1 = program to detach, $2 = the expected "events ... dropped=" part of the storm line, $3 = what.
check() {
  COWPROF_TEST_DETACH_AFTER_CANARY=$1 \
    "$B" selftest --tmpfs --backend kprobe --storm 10 --storm-only --accounted >"$out" 2>&1
  rc=$?
  cat "$out"
  if [ "$rc" -ne 0 ]; then
    echo "vm-kprobe-unpaired: FAIL: selftest with $1 detached exited $rc"
    exit 1
  fi
  line=$(grep 'storm backend=kprobe' "$out")
  case "$line" in
    *"ok (accounted)"*) ;;
    *) echo "vm-kprobe-unpaired: FAIL: no accounted storm verdict with $1 detached"; exit 1 ;;
  esac
  case "$line" in
    *" $2 "*) echo "vm-kprobe-unpaired: $3" ;;
    *) echo "vm-kprobe-unpaired: FAIL: $1 detached: expected '$2'"; exit 1 ;;
  esac
}
case "$(uname -r)" in
  6.12.*) run1=no; run2=yes ;;
  6.1.*) run1=yes; run2=no ;;
  *) run1=yes; run2=yes ;;
esac
[ "$run1" = yes ] && check cowprof_kp_copy_up_start \
  "expected=70 exact=20 missing=50 misattributed=0 layer_unknown=0 duplicates=0 from_removal=0 dropped=50" \
  "50 copy-ups lost to the detached start probe, 50 counted"
[ "$run2" = yes ] && check cowprof_kp_dir_op_ret \
  "expected=70 exact=50 missing=20 misattributed=0 layer_unknown=0 duplicates=0 from_removal=0 dropped=20" \
  "20 whiteouts lost to the detached return probe, 20 counted"
echo "vm-kprobe-unpaired: PASS"
exit 0
