"""Draw ``docs/img/bench-cpu.png`` from ``docs/bench-cpu.json`` (the output of ``nbbn bench``).

Run from the repository root after a new benchmark run (needs matplotlib)::

    python docs/scripts/plot_bench.py [--json docs/bench-cpu.json] [-o docs/img/bench-cpu.png]

Every number drawn is read from the JSON file; nothing is typed in here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[2]
OPS = (("stats", "RunningStats.update"), ("normalizer", "Normalizer(out=)"),
       ("batchnorm_train", "BatchNorm training"))


def _label(r: dict) -> str:
    shape = "x".join(str(n) for n in r["shape"])
    return f"{shape}\n{r['dtype']} {r['layout']}"


def draw(bench: dict, out: Path) -> Path:
    """Write the three-panel figure for one ``nbbn bench --json`` result to ``out``."""
    results = bench["results"]
    keys = list(dict.fromkeys((tuple(r["shape"]), r["dtype"], r["layout"]) for r in results))
    by = {(tuple(r["shape"]), r["dtype"], r["layout"], r["op"]): r for r in results}
    labels = [_label(by[(*k, "stats")]) for k in keys]
    y = np.arange(len(keys))[::-1].astype(float)
    h = 0.26

    fig = Figure(figsize=(13, 1.1 * len(keys) + 1.6), layout="constrained")
    ax_gbps, ax_pct, ax_speed = fig.subplots(1, 3, sharey=True)
    for i, (op, name) in enumerate(OPS):
        rows = [by.get((*k, op)) for k in keys]
        off = (1 - i) * h
        gbps = [r["gbps"] if r and r["gbps"] else np.nan for r in rows]
        pct = [r["pct_bw_paired"] if r and r.get("pct_bw_paired") else np.nan for r in rows]
        ax_gbps.barh(y + off, gbps, height=h, color=f"C{i}", label=name)
        ax_pct.barh(y + off, pct, height=h, color=f"C{i}", label=name)
    ax_pct.axvline(80, color="k", lw=0.8, ls="--")
    ax_pct.text(80, y.min() - 0.6, " 80%", va="bottom", fontsize=8)

    stats = [by[(*k, "stats")] for k in keys]
    for j, (peer, color) in enumerate((("numpy", "C4"), ("torch", "C5"))):
        vals = [r.get(f"speedup_{peer}") or np.nan for r in stats]
        ax_speed.barh(y + (0.5 - j) * 0.36, vals, height=0.36, color=color,
                      label=f"vs {peer}")
    ax_speed.set_xscale("log")
    ax_speed.set_xlim(left=1)
    ax_speed.axvline(10, color="k", lw=0.8, ls="--")
    ax_speed.text(10, y.min() - 0.6, " 10x", va="bottom", fontsize=8)

    ax_gbps.set_yticks(y, labels, fontsize=8)
    ax_gbps.set_xlabel("GB/s (bytes the op must move)")
    ax_gbps.set_title("throughput", fontsize=10)
    ax_pct.set_xlabel("% of the bandwidth measured in the same moment (% pair)")
    ax_pct.set_title("share of memory bandwidth", fontsize=10)
    ax_speed.set_xlabel("speed-up of RunningStats.update (log scale)")
    ax_speed.set_title("statistics vs numpy and torch", fontsize=10)
    for ax in (ax_gbps, ax_pct, ax_speed):
        ax.grid(True, axis="x", alpha=0.3)
    ax_gbps.legend(fontsize=8, loc="lower right")
    ax_speed.legend(fontsize=8, loc="lower right")
    env = bench["env"]
    fig.suptitle(
        f"nbbn bench, {env['date'][:10]}: {env['cpu']}, {env['cpu_count']} cores,"
        f" numba {env['numba']}, numpy {env['numpy']}, torch {env['torch']}"
        f" (median of {bench['repeats']} calls)",
        fontsize=10,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-cpu.json")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "img" / "bench-cpu.png")
    args = p.parse_args()
    print(f"wrote {draw(json.loads(args.json.read_text()), args.output)}")


if __name__ == "__main__":
    main()
