"""GPU discovery. No NVIDIA GPU here: NVML's own failure is checked for real (the library is
absent, so NvmlInventory must refuse with a clear error), and the discovery logic (GPU order, MIG
instances as devices, health polling) against a scripted ``pynvml`` that records the calls.
Against real NVML this was checked only on paper (docs/device-layer.md)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from qosched.extender.deviceplugin.inventory import InventoryError, NvmlInventory


def test_without_nvml_the_inventory_refuses_clearly() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a machine with a GPU runs the real path instead
        pynvml.nvmlShutdown()
        pytest.skip("NVML is available here")
    with pytest.raises(InventoryError, match="NVML is not available on this node"):
        NvmlInventory()


class FakeNVMLError(Exception):
    pass


@dataclass
class Gpu:
    uuid: str
    name: str
    total: int
    mig: list[Gpu] | None = None
    fallen_off: bool = False
    calls: list[str] = field(default_factory=list)


def scripted_nvml(gpus: list[Gpu]) -> types.ModuleType:
    """A ``pynvml`` with the calls NvmlInventory makes, over ``gpus`` (handles are Gpu objects)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    m.NVML_DEVICE_MIG_ENABLE = 1  # type: ignore[attr-defined]
    every = {g.uuid: g for gpu in gpus for g in [gpu, *(gpu.mig or [])]}

    def alive(h: Gpu) -> Gpu:
        if h.fallen_off:
            raise FakeNVMLError("GPU is lost")
        return h

    def mig_mode(h: Gpu) -> tuple[int, int]:
        if h.mig is None:
            raise FakeNVMLError("Not Supported")
        return (1, 1)

    def mig_handle(h: Gpu, j: int) -> Gpu:
        assert h.mig is not None
        if j >= len(h.mig):
            raise FakeNVMLError("Not Found")
        return h.mig[j]

    fns: dict[str, Any] = {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i],
        "nvmlDeviceGetHandleByUUID": lambda u: alive(every[u.decode() if isinstance(u, bytes) else u]),
        "nvmlDeviceGetUUID": lambda h: alive(h).uuid,
        "nvmlDeviceGetName": lambda h: h.name.encode(),  # older bindings return bytes
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(total=alive(h).total),
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
    }
    for name, fn in fns.items():
        setattr(m, name, fn)
    return m


def test_gpus_in_nvml_order_and_mig_instances_as_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    mig = [Gpu("MIG-aaaa", "1g.10gb", 10 * 2**30), Gpu("MIG-bbbb", "3g.40gb", 40 * 2**30)]
    gpus = [Gpu("GPU-0000", "NVIDIA T4", 16 * 2**30), Gpu("GPU-1111", "NVIDIA A100", 80 * 2**30, mig=mig)]
    monkeypatch.setitem(sys.modules, "pynvml", scripted_nvml(gpus))
    inventory = NvmlInventory()
    devices = inventory.devices()
    assert [(d.index, d.uuid, d.parent_uuid, d.healthy) for d in devices] == [
        (0, "GPU-0000", None, True),
        (1, "MIG-aaaa", "GPU-1111", True),
        (2, "MIG-bbbb", "GPU-1111", True),
    ]
    assert devices[0].name == "NVIDIA T4"
    assert devices[2].memory_mib == 40 * 1024
    mig[0].fallen_off = True  # health is re-read on every poll; the device list stays
    assert [(d.uuid, d.healthy) for d in inventory.devices()] == [
        ("GPU-0000", True),
        ("MIG-aaaa", False),
        ("MIG-bbbb", True),
    ]
