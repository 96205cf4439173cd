"""``qosched demo``: the main job on the embedded default, end to end over HTTP.

Starts the real extender (``qosched serve`` under gunicorn) on 127.0.0.1 on the bundled demo
snapshot, then plays kube-scheduler for each pending pod of the snapshot, in file order:
``POST /filter`` with every node name (nodeCacheCapable), ``POST /prioritize`` on the nodes that
passed, picks the highest score (ties: the first, kube-scheduler picks randomly among ties), and
``POST /bind``. Prints where each pod went, on which device, the predicted latency, and why the
other nodes were rejected (one line per reason code, with the closest node's numbers); for a pod
no node fits, every node's reason with its numbers (``GET /explain``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import click
import orjson
import requests
from rich.console import Console
from rich.table import Table

from qosched.extender.kube.cache import load_snapshot
from qosched.extender.kube.objects import A_MODEL, A_RATE_RPS, A_SLO_MS, annotations_of, pod_node


def demo_snapshot_path() -> Path:
    return Path(str(resources.files("qosched.extender") / "demo" / "demo-cluster.yaml"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the extender exited with code {proc.returncode} before it was ready")
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise click.ClickException(f"the extender did not become ready within {timeout_s:.0f} s")


def _post(session: requests.Session, url: str, body: dict[str, Any]) -> Any:
    r = session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)
    if r.status_code != 200:
        raise click.ClickException(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
    return orjson.loads(r.content)


def _why(failed: dict[str, str]) -> str:
    if not failed:
        return "every node fits"
    counts = Counter(msg.split(": ", 1)[-1] for msg in failed.values())
    return "; ".join(f"{n}× {reason}" for reason, n in counts.most_common())


def _explain(session: requests.Session, base: str, meta: dict[str, Any]) -> dict[str, str]:
    """Node → why it rejects the pod, with numbers (``GET /explain``); {} when it cannot say."""
    params = {"namespace": meta.get("namespace", "default"), "pod": meta["name"]}
    r = session.get(base + "/explain", params=params, timeout=10)
    if r.status_code != 200:
        return {}
    nodes = orjson.loads(r.content).get("nodes") or {}
    return {
        node: f"{why['message']}: {why['detail']}" if why.get("detail") else why["message"]
        for node, why in nodes.items()
    }


def schedule_pending(base: str, snapshot: Path, console: Console) -> list[dict[str, Any]]:
    """Drive the extender like kube-scheduler for every pending pod of ``snapshot``."""
    nodes, pods = load_snapshot(snapshot)
    names = [str(n["metadata"]["name"]) for n in nodes]
    pending = [p for p in pods if pod_node(p) is None]
    rows: list[dict[str, Any]] = []
    with requests.Session() as session:
        for pod in pending:
            meta = pod["metadata"]
            args = {"Pod": pod, "Nodes": None, "NodeNames": names}
            t0 = time.perf_counter()
            filtered = _post(session, base + "/filter", args)
            kept = filtered.get("NodeNames") or []
            failed = {
                **(filtered.get("FailedNodes") or {}),
                **(filtered.get("FailedAndUnresolvableNodes") or {}),
            }
            row: dict[str, Any] = {
                "pod": meta["name"],
                "namespace": meta.get("namespace", "default"),
                "annotations": annotations_of(pod),
                "why": _why(failed),
            }
            if filtered.get("Error"):
                row.update(node="-", error=filtered["Error"])
            elif not kept:
                row.update(node="-", error="no node fits", nodes=_explain(session, base, meta))
            else:
                scores = _post(session, base + "/prioritize", {"Pod": pod, "Nodes": None, "NodeNames": kept})
                best = max(scores, key=lambda h: h["Score"])  # first of the highest
                bound = _post(
                    session,
                    base + "/bind",
                    {
                        "PodName": meta["name"],
                        "PodNamespace": meta["namespace"],
                        "PodUID": meta["uid"],
                        "Node": best["Host"],
                    },
                )
                row.update(node=best["Host"], score=best["Score"], error=bound.get("Error", ""))
            row["ms"] = (time.perf_counter() - t0) * 1000
            rows.append(row)
    return rows


def ann_ns(row: dict[str, Any]) -> str:
    return str(row.get("namespace", "default"))


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


@click.command("demo")
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Snapshot to serve (default: the bundled demo cluster).",
)
@click.option("--policy", default="qosched", show_default=True, help="Placement policy the extender runs.")
@click.option("--port", default=0, type=int, help="Port (default: a free one).")
def demo(cluster_file: str | None, policy: str, port: int) -> None:
    """Start the extender on the demo snapshot and schedule its pending pods over HTTP."""
    # At most 100 columns, terminal or not (a log or CI keeps the same shape); the reasons column
    # folds instead of widening the table.
    console = Console(width=min(Console().width, 100) if Console().is_terminal else 100)
    snapshot = Path(cluster_file) if cluster_file else demo_snapshot_path()
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "qosched.extender.cli.main",
        "serve",
        "--cluster",
        str(snapshot),
        "--port",
        str(port),
        "--policy",
        policy,
    ]
    console.print(
        f"[bold]qosched demo[/bold]: extender on {base} (gunicorn, policy [cyan]{policy}[/cyan]), cluster {snapshot.name}"
    )
    env = {**os.environ, "QOSCHED_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_ready(base, proc)
        rows = schedule_pending(base, snapshot, console)
        placed = requests.get(base + "/placements", timeout=5)
        details = orjson.loads(placed.content) if placed.status_code == 200 else {}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    table = Table(title=f"Placements by policy {policy!r}", show_lines=False)
    for col in ("pod", "model", "rps", "SLO ms", "node", "dev", "pred ms", "score"):
        # Pod names are the key a reader (and the test) looks rows up by: never folded.
        table.add_column(col, no_wrap=col == "pod", overflow="fold")
    for row in rows:
        ann = row["annotations"]
        detail = details.get(f"{ann_ns(row)}/{row['pod']}", {})
        node = row["node"] if not row.get("error") else f"[red]{row.get('error')}[/red]"
        table.add_row(
            row["pod"],
            detail.get("model") or ann.get(A_MODEL, "-"),
            ann.get(A_RATE_RPS, "-"),
            ann.get(A_SLO_MS, "-"),
            node,
            ",".join(str(d) for d in detail.get("devices", [])) or "-",
            _fmt_ms(detail.get("predicted_latency_ms")),
            str(row.get("score", "-")),
        )
    console.print(table)
    # The reasons under the table, one pod per line: a column of them would not fit 100 columns.
    console.print("[bold]Why the other nodes were rejected[/bold]")
    for row in rows:
        console.print(f"  [cyan]{row['pod']}[/cyan]: {row['why']}", overflow="fold")
    for row in rows:  # a pod no node fits: every node's reason (GET /explain)
        if row.get("nodes"):
            console.print(f"[bold]Why no node fits [cyan]{row['pod']}[/cyan], node by node[/bold]")
            for node, why in row["nodes"].items():
                console.print(f"  {node}: {why}", overflow="fold")
    ok = sum(1 for r in rows if not r.get("error"))
    console.print(
        f"{ok}/{len(rows)} pods bound; mean {sum(r['ms'] for r in rows) / max(1, len(rows)):.1f} ms per pod (filter+prioritize+bind over HTTP)"
    )
