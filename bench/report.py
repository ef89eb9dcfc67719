"""Prints the Markdown tables of docs/performance.md from target/bench/*.json."""
import glob
import json
import os

root = os.path.join(os.path.dirname(__file__), "..")


def load(name):
    path = os.path.join(root, "target/bench", name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def row(label, r):
    cpu = r["cpu_s"]
    base = r["baseline_hops_per_s"]
    return (f"| {label} | {r['cases']:,} | {r['cases_per_s']:.1f} | {r['wangban_hops_per_s']:,.0f} | "
            f"{'-' if base is None else f'{base:,.0f}'} | {'-' if r['ratio'] is None else r['ratio']} | "
            f"{r['p99_hop_ms']:.1f} | {r['e2e_p50_ms'] / 1000:.2f} / {r['e2e_p99_ms'] / 1000:.2f} | "
            f"{r['max_rss_mib']:.1f} | {cpu['broker']:.0f} / {cpu['database']:.0f} / {cpu['workers']:.0f} of {2 * cpu['wall']:.0f} |")


print("| run | cases | cases/s | hops/s | baseline hops/s | ratio | p99 hop ms | e2e p50 / p99 s | max RSS MiB | CPU s broker / db / workers |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for name, label in [("n1k", "N = 1k, 1 process per worker"), ("n10k", "N = 10k, 1 process per worker"),
                    ("n100k", "N = 100k, 1 process per worker"), ("r2", "N = 2k, 2 processes per worker"),
                    ("r4", "N = 2k, 4 processes per worker"), ("embedded", "N = 10k, embedded")]:
    r = load(name)
    if r:
        print(row(label, r))
rates = sorted(filter(None, (load(os.path.basename(p)[:-5]) for p in glob.glob(os.path.join(root, "target/bench/rate*.json")))),
               key=lambda r: r["offered_cases_per_s"])
for r in rates:
    print(row(f"offered {r['offered_cases_per_s']:.0f} cases/s", r))
c = load("celery")
if c:
    print()
    print(f"Celery peer: {c['chains']:,} chains of {c['stages']} stages in {c['seconds']} s: "
          f"{c['chains_per_s']} chains/s, {c['hops_per_s']:.0f} hop deliveries/s.")
