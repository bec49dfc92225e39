#!/usr/bin/env python3
"""Process-tree resource probe (Linux /proc only, no psutil).

  proctree.py snap PID            -> JSON: cpu_s (utime+stime of the tree), rss_mb (sum VmRSS),
                                     hwm_mb (sum of per-process VmHWM = kernel-tracked peaks), nproc
  proctree.py monitor PID OUTFILE [interval_s]
                                  -> samples the tree until PID exits or SIGTERM; keeps
                                     OUTFILE updated with {"peak_rss_mb":..,"peak_hwm_mb":..}
Tree = PID plus all descendants (workers of a multi-process server).
"""

import json
import os
import signal
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")


def children_map():
    m = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2 :].split()[1])
            m.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            pass
    return m


def tree(pid):
    m = children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(m.get(p, []))
    return out


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
    except (OSError, ValueError):
        return 0.0


def snap(pid):
    pids = tree(pid)
    return {
        "cpu_s": round(sum(cpu_s(p) for p in pids), 3),
        "rss_mb": round(sum(status_kb(p, "VmRSS") for p in pids) / 1024, 1),
        "hwm_mb": round(sum(status_kb(p, "VmHWM") for p in pids) / 1024, 1),
        "nproc": len(pids),
    }


def monitor(pid, outfile, interval):
    peak = {"peak_rss_mb": 0.0, "peak_hwm_mb": 0.0, "samples": 0}
    stop = False

    def handler(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop and os.path.exists(f"/proc/{pid}"):
        s = snap(pid)
        peak["peak_rss_mb"] = max(peak["peak_rss_mb"], s["rss_mb"])
        peak["peak_hwm_mb"] = max(peak["peak_hwm_mb"], s["hwm_mb"])
        peak["nproc"] = s["nproc"]
        peak["samples"] += 1
        tmp = outfile + ".tmp"
        with open(tmp, "w") as f:
            json.dump(peak, f)
        os.replace(tmp, outfile)
        time.sleep(interval)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "snap":
        print(json.dumps(snap(int(sys.argv[2]))))
    elif len(sys.argv) >= 4 and sys.argv[1] == "monitor":
        monitor(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.2)
    else:
        sys.exit(__doc__)
