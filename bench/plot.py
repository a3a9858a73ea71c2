"""Summarise bench/results/*.csv: the latest run of each (bench, device, shape) as a table of
median ms and speed-up over the first provider; with matplotlib installed, also a bar chart
per bench (bench/results/<bench>_<device>.png).

    python bench/plot.py [--results DIR]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def latest_runs(path: Path) -> list[dict]:
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return []
    last = max(r["timestamp"][:16] for r in rows)  # rows of the newest run (same minute)
    return [r for r in rows if r["timestamp"][:16] == last]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=str(RESULTS))
    a = p.parse_args()
    for path in sorted(Path(a.results).glob("*.csv")):
        rows = latest_runs(path)
        if not rows:
            continue
        print(
            f"\n{path.name}: {rows[0]['device']} (torch {rows[0]['torch']}, "
            f"triton {rows[0]['triton']}, commit {rows[0]['commit']})"
        )
        groups = defaultdict(list)
        for r in rows:
            groups[(r["shape"], r["mode"])].append(r)
        for (shape, mode), rs in groups.items():
            timed = [r for r in rs if r["median_ms"]]
            base = float(timed[0]["median_ms"]) if timed else None
            for r in rs:
                ms = float(r["median_ms"]) if r["median_ms"] else None
                speed = f"{base / ms:6.2f}x" if ms and base else "     -"
                mem = f"{int(r['peak_mem_bytes']) / 1e6:9.1f} MB" if r["peak_mem_bytes"] else ""
                print(
                    f"  {shape:<26}{mode:<8}{r['provider']:<20}"
                    f"{(f'{ms:.3f} ms' if ms else '-'):>12} {speed} {mem} {r['note']}"
                )
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [f"{r['provider']}\n{r['mode']}" for r in rows if r["median_ms"]]
        ax.bar(labels, [float(r["median_ms"]) for r in rows if r["median_ms"]])
        ax.set_ylabel("median ms")
        ax.set_title(f"{path.stem} on {rows[0]['device']}")
        plt.xticks(rotation=60, fontsize=7)
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"))
        plt.close(fig)


if __name__ == "__main__":
    main()
