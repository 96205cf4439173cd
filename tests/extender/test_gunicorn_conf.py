"""``gunicorn_conf.post_worker_init``: what the worker process sets up before serving."""

from __future__ import annotations

import gc
import sys
import types

from qosched.extender.server import gunicorn_conf


def test_post_worker_init_shortens_the_gil_switch_interval_and_freezes_the_heap() -> None:
    """A bind waiting for the GIL behind a filter gets it within SWITCH_INTERVAL_S (0.5 ms, not
    CPython's 5 ms), so it reserves its node before a later filter reads the state."""
    before = sys.getswitchinterval()
    try:
        gunicorn_conf.post_worker_init(types.SimpleNamespace())  # no method_queue: no wake-up pipe
        assert sys.getswitchinterval() == gunicorn_conf.SWITCH_INTERVAL_S < 0.005  # CPython: 5 ms
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        sys.setswitchinterval(before)
