#!/bin/busybox sh
# PID 1 of the initramfs that scripts/vm-matrix builds. Runs under busybox sh, inside a qemu VM.
# Layout it expects: /bin/busybox, /overlay.ko, optional /modules/*.ko (loaded in name order),
# /cowprof-test, optional /cowprof-args (a file of shell words, `set -- 'a' 'b'`, written by
# vm-matrix), /after.d/* (scripts run next, in name order, `sh SCRIPT /cowprof-test`), optional
# /out (sent back over the console at the end) and /vm-dmesg-check (scripts/vm-dmesg-check).
# After each run the kernel log is checked: every WARNING:, BUG:, Oops, RCU stall, lockup or
# lockdep line is printed and counted. It always ends with exactly one line
#   COWPROF-VM-VERDICT kernel=<uname -r> rc=<exit code> dmesg=<kernel problem lines>
# and powers the VM off, whatever happened before.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ TERM=dumb

mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The console: the kernel opened /dev/console from the cpio (if it was packed); reopen it now that
# devtmpfs is there so output cannot be lost.
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || echo "vm-init: tracefs mount failed"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "vm-init: bpffs mount failed"
ulimit -l unlimited 2>/dev/null

KVER=$(uname -r)
echo
echo "vm-init: kernel $KVER"
if [ -f /overlay.ko ]; then
  insmod /overlay.ko || echo "vm-init: insmod /overlay.ko failed"
fi
for m in /modules/*.ko; do
  [ -f "$m" ] || continue
  insmod "$m" || echo "vm-init: insmod $m failed"
done

# Prints the kernel log's problem lines since the last call (dmesg -c clears what was read) and
# adds their number to $dmesg_bad. $1 = what just ran.
dmesg_bad=0
check_dmesg() {
  hits=$(dmesg -c | sh /vm-dmesg-check)
  if [ -n "$hits" ]; then
    n=$(echo "$hits" | grep -c .)
    dmesg_bad=$((dmesg_bad + n))
    echo "vm-init: FAIL: $n kernel problem line(s) in dmesg after $1:"
    echo "$hits" | sed 's/^/vm-init: dmesg: /'
  else
    echo "vm-init: dmesg after $1: no WARNING/BUG/Oops/stall/lockup/lockdep line"
  fi
}
check_dmesg "boot"

set --
[ -f /cowprof-args ] && . /cowprof-args
if [ -x /cowprof-test ]; then
  COWPROF_VM_KERNEL="$KVER" /cowprof-test "$@"
  rc=$?
else
  echo "vm-init: /cowprof-test is missing or not executable"
  rc=127
fi
check_dmesg "/cowprof-test"
# Further tests (vm-matrix --after), e.g. unloading overlay.ko under a recording.
for a in /after.d/*; do
  [ -f "$a" ] || continue
  sh "$a" /cowprof-test
  arc=$?
  [ "$rc" = 0 ] && rc=$arc
  check_dmesg "$a"
done
# /out back to the host (vm-matrix --collect): a gzip'd tar in base64 between two marker lines,
# with kernel messages kept off the console meanwhile (dmesg was checked above).
if [ -d /out ]; then
  dmesg -n 1
  echo
  echo "COWPROF-OUT-BEGIN"
  tar -C /out -czf - . | base64
  echo "COWPROF-OUT-END"
fi
# Let the last console writes drain before the verdict, then the verdict on a line of its own.
sync
echo
echo "COWPROF-VM-VERDICT kernel=$KVER rc=$rc dmesg=$dmesg_bad"
poweroff -f
# Only reached if poweroff failed: exiting PID 1 panics, and panic=-1 + -no-reboot ends qemu.
exit "$rc"
