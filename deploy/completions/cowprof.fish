# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cowprof_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_cowprof_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cowprof_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cowprof_using_subcommand
    set -l cmd (__fish_cowprof_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cowprof -n "__fish_cowprof_needs_command" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_needs_command" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_needs_command" -s V -l version -d 'Print version'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "record" -d 'Attach to the kernel and print every copy-up and whiteout until Ctrl-C'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "top" -d 'A live view of copy-on-write activity (busiest containers, mounts, source layers, files per interval), or one plain table per interval for pipes'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "doctor" -d 'Show which backends this kernel allows and why, BTF, overlay symbols'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "demo" -d 'The main job on an embedded default: build a small overlay stack, record a scripted workload on it, print the events and the summary, check them against the upper dir'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "selftest" -d 'Run the default scenario under each backend this kernel allows and check every event against the upper directory (the VM matrix runs this in each kernel)'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "bench" -d 'The lab: build overlay2-style stacks on several filesystems, measure copy-up latency per op, file size and layer depth (plus kernel-side times), write DIR/results.json'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "compare" -d 'Regression gate: compare two `bench` results.json files metric by metric (bootstrap intervals from the histograms); exit 1 if a gated metric regressed beyond its threshold'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "image" -d 'Container images: import `docker save`/OCI archives, inspect layers, compare base images'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "clean" -d 'Remove what dead `bench` runs left: mounts, loop devices, images, directories, state'
complete -c cowprof -n "__fish_cowprof_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l backend -d 'Kernel mechanism (default: the best one this kernel allows; see `cowprof doctor`)' -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l pid -d 'Only this process (tgid)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l comm -d 'Only tasks whose comm is exactly this' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l cgroup -d 'Only this cgroup (v2): a path under /sys/fs/cgroup or a numeric cgroup id' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l mount -d 'Only events on the overlay mounted here' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l container -d 'Only this container\'s events (Docker name, full or short id): its processes, and writes through its overlay mount by host processes (those stay attributed to the host)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l containerd-socket -d 'containerd\'s API socket, for Kubernetes pod and container names (default: $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock; absent = names from cgroups and the Docker engine only)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l min-latency -d 'Only events at least this slow (e.g. 100us, 5ms)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l btf -d 'Kernel BTF to read structure offsets from [default: /sys/kernel/btf/vmlinux]; e.g. a file from a BTF archive for a kernel built without BTF. Overlay\'s types are then read from it, or from --btf-overlay' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l btf-overlay -d 'The overlay module\'s split BTF, whose base is the kernel BTF [default: /sys/kernel/btf/overlay, unless --btf is given]. Without overlay\'s types the kprobe backend works from vmlinux types alone (`doctor` lists what comes from where)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l duration -d 'Stop after this long (e.g. 10s, 2m)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l metrics-addr -d 'Serve Prometheus/OpenMetrics metrics on http://HOST:PORT/metrics (PORT alone binds 127.0.0.1; 0.0.0.0:PORT exposes them to the network)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l metrics-max-series -d 'Label sets (mount, container, pod, namespace, image, layer digest) with series of their own; the rest are counted under "other"' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l ringbuf-size -d 'Ring buffer size in bytes (advanced: a power of two, at least a page; default 4 MiB)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l canary-timeout -d 'Bound of the start-up check (canary) that proves the backend sees copy-ups and whiteouts before recording starts (default 20s; it ends as soon as it has seen them)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l json -d 'JSON lines (schema-versioned) instead of the table'
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -s q -l quiet -d 'Print nothing on stdout (a daemon serving --metrics-addr)'
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -l no-phases -d 'Do not split copy-ups into phases: fewer probes and less kernel work per copy-up (events and the summary then carry no phases)'
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand record" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l backend -d 'Kernel mechanism (default: the best one this kernel allows; see `cowprof doctor`)' -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l pid -d 'Only this process (tgid)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l comm -d 'Only tasks whose comm is exactly this' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l cgroup -d 'Only this cgroup (v2): a path under /sys/fs/cgroup or a numeric cgroup id' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l mount -d 'Only events on the overlay mounted here' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l container -d 'Only this container\'s events (Docker name, full or short id): its processes, and writes through its overlay mount by host processes (those stay attributed to the host)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l containerd-socket -d 'containerd\'s API socket, for Kubernetes pod and container names (default: $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock; absent = names from cgroups and the Docker engine only)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l min-latency -d 'Only events at least this slow (e.g. 100us, 5ms)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l btf -d 'Kernel BTF to read structure offsets from [default: /sys/kernel/btf/vmlinux]; e.g. a file from a BTF archive for a kernel built without BTF. Overlay\'s types are then read from it, or from --btf-overlay' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l btf-overlay -d 'The overlay module\'s split BTF, whose base is the kernel BTF [default: /sys/kernel/btf/overlay, unless --btf is given]. Without overlay\'s types the kprobe backend works from vmlinux types alone (`doctor` lists what comes from where)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l interval -d 'Refresh interval (e.g. 1s, 500ms)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l count -d 'Stop after this many intervals' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l sort -d 'Sort rows by (keys t, c, b switch it in the live view)' -r -f -a "time\t'Total copy-up/whiteout time in the interval'
count\t'Events in the interval'
bytes\t'Bytes copied up in the interval'"
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l rows -d 'Rows per table' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -l plain -d 'One plain table per interval, for pipes (the default when stdout is not a terminal)'
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cowprof -n "__fish_cowprof_using_subcommand doctor" -l btf -d 'Kernel BTF to read structure offsets from [default: /sys/kernel/btf/vmlinux]; e.g. a file from a BTF archive for a kernel built without BTF. Overlay\'s types are then read from it, or from --btf-overlay' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand doctor" -l btf-overlay -d 'The overlay module\'s split BTF, whose base is the kernel BTF [default: /sys/kernel/btf/overlay, unless --btf is given]. Without overlay\'s types the kprobe backend works from vmlinux types alone (`doctor` lists what comes from where)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand doctor" -l json
complete -c cowprof -n "__fish_cowprof_using_subcommand doctor" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand demo" -l backend -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand demo" -l json
complete -c cowprof -n "__fish_cowprof_using_subcommand demo" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand demo" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l backend -d 'Only this backend (default: every usable one)' -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l expect-chosen -d 'Fail unless `doctor` would choose this backend (checks backend detection per kernel)' -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l expect-backends -d 'Fail unless exactly these backends run (comma-separated): a backend this kernel cannot use is then a failure, not a skip' -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l storm -d 'Also run the lifecycle storm under each backend: N short-lived overlay stacks (half one at a time, half three at once), each mounted, written at once, unmounted and removed; every stack\'s events must match its upper dir exactly, on its own mount point' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l storm-backends -d 'Run the lifecycle storm only under these backends (comma-separated; default: every backend that runs)' -r -f -a "kprobe\t''
tracepoint\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l attempts-on-skips -d 'Up to N attempts in all for a scenario or storm run that only missed events while the kernel skipped runs of every copy of one of its programs (the one loss cowprof cannot avoid, and counts only as an upper bound, on kernels that run tracepoint programs preemptibly: see docs/backends.md, "Skipped program runs"). Every attempt is reported; a wrong, duplicate or dropped event, or a miss without such skips, fails at once' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l ctime-copies -d 'Attach N copies of each ctime program (1–3; default 3) where the kernel skips preempted programs (7.0 and later, tracepoint backend), for testing the checkers that count what every copy skipped: with one copy, storms lose events there' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l btf -d 'Kernel BTF to read structure offsets from [default: /sys/kernel/btf/vmlinux]; e.g. a file from a BTF archive for a kernel built without BTF. Overlay\'s types are then read from it, or from --btf-overlay' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l btf-overlay -d 'The overlay module\'s split BTF, whose base is the kernel BTF [default: /sys/kernel/btf/overlay, unless --btf is given]. Without overlay\'s types the kprobe backend works from vmlinux types alone (`doctor` lists what comes from where)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l tmpfs -d 'Build the stacks on a tmpfs of their own (needed where /tmp is not writable disk)'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l doctor -d 'Also print `doctor` first'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l compare-backends -d 'Where two or more backends run, print each one\'s events (JSON lines) and fail unless they agree exactly: kinds, mounts, paths, layers, syscalls (not times or pids)'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l expect-metacopy -d 'Fail unless the metacopy=on stack is part of every run (the kernel has metacopy)'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l accounted -d 'A storm passes when every event it did not deliver exactly is covered by a counted loss (`dropped`, or `ctime_skipped`: inode updates every ctime copy skipped), instead of only when it is exact; anything wrong, duplicated or from a removal still fails'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -l storm-only -d 'Run only the lifecycle storm, not the scenario (e.g. with `--accounted` under a test hook that loses events on purpose)'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand selftest" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l spec -d 'TOML spec of the matrix (default: the built-in one, about a minute)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l out -d 'Output directory for results.json' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l workdir -d 'Where the lab makes its run directory (cowprof-lab-<pid>)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l baseline -d 'Then compare the new results.json against this one (`cowprof compare`, reports and charts in DIR/compare); the exit code is the comparison\'s' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l confirm -d 'With --baseline: when the gate fails, measure again up to N times; fail only if every measurement fails it (a regression reproduces, a load burst rarely does)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l config -d 'Threshold file (default: ./.cowprof-ci.toml if it exists, else built-in gates)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l threshold -d 'Gate a metric, e.g. `p99=+10%`, `efficiency=-5%`, `bytes_copied=+0`, or a copy-up phase, `fsync.p50=+20%` (repeatable; replaces the config file\'s threshold of the same metric)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l image -d 'Instead of the spec\'s synthetic stack: first writes, chmods and unlinks of this image\'s own files on its real layer stack (an archive, imported first, or a digest/tag)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l store -d 'Layer store for --image' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l table -d 'What to print: `summary` (the copy-up curve, slowest cells, efficiency, what disagreed or was skipped) or `full` (every cell); results.json always holds every cell' -r -f -a "summary\t''
full\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l quick -d 'Tiny sizes and two repetitions (smoke tests)'
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l expect-kernel -d 'Exit 1 unless a backend attached and every copy-up cell\'s kernel-side count is exact (the VM matrix\'s check)'
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -l no-charts -d 'Write results.json only: no charts, no report.html'
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cowprof -n "__fish_cowprof_using_subcommand compare" -l config -d 'Threshold file (default: ./.cowprof-ci.toml if it exists, else built-in gates)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand compare" -l threshold -d 'Gate a metric, e.g. `p99=+10%`, `efficiency=-5%`, `bytes_copied=+0`, or a copy-up phase, `fsync.p50=+20%` (repeatable; replaces the config file\'s threshold of the same metric)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand compare" -l format -d 'Report format on stdout' -r -f -a "table\t''
markdown\t''
junit\t''
json\t''"
complete -c cowprof -n "__fish_cowprof_using_subcommand compare" -l out -d 'Also write compare.{md,txt,json}, compare-junit.xml and CDF charts (SVG, PNG) here' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand compare" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand compare" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -l store -d 'Layer store: layers unpacked by diffID, shared between images' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -f -a "import" -d 'Import a `docker save` archive or an OCI image layout (directory or tar) into the store'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -f -a "inspect" -d 'Per-layer adds/modifies/deletes, wasted bytes, efficiency and likely copy-ups'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -f -a "compare" -d 'Compare images side by side, with the same writes timed on each one\'s layer stack'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -f -a "forecast" -d 'Forecast a recorded workload\'s copy-ups on candidate images (docs/images.md, "Forecast")'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -f -a "ls" -d 'List imported images'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and not __fish_seen_subcommand_from import inspect compare forecast ls help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from import" -l max-layer-size -d 'Largest uncompressed layer accepted (bytes; K/M/G suffixes)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from import" -l max-entries -d 'Most entries accepted in one layer' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from import" -l store -d 'Layer store: layers unpacked by diffID, shared between images' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from import" -l json
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from import" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -l lab -d 'Predict copy-up cost from this `cowprof bench` results.json (else this host\'s calibration, measured once and cached in the store)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -l upper-fs -d 'The filesystem the calibration measures: dir (the store\'s own), tmpfs, ext4, xfs, btrfs' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -l store -d 'Layer store: layers unpacked by diffID, shared between images' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -l recalibrate -d 'Measure the cost model again even when the cached one still fits this environment'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -l json
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -l reps -d 'Repetitions of the largest-file rewrite (each on a fresh mount)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -l out -d 'Write compare.json and compare.svg here' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -l store -d 'Layer store: layers unpacked by diffID, shared between images' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -l no-run -d 'Skip the mounted workloads (static comparison only)'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -l json
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from compare" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l lab -d 'Predict copy-up cost from this `cowprof bench` results.json (else this host\'s calibration, measured once and cached in the store)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l upper-fs -d 'The filesystem the calibration measures: dir (the store\'s own), tmpfs, ext4, xfs, btrfs' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l runs -d 'Replays per image with --verify (fresh upper each); the median time is compared' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l realtime -d 'Calibrate and replay under `SCHED_FIFO` at this priority (1-99), so that other tasks on a busy host do not inflate the measured copy-up times (docs/images.md)' -r
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l out -d 'Write forecast.json and forecast.svg (.png) here' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l store -d 'Layer store: layers unpacked by diffID, shared between images' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l recalibrate -d 'Measure the cost model again even when the cached one still fits this environment'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l verify -d 'Replay the trace on each image\'s mounted layers and measure it (needs root)'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -l json
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from forecast" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from ls" -l store -d 'Layer store: layers unpacked by diffID, shared between images' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "import" -d 'Import a `docker save` archive or an OCI image layout (directory or tar) into the store'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Per-layer adds/modifies/deletes, wasted bytes, efficiency and likely copy-ups'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "compare" -d 'Compare images side by side, with the same writes timed on each one\'s layer stack'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "forecast" -d 'Forecast a recorded workload\'s copy-ups on candidate images (docs/images.md, "Forecast")'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List imported images'
complete -c cowprof -n "__fish_cowprof_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cowprof -n "__fish_cowprof_using_subcommand clean" -l workdir -d 'Also look for cowprof-lab-<pid> directories here (bench\'s --workdir)' -r -F
complete -c cowprof -n "__fish_cowprof_using_subcommand clean" -s v -l verbose -d 'More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more'
complete -c cowprof -n "__fish_cowprof_using_subcommand clean" -s h -l help -d 'Print help'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "record" -d 'Attach to the kernel and print every copy-up and whiteout until Ctrl-C'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "top" -d 'A live view of copy-on-write activity (busiest containers, mounts, source layers, files per interval), or one plain table per interval for pipes'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "doctor" -d 'Show which backends this kernel allows and why, BTF, overlay symbols'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "demo" -d 'The main job on an embedded default: build a small overlay stack, record a scripted workload on it, print the events and the summary, check them against the upper dir'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "selftest" -d 'Run the default scenario under each backend this kernel allows and check every event against the upper directory (the VM matrix runs this in each kernel)'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "bench" -d 'The lab: build overlay2-style stacks on several filesystems, measure copy-up latency per op, file size and layer depth (plus kernel-side times), write DIR/results.json'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "compare" -d 'Regression gate: compare two `bench` results.json files metric by metric (bootstrap intervals from the histograms); exit 1 if a gated metric regressed beyond its threshold'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "image" -d 'Container images: import `docker save`/OCI archives, inspect layers, compare base images'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "clean" -d 'Remove what dead `bench` runs left: mounts, loop devices, images, directories, state'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and not __fish_seen_subcommand_from record top doctor demo selftest bench compare image clean help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "import" -d 'Import a `docker save` archive or an OCI image layout (directory or tar) into the store'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "inspect" -d 'Per-layer adds/modifies/deletes, wasted bytes, efficiency and likely copy-ups'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "compare" -d 'Compare images side by side, with the same writes timed on each one\'s layer stack'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "forecast" -d 'Forecast a recorded workload\'s copy-ups on candidate images (docs/images.md, "Forecast")'
complete -c cowprof -n "__fish_cowprof_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "ls" -d 'List imported images'
