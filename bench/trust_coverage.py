"""Is a study's trust estimate honest? Its interval against the ground truth of a learning-curve table.

A study estimates how far its early scores predict the final ones from its audited trials (``ftstudy.trust``:
Spearman over a random sample of trials trained to the end, with a 95% percentile-bootstrap interval), and warns
(``EarlyScoresUntrusted``) when that interval reaches zero. Over a table of ``bench/curves.py`` every configuration
was trained to the end, so the Spearman of early and final validation accuracy over all of them is the truth the
estimate aims at. This draws, many times, what a study's audit would hold (``--audited`` configurations at random,
without replacement; never the baseline, as the audit never draws it), runs the study's own ``trust.estimate`` on
them, and counts:

- **coverage**: how often the interval holds the table's Spearman (a 95% interval should, about 95 times in 100);
- **warned**: how often the study would raise its warning (the interval's lower end at or below zero).

Pure computation over committed records; no training. Intervals on the shares are Wilson's, over the draws.

    .venv/bin/python bench/trust_coverage.py                      # main, long and confirm; 20% and 50%
    .venv/bin/python bench/trust_coverage.py --tables long --draws 100
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

from ftstudy import trust

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT / "bench" / "curves"


def pairs_of(table: str, fraction: float) -> list[tuple[int, float, float]]:
    """(trial, early, final) for every configuration of the table that is not the baseline."""
    rows = [json.loads(line) for line in (CURVES / f"{table}.jsonl").read_text().splitlines()[1:] if line.strip()]
    return [(r["trial"], float(r["validation"].get(str(fraction), 0.0)), float(r["validation"]["1.0"]))
            for r in rows if not r["baseline"] and r["validation"].get("1.0") is not None]  # fmt: skip


def wilson(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a share."""
    if n == 0:
        return 0.0, 1.0
    z, share = 1.96, hits / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def share(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{hits / n:.2f} [{low:.2f}, {high:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default="main,long,confirm")
    parser.add_argument("--fractions", default="0.2,0.5")
    parser.add_argument("--audited", default="4,8,12,20", help="audited trials per study")
    parser.add_argument("--draws", type=int, default=1000, help="studies drawn per cell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"command: .venv/bin/python bench/trust_coverage.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"ftstudy.trust: {trust.RESAMPLES} resamples (a study shows an estimate from {trust.MIN_TRIALS} audited "
          f"trials; here from any number); {args.draws} draws per cell, seed {args.seed}")  # fmt: skip
    print()
    print("| table | early point | configurations | table's Spearman | audited | coverage of the 95% interval | "
          "warned (interval reaches 0) | median ends of the interval |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for table in args.tables.split(","):
        for fraction in (float(f) for f in args.fractions.split(",")):
            pairs = pairs_of(table, fraction)
            truth = trust.spearman([p[1] for p in pairs], [p[2] for p in pairs])
            assert truth is not None
            for audited in (int(a) for a in args.audited.split(",")):
                if audited > len(pairs):
                    continue
                rng = random.Random(f"{args.seed}-{table}-{fraction}-{audited}")
                covered = warned = defined = 0
                lows, highs = [], []
                for _ in range(args.draws):
                    found = trust.estimate(rng.sample(pairs, audited), k=5, minimum=audited)
                    if found is None or found.low is None or found.high is None:
                        continue
                    defined += 1
                    covered += found.low <= truth <= found.high
                    warned += found.untrusted
                    lows.append(found.low)
                    highs.append(found.high)
                median = f"[{statistics.median(lows):.2f}, {statistics.median(highs):.2f}]" if lows else "-"
                print(f"| {table} | {fraction:.0%} | {len(pairs)} | {truth:.2f} | {audited} | "
                      f"{share(covered, defined) if defined else '-'} | {share(warned, defined) if defined else '-'}"
                      f" | {median} |" + (f" ({args.draws - defined} draws without an interval)"
                                          if defined < args.draws else ""), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
