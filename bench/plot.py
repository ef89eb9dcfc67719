"""Draws docs/performance.png from target/bench/rate*.json (and the unpaced n*.json runs):
cases/s achieved and p99 handling latency per hop against the offered load."""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

root = os.path.join(os.path.dirname(__file__), "..")
runs = []
for path in glob.glob(os.path.join(root, "target/bench/rate*.json")):
    with open(path) as f:
        r = json.loads(f.read().strip().splitlines()[-1])
    runs.append(r)
if not runs:
    sys.exit("no target/bench/rate*.json: run scripts/bench-matrix.sh first")
runs.sort(key=lambda r: r["offered_cases_per_s"])
offered = [r["offered_cases_per_s"] for r in runs]
achieved = [r["cases_per_s"] for r in runs]
p99 = [r["p99_hop_ms"] for r in runs]
e2e = [r["e2e_p99_ms"] / 1000 for r in runs]

fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
a.plot(offered, achieved, "o-", label="achieved (cases/s)")
a.plot(offered, offered, ":", color="grey", label="offered = achieved")
a.set_xlabel("offered load (cases/s)")
a.set_ylabel("cases/s end to end")
a.set_title("Throughput")
a.legend()
a.grid(alpha=0.3)
b.plot(offered, p99, "o-", color="tab:red", label="p99 handling per hop (ms)")
b.axhline(20, ls="--", color="grey", label="target 20 ms")
b.set_xlabel("offered load (cases/s)")
b.set_ylabel("ms")
b.set_title("Latency")
b2 = b.twinx()
b2.plot(offered, e2e, "s--", color="tab:purple", label="p99 end to end per case (s)")
b2.set_ylabel("s")
lines = b.get_legend_handles_labels()
lines2 = b2.get_legend_handles_labels()
b.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left")
b.grid(alpha=0.3)
fig.suptitle("wangban on RabbitMQ + PostgreSQL, 2 cores (1,000 cases per point)")
fig.tight_layout()
out = os.path.join(root, "docs/performance.png")
fig.savefig(out, dpi=110)
print(out)
