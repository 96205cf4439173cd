#!/usr/bin/env python3
"""Derive the REQUESTS.csv and NETWORK.csv of an end–edge–cloud request-level what-if.

Arrivals: the real Azure LLM inference trace 2023 (``../shared/data/azure-llm-2023``; timestamps
only, CC-BY 4.0, Patel et al., ISCA 2024): service ``classify`` takes the conversation trace,
``classify-hd`` the code trace; a window of ``--duration-s × --speedup`` seconds from
``--offset-s`` is compressed ``--speedup`` times (``qosched.policies.requests.arrivals.
scale_arrivals``), keeping the bursts and lulls and multiplying the rate.

Network: ``--network shipped`` writes the shipped trace (cloud uplink drops to 8 Mbit/s at
180-240 s, the edge link saturates at 90-150 s); ``--network random --seed N`` draws one with
``synthetic_network`` (degraded spells on every tier), for scenarios the repo does not ship.

The shipped files (extender/demo/edge-cloud/) were made with::

    .venv/bin/python scripts/edge_cloud_scenario.py --out extender/demo/edge-cloud
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from pathlib import Path

import numpy as np

from qosched.policies.requests.arrivals import scale_arrivals, synthetic_network
from qosched.policies.requests.scenario import Link

AZURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "azure-llm-2023"
#: service -> trace file (the shipped cluster defines these two services).
SERVICES = {"classify": "AzureLLMInferenceTrace_conv.csv", "classify-hd": "AzureLLMInferenceTrace_code.csv"}
#: The links of the shipped cluster's node annotations (t = 0 of the network trace).
NOMINAL = {"end": Link(0.5, 1000.0), "edge": Link(10.0, 100.0), "cloud": Link(40.0, 200.0)}
SHIPPED_NETWORK = [
    (0.0, "end", NOMINAL["end"]),
    (0.0, "edge", NOMINAL["edge"]),
    (0.0, "cloud", NOMINAL["cloud"]),
    (90.0, "edge", Link(60.0, 12.0)),
    (150.0, "edge", NOMINAL["edge"]),
    (180.0, "cloud", Link(45.0, 8.0)),
    (240.0, "cloud", NOMINAL["cloud"]),
]


def read_timestamps_s(path: Path) -> np.ndarray:
    """Seconds since the first row of an Azure LLM trace file (TIMESTAMP column, 100 ns resolution)."""
    with path.open(newline="") as fh:
        stamps = [dt.datetime.fromisoformat(row["TIMESTAMP"][:26]) for row in csv.DictReader(fh)]
    t0 = stamps[0]
    return np.array([(s - t0).total_seconds() for s in stamps])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--azure-dir", type=Path, default=AZURE)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--duration-s", type=float, default=300.0)
    ap.add_argument("--speedup", type=float, default=10.0)
    ap.add_argument("--offset-s", type=float, default=0.0)
    ap.add_argument("--network", choices=["shipped", "random"], default="shipped")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[float, str]] = []
    for service, name in SERVICES.items():
        times = scale_arrivals(
            read_timestamps_s(args.azure_dir / name), args.offset_s, args.duration_s, args.speedup
        )
        rows += [(float(t), service) for t in times]
    rows.sort()
    with (args.out / "requests.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_s", "service"])
        w.writerows((f"{t:.4f}", s) for t, s in rows)
    if args.network == "shipped":
        net = SHIPPED_NETWORK
    else:
        net = synthetic_network(np.random.default_rng(args.seed), NOMINAL, args.duration_s)
    with (args.out / "network.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_s", "tier", "rtt_ms", "bandwidth_mbps"])
        w.writerows(
            (f"{t:g}", tier, f"{link.rtt_ms:.3f}", f"{link.bandwidth_mbps:.3f}") for t, tier, link in net
        )
    print(
        f"wrote {args.out}/requests.csv ({len(rows)} requests) and {args.out}/network.csv ({len(net)} rows)"
    )


if __name__ == "__main__":
    main()
