"""The accelerators of this node: NVML on GPU nodes, a fake inventory file elsewhere.

qosched's device index (``qosched.io/device``) is the position in :meth:`Inventory.devices`:
GPUs in NVML order (``nvmlDeviceGetHandleByIndex``, the ``nvidia-smi`` order, PCI bus order by
default), or, on a GPU with MIG enabled, its MIG instances in order, each a device of its own
(the node's ``qosched.io/accelerator-count`` then counts MIG instances).

Fake inventory (``--inventory-file``, YAML or JSON), for nodes without NVIDIA hardware and tests;
it is re-read on every poll, so editing it changes health like a failing GPU would::

    devices:
      - uuid: GPU-5f1c1c48-2a9f-4b5e-8c0c-3f4f0e1d2c3b   # as nvidia-smi -L prints it
        name: Tesla T4
        memory_mib: 15360
        healthy: true                                      # optional, default true
      - uuid: MIG-1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a    # a MIG instance
        name: A100-SXM4-40GB MIG 1g.5gb
        memory_mib: 4864
        parent_uuid: GPU-...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

log = logging.getLogger(__name__)


class InventoryError(RuntimeError):
    """The inventory cannot be read at all (bad file, NVML not loadable)."""


@dataclass(frozen=True, slots=True)
class Device:
    """One schedulable device: a GPU, or a MIG instance (``parent_uuid`` set)."""

    index: int
    uuid: str
    name: str = ""
    memory_mib: float = 0.0
    healthy: bool = True
    parent_uuid: str | None = None


class Inventory(Protocol):
    def devices(self) -> list[Device]:
        """Every device with its current health, in qosched's index order."""
        ...


def _device_from(i: int, raw: Any, where: str) -> Device:
    if not isinstance(raw, dict) or not isinstance(raw.get("uuid"), str) or not raw["uuid"]:
        raise InventoryError(f"{where}: devices[{i}] needs a uuid")
    try:
        memory_mib = float(raw.get("memory_mib", 0.0))
    except (TypeError, ValueError):
        raise InventoryError(f"{where}: devices[{i}].memory_mib is not a number") from None
    return Device(
        index=i,
        uuid=raw["uuid"],
        name=str(raw.get("name", "")),
        memory_mib=memory_mib,
        healthy=bool(raw.get("healthy", True)),
        parent_uuid=raw.get("parent_uuid"),
    )


@dataclass(frozen=True, slots=True)
class FileInventory:
    """Devices listed in a YAML/JSON file (see the module docstring), re-read on every call."""

    path: Path

    def devices(self) -> list[Device]:
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise InventoryError(f"inventory file {self.path}: {err}") from None
        raw = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise InventoryError(f"inventory file {self.path}: expected a mapping with a 'devices' list")
        return [_device_from(i, d, str(self.path)) for i, d in enumerate(raw)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlInventory:
    """GPUs (or their MIG instances) through NVML (``nvidia-ml-py``).

    Health is polled: a device whose handle, UUID or memory can no longer be read (fallen off
    the bus, XID 79, driver reset) is reported unhealthy; the device count is fixed at start.
    """

    def __init__(self) -> None:
        import pynvml

        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise InventoryError(f"NVML is not available on this node: {err}") from None
        self._known = self._scan()

    def _mig_instances(self, gpu: Any) -> list[Any]:
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(gpu)
        except nvml.NVMLError:  # not a MIG-capable GPU
            return []
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        handles = []
        for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
            try:
                handles.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, j))
            except nvml.NVMLError:  # an empty slot
                continue
        return handles

    def _describe(self, index: int, handle: Any, parent: str | None) -> Device:
        nvml = self._nvml
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return Device(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_mib=float(memory.total) / 2**20,
            parent_uuid=parent,
        )

    def _scan(self) -> list[Device]:
        nvml = self._nvml
        out: list[Device] = []
        for i in range(nvml.nvmlDeviceGetCount()):
            gpu = nvml.nvmlDeviceGetHandleByIndex(i)
            migs = self._mig_instances(gpu)
            if not migs:
                out.append(self._describe(len(out), gpu, None))
                continue
            parent = _text(nvml.nvmlDeviceGetUUID(gpu))
            base = len(out)
            out.extend([self._describe(base + k, m, parent) for k, m in enumerate(migs)])
        return out

    def _alive(self, device: Device) -> bool:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(device.uuid)
            nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as err:
            log.warning("device %s (%s) is unhealthy: %s", device.index, device.uuid, err)
            return False
        return True

    def devices(self) -> list[Device]:
        return [
            Device(d.index, d.uuid, d.name, d.memory_mib, self._alive(d), d.parent_uuid) for d in self._known
        ]
