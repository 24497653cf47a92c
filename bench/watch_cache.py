"""What a study's pass pays to read its Jobs and pods from the operator's watch copy (``ftstudy.kube.watch_cache``),
with the copy indexed by study UID and Job name against the whole-copy scan it replaced, at the same size.

The copy holds every Job and pod the operator has (``--studies`` studies with ``--objects`` Jobs and as many pods
each: ended Jobs stay up to ``cleanup.finishedJobsSeconds``). One study's pass reads its trial Jobs, their pods and
one helper Job's pods (three reads, the selectors ``ftstudy.kube.executor`` uses); a round is one pass of every
study, as a poll of all studies makes. Both variants read the same copy in the same process, alternating, several
repeats; printed: the median time per round of each, their ratio, and that both returned the same objects.

    .venv/bin/python bench/watch_cache.py
    .venv/bin/python bench/watch_cache.py --studies 100 --objects 20 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from ftstudy.kube import names, watch_cache
from ftstudy.kube.watch_cache import WatchCache


def fill(cache: WatchCache, studies: int, objects: int) -> None:
    version = 0
    for s in range(studies):
        uid = f"study-{s:04d}"
        for n in range(objects):
            job = f"s{s}-t{n}-a1"
            labels = names.labels(f"s{s}", uid, n, 1, "identity", "key")
            for kind, extra in (("job", {}), ("pod", {"job-name": job})):
                version += 1
                cache.put({"metadata": {"uid": f"{kind}-{s}-{n}", "namespace": "ml", "name": job,
                                        "labels": labels | extra, "resourceVersion": str(version)}})  # fmt: skip


def round_of_passes(cache: WatchCache, studies: int) -> list[Any]:
    seen = []
    for s in range(studies):
        trials = names.study_selector(f"study-{s:04d}")
        seen.append(len(cache.items("ml", trials) or []))
        seen.append(len(cache.items("ml", f"{names.MANAGED_BY}={names.OPERATOR},job-name=s{s}-t0-a1") or []))
        seen.append(len(cache.items("ml", f"{trials},{names.TRIAL}=1") or []))
    return seen


def timed(cache: WatchCache, studies: int, indexed: bool) -> tuple[float, list[Any]]:
    keys = watch_cache.INDEXED
    watch_cache.INDEXED = keys if indexed else ()  # read by items(); the index itself stays built
    try:
        started = time.perf_counter()
        seen = round_of_passes(cache, studies)
        return time.perf_counter() - started, seen
    finally:
        watch_cache.INDEXED = keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--objects", type=int, default=20, help="Jobs per study (and as many pods)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cache = WatchCache(None, "batch", "v1", "jobs", ["ml"])  # type: ignore[arg-type]  # never started: no API
    cache._synced.add("ml")
    fill(cache, args.studies, args.objects)
    scans, indexed = [], []
    for _ in range(args.repeats):
        seconds, by_scan = timed(cache, args.studies, indexed=False)
        scans.append(seconds)
        seconds, by_index = timed(cache, args.studies, indexed=True)
        indexed.append(seconds)
        assert by_scan == by_index, "the indexed read returned other objects than the scan"
    scan, index = statistics.median(scans), statistics.median(indexed)
    print(
        f"copy: {len(cache._objects)} objects ({args.studies} studies x {args.objects} Jobs and pods); one round = "
        f"{args.studies} passes x 3 reads; median of {args.repeats}"
    )
    print(f"scan (baseline): {scan * 1000:.1f} ms per round, {scan / args.studies * 1e6:.0f} us per pass")
    print(f"indexed:         {index * 1000:.1f} ms per round, {index / args.studies * 1e6:.0f} us per pass")
    print(f"indexed / scan:  {index / scan:.3f}; same objects read: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
