"""``kubernetes.utils.parse_quantity``, loaded without importing the rest of the client.

Why: ``import kubernetes`` imports the whole generated client (every API and model class, the
kubeconfig loader with its OAuth and YAML dependencies): 0.4 s of CPU on this project's
machines, about half of the extender's start-up on a snapshot file, which needs no client at
all. The quantity parser is one self-contained module of that package (``decimal`` only), so it
is loaded from the installed package's own file, as is: the client's parser stays the one source
of truth for Kubernetes quantities (``tests/extender/test_quantity.py`` checks that this is the
same function as ``kubernetes.utils.parse_quantity`` would be). Where the file is not where the
package has always kept it, the ordinary import is used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, cast

__all__ = ["parse_quantity"]

_MODULE = "qosched.extender.kube._kubernetes_quantity"


def _load() -> Callable[[Any], Decimal]:
    spec = importlib.util.find_spec("kubernetes")  # finds the package without running it
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "utils" / "quantity.py"
        if not path.is_file():
            continue
        file_spec = importlib.util.spec_from_file_location(_MODULE, path)
        if file_spec is None or file_spec.loader is None:
            continue
        module: ModuleType = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        return cast(Callable[[Any], Decimal], module.parse_quantity)
    from kubernetes.utils import parse_quantity as imported

    return cast(Callable[[Any], Decimal], imported)


#: ``kubernetes.utils.parse_quantity``: "200Mi" → Decimal(209715200); ValueError when invalid.
parse_quantity: Callable[[Any], Decimal] = _load()
