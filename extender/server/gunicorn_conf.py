"""gunicorn settings for the extender: ONE worker process with threads, no preload.

Why one process: the cluster cache and the assumed (bound, not yet watched) pods must be shared
by every request, or two workers could both hand the same device to two pods. Threads (gthread)
still overlap the blocking parts (the bind's API call, the watch) with request handling.
Why no preload: ``create_app`` starts the watch thread, and threads do not survive a fork.
Production: ``gunicorn -c python:qosched.extender.server.gunicorn_conf 'qosched.extender.server.app:create_app()'``
(settings reach ``create_app`` through ``QOSCHED_*`` environment variables).
"""

import contextlib
import gc
import os
import signal
import sys
from typing import Any

bind = os.environ.get("QOSCHED_BIND", "127.0.0.1:8888")
workers = 1
worker_class = "gthread"
# kube-scheduler calls one pod at a time; a few threads cover filter/prioritize/bind overlap,
# /metrics scrapes, probes and profile uploads.
threads = int(os.environ.get("QOSCHED_THREADS", "8"))
preload_app = False
# kube-scheduler's HTTP client keeps connections alive; keep them open across scheduling cycles
# instead of paying a TCP handshake per verb.
keepalive = 75
# A hung worker is restarted by gunicorn after this long without a heartbeat.
timeout = 60
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = os.environ.get("QOSCHED_LOG_LEVEL", "info")


def _no_keepalive_linger_on_stop() -> None:
    """Close idle kept-alive connections at once when the worker stops.

    gunicorn's gthread worker keeps them up to ``STOP_KEEPALIVE_LINGER`` (2 s) after SIGTERM, so a
    stop with kube-scheduler's idle connection open took 2.5 s (measured). The pod is going away:
    a verb racing in on such a connection fails as it would a moment later, and kube-scheduler
    retries the pod. Requests in flight still finish within ``graceful_timeout``.
    """
    from gunicorn.workers import gthread

    if hasattr(gthread, "STOP_KEEPALIVE_LINGER"):
        gthread.STOP_KEEPALIVE_LINGER = 0.0


def _wake_on_term(worker: Any) -> None:
    """Wake the gthread worker's event loop on SIGTERM instead of at its next 1 s poll timeout.

    gunicorn's handler only sets ``alive = False``; the loop notices when its ``select`` (1 s,
    restarted after the signal) returns. One byte on the worker's own wake-up pipe makes it
    return at once. ``os.write`` is safe in a signal handler (no lock is taken).
    """
    wake_fd = getattr(getattr(worker, "method_queue", None), "_write_fd", None)
    if wake_fd is None:
        return

    def on_term(sig: int, frame: Any) -> None:
        worker.handle_exit(sig, frame)
        with contextlib.suppress(OSError):
            os.write(wake_fd, b"\0")

    signal.signal(signal.SIGTERM, on_term)


#: The worker's GIL switch interval [s] (CPython's default: 5 ms). kube-scheduler binds
#: asynchronously: a pod's bind reaches the extender while the next pods' filters run, and it must
#: reserve its node before a later filter whose sample overlaps reads the state, or both pods may
#: be sent to the same single best node and the second bind is refused ("no longer fits", a backoff
#: of 1 s or more). With 5 ms a waiting bind could sit behind a whole filter; with 0.5 ms it gets
#: the GIL within half a millisecond. Measured (bench_scheduler_loop, same runs, 7 pairs):
#: refused binds 25 -> 8 per 7 runs of 1,500 pods, extender CPU/pod 2.75/2.98 -> 2.41/2.69 ms.
SWITCH_INTERVAL_S = 0.0005


def post_worker_init(worker: Any) -> None:
    """Move everything loaded so far (the cluster cache: ~12 objects per pod) out of the GC's way,
    and shorten the GIL switch interval (:data:`SWITCH_INTERVAL_S`).

    A 5,000-node snapshot is ~700k Python objects; a full collection over them takes ~0.5 s on
    one core, and the cyclic GC would run one at some request's expense. ``gc.freeze()`` puts the
    start-up heap in the permanent generation, which collections never scan (objects created
    later are collected as usual).
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    _no_keepalive_linger_on_stop()
    _wake_on_term(worker)
