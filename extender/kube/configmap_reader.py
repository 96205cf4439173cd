"""One key of one ConfigMap, parsed, re-read at most once per TTL in the thread that asks.

The extender serves documents the controller writes (placement hints, INFIDA's allocation)
without a watch and without a thread of its own: a verb asks :meth:`ConfigMapReader.current`,
which reads ``namespace/name`` again when ``ttl_s`` has passed since the last read and otherwise
answers from memory. A missing ConfigMap or key means no document; a failed read (an API error, a
timeout, a refused connection) or a document ``parse`` refuses keeps the last good one and is
reported once per distinct problem, so a scheduling verb never fails on it and the log is not
flooded every TTL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException

__all__ = ["ConfigMapReader", "split_ref"]

T = TypeVar("T")


def split_ref(ref: str, what: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` → ``(namespace, name)``; a ``ValueError`` naming ``what`` otherwise."""
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{what} {ref!r}: expected NAMESPACE/NAME")
    return namespace, name


class ConfigMapReader(Generic[T]):
    """The parsed ``key`` of ConfigMap ``namespace/name`` (see the module docstring).

    ``parse`` gets the key's JSON and raises ``ValueError`` (or a subclass) for a document it
    cannot use; ``report(problem)`` is called once per distinct problem (``read failed: …``,
    or the text ``describe_bad`` makes of the parse error); ``describe_failure`` words a failed
    read that is not an API error.
    """

    def __init__(
        self,
        core: Any,
        namespace: str,
        name: str,
        key: str,
        parse: Callable[[Any], T],
        report: Callable[[str], None],
        *,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        describe_bad: Callable[[ValueError], str] = str,
        describe_failure: Callable[[Exception], str] = str,
    ) -> None:
        self.core = core
        self.namespace, self.name, self.key = namespace, name, key
        self.parse = parse
        self.report = report
        self.ttl_s = ttl_s
        self.clock = clock
        self.describe_bad = describe_bad
        self.describe_failure = describe_failure
        self._lock = threading.Lock()
        self._value: T | None = None
        self._read_at = -float("inf")
        self._problem: str | None = None

    def current(self, now: float | None = None) -> T | None:
        """The last good document (None: none yet, or the ConfigMap or key is gone) at ``now``
        (default: the clock's)."""
        now = self.clock() if now is None else now
        with self._lock:
            if now - self._read_at >= self.ttl_s:
                self._read_at = now
                self._refresh()
            return self._value

    def _refresh(self) -> None:
        try:
            cm = self.core.read_namespaced_config_map(self.name, self.namespace, _request_timeout=2)
        except ApiException as exc:
            if exc.status == 404:
                self._value = None
                return
            self._problem_seen(f"read failed: {exc.status} {exc.reason}")
            return
        except Exception as exc:  # a timeout or a refused connection must not fail a verb
            self._problem_seen(f"read failed: {self.describe_failure(exc)}")
            return
        raw = (cm.data or {}).get(self.key)
        if raw is None:
            self._value = None
            return
        try:
            self._value = self.parse(json.loads(raw))
        except ValueError as exc:  # JSONDecodeError and the documents' own errors
            self._problem_seen(self.describe_bad(exc))
            return
        self._problem = None

    def _problem_seen(self, problem: str) -> None:
        if problem != self._problem:
            self.report(problem)
            self._problem = problem
