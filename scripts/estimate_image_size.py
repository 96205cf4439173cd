"""Estimate the installed size of the qosched image's Python packages, without a container engine.

Walks the runtime dependency closure of ``qosched`` (its ``install_requires``, not the ``dev`` or
``profiler`` extras) through ``importlib.metadata`` in the current environment and sums the
sizes recorded in each distribution's RECORD. The image is this plus the base image
(``python:3.11-slim-bookworm``, whose size the caller states: it is not measurable here).

    .venv/bin/python scripts/estimate_image_size.py [--extra profiler]
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata

from packaging.requirements import Requirement


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def closure(root: str, extras: set[str]) -> dict[str, metadata.Distribution]:
    """Every distribution ``root`` needs at run time, with ``extras`` of the root only."""
    seen: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, set[str]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        dist = _dist(name)
        if dist is None or key in seen:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            # A requirement counts when its marker holds for no extra or for a wanted extra.
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *wanted}):
                todo.append((req.name, set()))
    return seen


def installed_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        if f.size is not None:
            total += int(f.size)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extra", action="append", default=[], help="extras of qosched to include")
    args = ap.parse_args()
    dists = closure("qosched", set(args.extra))
    rows = sorted(((installed_bytes(d), k) for k, d in dists.items()), reverse=True)
    total = sum(b for b, _ in rows)
    for size, key in rows[:15]:
        print(f"{key:<28} {size / 2**20:8.1f} MiB")
    print(f"{len(rows)} distributions, {total / 2**20:.0f} MiB installed")


if __name__ == "__main__":
    main()
