"""qosched.profiles.profiler: benchmark real models with PyTorch, solo and co-located.

``qosched profile run`` (see :mod:`qosched.extender.cli.profile`) drives this package:

- :mod:`.models` — ResNet-18, ResNet-50, MobileNet v2 (torchvision architectures, written out
  here, random seeded weights, nothing downloaded) and a tiny CNN for tests; ``build_model(name)``.
- :mod:`.load` — Poisson arrival schedules (seeded ``numpy.random.Generator``), latency
  statistics, and the server process that serves one model open-loop.
- :mod:`.runner` — starts one spawned process per model, solo and co-located, with a common
  start barrier, and turns the measurements into profile files and ``colocation.json``.
- :mod:`.report` — predicted vs measured mean latency of each co-located run and the MAPE.

torch is an optional dependency (``pip install 'qosched[profiler]'``): nothing in this
``__init__`` imports it, and :func:`require_torch` gives one clear error when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MISSING_TORCH_MESSAGE = (
    "the profiler needs PyTorch, which is not installed: install the optional extra with "
    "`pip install 'qosched[profiler]'` (or `pip install torch`)"
)


class ProfilerUnavailableError(ImportError):
    """Raised when the profiler is used without PyTorch installed."""


def require_torch() -> ModuleType:
    """Import and return :mod:`torch`, or raise :class:`ProfilerUnavailableError` saying how to get it.

    Called lazily by the profiler modules so that ``qosched`` itself (the extender, the
    policies, the CLI help) works without torch.
    """
    try:
        return importlib.import_module("torch")
    except ImportError as exc:  # pragma: no cover - exercised only where torch is absent
        raise ProfilerUnavailableError(MISSING_TORCH_MESSAGE) from exc


__all__ = ["MISSING_TORCH_MESSAGE", "ProfilerUnavailableError", "require_torch"]
