#!/bin/busybox sh
# vm-matrix --after script (busybox sh, in the guest; $1 = the cowprof binary): loop-mounts the
# ext4 image /extra/ext4.img (made on the host by scripts/bench --vm-lab), runs the lab spec
# /extra/vm-bench-ext4.toml on it with kernel-side timings (--expect-kernel), and prints the
# results.json base64-encoded between the lines COWPROF-RESULTS-BEGIN and COWPROF-RESULTS-END,
# for the host to cut out of the console log. Exit: bench's, or 1 if the image cannot be mounted.
bin=$1
img=/tmp/ext4.img
cp /extra/ext4.img "$img" || { echo "vm-bench-ext4: cannot copy the image to /tmp"; exit 1; }
mkdir -p /mnt/ext4
if ! mount -t ext4 -o loop "$img" /mnt/ext4; then
  echo "vm-bench-ext4: cannot loop-mount $img as ext4 (is /loop.ko packed?)"
  rm -f "$img"
  exit 1
fi
"$bin" bench --spec /extra/vm-bench-ext4.toml --workdir /mnt/ext4 --out /tmp/cowprof-bench \
  --no-charts --expect-kernel
rc=$?
if [ -f /tmp/cowprof-bench/results.json ]; then
  echo "COWPROF-RESULTS-BEGIN"
  base64 /tmp/cowprof-bench/results.json
  echo "COWPROF-RESULTS-END"
fi
umount /mnt/ext4 || rc=1
rm -f "$img"
exit "$rc"
