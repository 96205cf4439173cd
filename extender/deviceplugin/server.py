"""The kubelet device plugin API v1beta1 over gRPC (``grpcio``), for ``qosched.io/gpu-share``.

Resource: every device (GPU, or MIG instance) is advertised as 100 kubelet "devices" with IDs
``<uuid>::<k>`` (k = 00..99): one unit is 1/100 of one device. The kubelet then accounts shares
like any extended resource (node capacity = 100 x devices), so neither it nor any scheduler can
hand out more than a node has. Which IDs the kubelet picks does not matter: ``Allocate`` maps
the request to the devices qosched chose (:mod:`.pods`, :mod:`.allocation`).

Lifecycle (:class:`PluginRunner`): serve on ``<dir>/qosched-gpu-share.sock``, ``Register`` with
the kubelet on ``<dir>/kubelet.sock``, then watch both: when the kubelet restarts it deletes the
plugin sockets and creates a new ``kubelet.sock``; the runner then serves again and re-registers.
``ListAndWatch`` sends the full list at once and again whenever a device's health changes
(the inventory is polled every ``poll_s``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from qosched.extender.deviceplugin.allocation import AllocationError, plan_for
from qosched.extender.deviceplugin.api import deviceplugin_pb2 as pb
from qosched.extender.deviceplugin.api import deviceplugin_pb2_grpc as pb_grpc
from qosched.extender.deviceplugin.inventory import Device, Inventory, InventoryError
from qosched.extender.deviceplugin.pods import PodMatcher
from qosched.extender.kube.objects import GPU_SHARE_RESOURCE, GPU_SHARE_UNITS_PER_DEVICE

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
PLUGIN_SOCKET = "qosched-gpu-share.sock"
DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
MAX_ID_CHARS = 63


def unit_ids(device: Device) -> list[str]:
    """The 100 kubelet device IDs of one device (``<uuid>::<k>``; ``dev<index>::<k>`` when a
    UUID would make the ID longer than the API's 63 characters or has other characters than
    letters, digits, ``-``, ``_`` and ``.``, e.g. the old ``MIG-GPU-<uuid>/<gi>/<ci>`` form)."""
    plain = re.fullmatch(r"[A-Za-z0-9._-]+", device.uuid) is not None
    stem = device.uuid if plain and len(device.uuid) + 4 <= MAX_ID_CHARS else f"dev{device.index}"
    return [f"{stem}::{k:02d}" for k in range(GPU_SHARE_UNITS_PER_DEVICE)]


def device_list(devices: list[Device]) -> pb.ListAndWatchResponse:
    return pb.ListAndWatchResponse(
        devices=[
            pb.Device(ID=uid, health=HEALTHY if d.healthy else UNHEALTHY)
            for d in devices
            for uid in unit_ids(d)
        ]
    )


@dataclass
class PluginSettings:
    node: str
    plugin_dir: Path = Path(DEFAULT_PLUGIN_DIR)
    mps_pipe_host_dir: str = "/run/nvidia/mps"
    poll_s: float = 10.0
    #: Sharing mode of this node (``qosched.io/sharing``), read at each Allocate.
    sharing_of: Callable[[], str] = lambda: "time-slicing"


class SharePlugin(pb_grpc.DevicePluginServicer):
    """The DevicePlugin service (one per registration; stopped on kubelet restart)."""

    def __init__(self, inventory: Inventory, matcher: PodMatcher, settings: PluginSettings) -> None:
        self.inventory = inventory
        self.matcher = matcher
        self.settings = settings
        self.stopped = threading.Event()

    def _devices(self) -> list[Device]:
        try:
            return self.inventory.devices()
        except InventoryError as err:
            log.error("inventory unreadable: %s", err)
            raise

    # ------------------------------------------------------------------ the API
    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]:
        last: list[tuple[str, bool]] | None = None
        while not self.stopped.is_set() and context.is_active():
            try:
                devices = self._devices()
            except InventoryError:
                devices = None
            if devices is not None:
                state = [(d.uuid, d.healthy) for d in devices]
                if state != last:
                    log.info(
                        "advertising %d devices (%d unhealthy)", len(devices), sum(not h for _, h in state)
                    )
                    last = state
                    yield device_list(devices)
            self.stopped.wait(self.settings.poll_s)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        """Fill one device's units before the next (IDs sorted): the kubelet's bookkeeping stays
        tidy; the devices the container really gets are decided in Allocate."""
        responses = []
        for req in request.container_requests:
            chosen = list(req.must_include_deviceIDs)
            rest = sorted(set(req.available_deviceIDs) - set(chosen))
            chosen += rest[: max(0, req.allocation_size - len(chosen))]
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return pb.PreferredAllocationResponse(container_responses=responses)

    def _allocate_one(self, units: int) -> pb.ContainerAllocateResponse:
        sharing = self.settings.sharing_of()
        inventory = self._devices()

        def plan(pod: dict[str, Any]) -> Any:
            return plan_for(pod, inventory, sharing, mps_pipe_host_dir=self.settings.mps_pipe_host_dir)

        match, result = self.matcher.match(units, plan)
        log.info(
            "allocate %d %s -> pod %s container %s devices %s",
            units,
            GPU_SHARE_RESOURCE,
            result.pod,
            match.container,
            ",".join(d.uuid for d in result.devices),
        )
        return pb.ContainerAllocateResponse(
            envs=result.envs,
            mounts=[
                pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                for m in result.mounts
            ],
            annotations=result.annotations,
        )

    def Allocate(self, request: pb.AllocateRequest, context: grpc.ServicerContext) -> pb.AllocateResponse:
        try:
            responses = [self._allocate_one(len(req.devices_ids)) for req in request.container_requests]
        except (AllocationError, InventoryError) as err:
            log.warning("allocate refused: %s", err)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"qosched device plugin: {err}")
        except Exception as err:  # the API server unreachable, ...: fail this pod, keep serving
            log.exception("allocate failed")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"qosched device plugin: {type(err).__name__}: {err}")
        return pb.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_ctime_ns)


class PluginRunner:
    """Serve, register, and do both again whenever the kubelet restarts (see module docstring)."""

    def __init__(
        self, make_plugin: Callable[[], SharePlugin], settings: PluginSettings, *, watch_s: float = 1.0
    ) -> None:
        self.make_plugin = make_plugin
        self.settings = settings
        self.watch_s = watch_s
        self.stop_event = threading.Event()
        self.registrations = 0
        self._server: grpc.Server | None = None
        self._plugin: SharePlugin | None = None

    @property
    def socket_path(self) -> Path:
        return self.settings.plugin_dir / PLUGIN_SOCKET

    @property
    def kubelet_socket(self) -> Path:
        return self.settings.plugin_dir / KUBELET_SOCKET

    def _serve(self) -> None:
        self._stop_server()
        if self.socket_path.exists():
            os.unlink(self.socket_path)
        self._plugin = self.make_plugin()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_DevicePluginServicer_to_server(self._plugin, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server

    def _register(self) -> None:
        with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            pb_grpc.RegistrationStub(channel).Register(
                pb.RegisterRequest(
                    version=API_VERSION,
                    endpoint=PLUGIN_SOCKET,
                    resource_name=GPU_SHARE_RESOURCE,
                    options=pb.DevicePluginOptions(get_preferred_allocation_available=True),
                ),
                timeout=10,
            )
        self.registrations += 1
        log.info("registered %s with the kubelet (%s)", GPU_SHARE_RESOURCE, self.kubelet_socket)

    def _stop_server(self) -> None:
        if self._plugin is not None:
            self._plugin.stopped.set()
        if self._server is not None:
            self._server.stop(grace=1).wait()
        self._server = self._plugin = None

    def _start(self) -> tuple[int, int] | None:
        """Serve and register once; the kubelet socket's identity, None when it failed."""
        kubelet = _identity(self.kubelet_socket)
        if kubelet is None:
            return None
        try:
            self._serve()
            self._register()
        except (grpc.RpcError, grpc.FutureTimeoutError, OSError) as err:
            log.warning("registration with the kubelet failed (will retry): %s", err)
            self._stop_server()
            return None
        return kubelet

    def run(self) -> None:
        """Until :meth:`stop`: (re)start whenever not registered, the plugin socket vanished or
        the kubelet socket was re-created."""
        registered_with: tuple[int, int] | None = None
        try:
            while not self.stop_event.is_set():
                gone = registered_with is not None and (
                    not self.socket_path.exists() or _identity(self.kubelet_socket) != registered_with
                )
                if gone:
                    log.info("kubelet restarted (plugin socket removed or kubelet.sock re-created)")
                if registered_with is None or gone:
                    registered_with = self._start()
                self.stop_event.wait(self.watch_s)
        finally:
            self._stop_server()
            if self.socket_path.exists():
                os.unlink(self.socket_path)

    def stop(self) -> None:
        self.stop_event.set()
