"""gunicorn settings for the extender: ONE worker process with threads, no preload.

Why one process: the cluster cache and the assumed (bound, not yet watched) pods must be shared
by every request, or two workers could both hand the same device to two pods. Threads (gthread)
still overlap the blocking parts (the bind's API call, the watch) with request handling.
Why no preload: ``create_app`` starts the watch thread, and threads do not survive a fork.
Production: ``gunicorn -c python:qosched.extender.gunicorn_conf 'qosched.extender.app:create_app()'``
(settings reach ``create_app`` through ``QOSCHED_*`` environment variables).
"""

import os

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
