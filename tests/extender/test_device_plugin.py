"""The device plugin against a fake kubelet: a real gRPC ``Registration`` server on a unix socket
in a temp dir, the plugin's own socket next to it, pods from the fake API server (tests/kubefake)
read with the official client, and a fake inventory file for the GPUs."""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from qosched.extender.deviceplugin.allocation import AllocationError, plan_for
from qosched.extender.deviceplugin.api import deviceplugin_pb2 as pb
from qosched.extender.deviceplugin.api import deviceplugin_pb2_grpc as pb_grpc
from qosched.extender.deviceplugin.inventory import Device, FileInventory, InventoryError
from qosched.extender.deviceplugin.kube import pod_lister, sharing_reader
from qosched.extender.deviceplugin.pods import PodMatcher
from qosched.extender.deviceplugin.server import (
    KUBELET_SOCKET,
    PLUGIN_SOCKET,
    PluginRunner,
    PluginSettings,
    SharePlugin,
    unit_ids,
)
from qosched.extender.kube.objects import (
    A_DEVICE,
    A_GPU_MEMORY_LIMIT_MIB,
    A_GPU_SHARE_PCT,
    GPU_SHARE_RESOURCE,
    device_layer_annotations,
)
from qosched.policies.types import NodeView
from tests.kubefake import FakeKubeAPI, write_kubeconfig

UUIDS = ["GPU-5f1c1c48-2a9f-4b5e-8c0c-3f4f0e1d2c3b", "GPU-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]


class FakeKubelet:
    """The kubelet's side: a Registration server on ``<dir>/kubelet.sock``; a client of the plugin."""

    def __init__(self, plugin_dir: Path) -> None:
        self.plugin_dir = plugin_dir
        self.registered: queue.Queue[pb.RegisterRequest] = queue.Queue()
        kubelet = self

        class Registration(pb_grpc.RegistrationServicer):
            def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
                kubelet.registered.put(request)
                return pb.Empty()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_RegistrationServicer_to_server(Registration(), self.server)
        self.server.add_insecure_port(f"unix://{plugin_dir / KUBELET_SOCKET}")
        self.server.start()

    def wait_registration(self, timeout_s: float = 10.0) -> pb.RegisterRequest:
        return self.registered.get(timeout=timeout_s)

    def plugin(self) -> tuple[grpc.Channel, pb_grpc.DevicePluginStub]:
        channel = grpc.insecure_channel(f"unix://{self.plugin_dir / PLUGIN_SOCKET}")
        return channel, pb_grpc.DevicePluginStub(channel)

    def stop(self) -> None:
        self.server.stop(grace=0).wait()


def write_inventory(path: Path, healthy: tuple[bool, ...] = (True, True)) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "devices": [
                    {"uuid": u, "name": "Tesla T4", "memory_mib": 15360, "healthy": h}
                    for u, h in zip(UUIDS, healthy, strict=True)
                ]
            }
        )
    )


def share_pod(
    name: str,
    units: int,
    *,
    device: str | None = "1",
    extra: dict[str, str] | None = None,
    phase: str = "Pending",
    created: str = "2026-12-07T10:00:00Z",
) -> dict[str, Any]:
    annotations = {"qosched.io/model": "resnet50", "qosched.io/gpu-milli": str(units * 10), **(extra or {})}
    if device is not None:
        annotations |= {A_DEVICE: device, A_GPU_SHARE_PCT: str(units)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "inference",
            "uid": f"uid-{name}",
            "annotations": annotations,
            "creationTimestamp": created,
        },
        "spec": {
            "nodeName": "gpu-0",
            "schedulerName": "qosched",
            "containers": [
                {
                    "name": "server",
                    "image": "x",
                    "resources": {
                        "limits": {GPU_SHARE_RESOURCE: str(units)},
                        "requests": {GPU_SHARE_RESOURCE: str(units)},
                    },
                }
            ],
        },
        "status": {"phase": phase},
    }


class Rig:
    """Fake API server + fake kubelet + the plugin's real runner, all on one temp dir."""

    def __init__(self, sharing: str = "time-slicing") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qdp", dir="/tmp"))  # unix socket paths must be short
        self.inventory_file = self.dir / "inventory.yaml"
        write_inventory(self.inventory_file)
        self.api = FakeKubeAPI().start()
        labels = {"qosched.io/accelerator": "nvidia-t4", "qosched.io/sharing": sharing}
        self.api.add_node("gpu-0", gpus=0, labels=labels)
        self.api_client = self.api.api_client()
        self.kubelet = FakeKubelet(self.dir)
        settings = PluginSettings(
            node="gpu-0",
            plugin_dir=self.dir,
            mps_pipe_host_dir="/run/nvidia/mps",
            poll_s=0.05,
            sharing_of=sharing_reader(self.api_client, "gpu-0"),
        )
        matcher = PodMatcher(pod_lister(self.api_client, "gpu-0"), "gpu-0")
        inventory = FileInventory(self.inventory_file)
        self.runner = PluginRunner(lambda: SharePlugin(inventory, matcher, settings), settings, watch_s=0.05)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()
        self.registration = self.kubelet.wait_registration()
        self.channel, self.stub = self.kubelet.plugin()

    def allocate(self, units: int) -> pb.ContainerAllocateResponse:
        ids = unit_ids(Device(0, UUIDS[0]))[:units]
        resp = self.stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=10
        )
        (container,) = resp.container_responses
        return container

    def close(self) -> None:
        self.channel.close()
        self.runner.stop()
        self.thread.join(10)
        self.kubelet.stop()
        self.api_client.close()
        self.api.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


@pytest.fixture
def mps_rig() -> Iterator[Rig]:
    r = Rig("mps")
    yield r
    r.close()


def test_registers_with_the_kubelet(rig: Rig) -> None:
    reg = rig.registration
    assert (reg.version, reg.endpoint, reg.resource_name) == ("v1beta1", PLUGIN_SOCKET, GPU_SHARE_RESOURCE)
    assert reg.options.get_preferred_allocation_available is True
    options = rig.stub.GetDevicePluginOptions(pb.Empty(), timeout=5)
    assert (options.pre_start_required, options.get_preferred_allocation_available) == (False, True)
    assert rig.stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["x"]), timeout=5) == (
        pb.PreStartContainerResponse()
    )


def test_list_and_watch_streams_units_and_health_changes(rig: Rig) -> None:
    stream = rig.stub.ListAndWatch(pb.Empty(), timeout=20)
    first = next(stream)
    assert len(first.devices) == 200  # 2 GPUs x 100 units of 1/100 GPU
    assert {d.health for d in first.devices} == {"Healthy"}
    assert all(len(d.ID) <= 63 for d in first.devices)
    assert len({d.ID for d in first.devices}) == 200
    write_inventory(rig.inventory_file, (True, False))  # GPU 1 fails
    second = next(stream)
    unhealthy = {d.ID.split("::")[0] for d in second.devices if d.health == "Unhealthy"}
    assert unhealthy == {UUIDS[1]}
    assert sum(d.health == "Unhealthy" for d in second.devices) == 100
    stream.cancel()


def test_allocate_gives_the_gpu_qosched_chose(rig: Rig) -> None:
    rig.api.add_pod(share_pod("p", 25, device="1"))
    got = rig.allocate(25)
    assert got.envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[1]  # device 1, whatever IDs the kubelet picked
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in got.envs  # time-slicing node
    assert got.annotations["qosched.io/allocated-for"] == "inference/p"
    # Answered once: a second request of the same size finds no pod left.
    with pytest.raises(grpc.RpcError) as err:
        rig.allocate(25)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_allocate_on_mps_node_sets_share_memory_and_pipe(mps_rig: Rig) -> None:
    mps_rig.api.add_pod(share_pod("m", 30, device="0", extra={A_GPU_MEMORY_LIMIT_MIB: "1612"}))
    got = mps_rig.allocate(30)
    assert dict(got.envs) == {
        "NVIDIA_VISIBLE_DEVICES": UUIDS[0],
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=1612M",
        "CUDA_MPS_PIPE_DIRECTORY": "/tmp/nvidia-mps",
    }
    (mount,) = got.mounts
    assert (mount.container_path, mount.host_path, mount.read_only) == (
        "/tmp/nvidia-mps",
        "/run/nvidia/mps",
        False,
    )


@pytest.mark.parametrize(
    ("pods", "units", "message"),
    [
        ([], 25, "no pending pod on node gpu-0 requests 25 qosched.io/gpu-share and was bound by qosched"),
        (
            [share_pod("q", 40, device=None)],
            40,
            "pod inference/q requests 40 qosched.io/gpu-share but was not bound by qosched",
        ),
        ([share_pod("r", 25, phase="Running")], 25, "no pending pod"),
        (
            [share_pod("s", 25, device="7")],
            25,
            "pod inference/s: qosched.io/device names device 7, this node has 2",
        ),
        ([share_pod("t", 25, device="0,x")], 25, "is not a list of device indexes"),
    ],
    ids=["unknown-pod", "not-bound-by-qosched", "already-running", "no-such-device", "unreadable-device"],
)
def test_allocate_refuses_clearly(rig: Rig, pods: list[dict[str, Any]], units: int, message: str) -> None:
    for p in pods:
        rig.api.add_pod(p)
    with pytest.raises(grpc.RpcError) as err:
        rig.allocate(units)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in (err.value.details() or "")


def test_allocate_refuses_an_unhealthy_gpu(rig: Rig) -> None:
    write_inventory(rig.inventory_file, (True, False))
    rig.api.add_pod(share_pod("p", 25, device="1"))
    with pytest.raises(grpc.RpcError) as err:
        rig.allocate(25)
    assert f"device 1 ({UUIDS[1]}) is unhealthy" in (err.value.details() or "")


def test_same_size_pods_are_answered_oldest_first(rig: Rig) -> None:
    rig.api.add_pod(share_pod("young", 25, device="1", created="2026-12-07T10:00:05Z"))
    rig.api.add_pod(share_pod("old", 25, device="0", created="2026-12-07T10:00:00Z"))
    assert rig.allocate(25).annotations["qosched.io/allocated-for"] == "inference/old"
    assert rig.allocate(25).envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[1]


def test_preferred_allocation_fills_one_device_first(rig: Rig) -> None:
    ids0, ids1 = unit_ids(Device(0, UUIDS[0])), unit_ids(Device(1, UUIDS[1]))
    available = ids1[:50] + ids0[60:]
    req = pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=[ids1[0]], allocation_size=5
    )
    resp = rig.stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[req]), timeout=5)
    (chosen,) = resp.container_responses
    assert chosen.deviceIDs[0] == ids1[0]
    assert len(chosen.deviceIDs) == 5
    assert set(chosen.deviceIDs) <= set(available)


def _wait(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_kubelet_restart_makes_the_plugin_register_again(rig: Rig) -> None:
    rig.channel.close()
    rig.kubelet.stop()
    # What a kubelet restart does: every socket in the directory is removed, then a new kubelet.sock.
    for sock in (KUBELET_SOCKET, PLUGIN_SOCKET):
        (rig.dir / sock).unlink(missing_ok=True)
    rig.kubelet = FakeKubelet(rig.dir)
    again = rig.kubelet.wait_registration()
    assert again.resource_name == GPU_SHARE_RESOURCE
    _wait(lambda: rig.runner.registrations == 2)
    rig.channel, rig.stub = rig.kubelet.plugin()
    rig.api.add_pod(share_pod("after", 25, device="0"))
    assert rig.allocate(25).envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[0]  # the new server answers


# ---------------------------------------------------------------------------------- pure parts

NODE = NodeView(name="gpu-0", accelerator="nvidia-t4", device_count=2, sharing="mps")
DEVICES = [Device(0, UUIDS[0], memory_mib=15360), Device(1, UUIDS[1], memory_mib=15360)]


@pytest.mark.parametrize(
    ("gpu_milli", "memory_mib", "devices", "envs"),
    [
        (
            250,
            1000.0,
            "1",
            {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=1612M"},
        ),
        (125, 0.0, "0", {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "13"}),
        (
            2000,
            2000.0,
            "0,1",
            {
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "100",
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2712M,1=2712M",
            },
        ),
    ],
    ids=["quarter", "no-profile-memory", "two-gpus"],
)
def test_bind_annotations_feed_the_plan(
    gpu_milli: int, memory_mib: float, devices: str, envs: dict[str, str]
) -> None:
    """What the extender writes at bind (``device_layer_annotations``) is what Allocate reads."""
    annotations = {A_DEVICE: devices, **device_layer_annotations(NODE, gpu_milli, memory_mib)}
    pod = {"metadata": {"name": "p", "namespace": "ns", "annotations": annotations}}
    plan = plan_for(pod, DEVICES, "mps", mps_pipe_host_dir="/run/nvidia/mps")
    assert plan.envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(UUIDS[int(i)] for i in devices.split(","))
    assert {k: v for k, v in plan.envs.items() if k in envs or "LIMIT" in k} == envs


def test_mps_node_without_share_annotation_is_refused() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "annotations": {A_DEVICE: "0"}}}
    with pytest.raises(AllocationError, match=r"MPS node but has no qosched\.io/gpu-share-pct"):
        plan_for(pod, DEVICES, "mps", mps_pipe_host_dir="/x")
    assert plan_for(pod, DEVICES, "time-slicing", mps_pipe_host_dir="/x").envs == {
        "NVIDIA_VISIBLE_DEVICES": UUIDS[0]
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("devices: 3", "expected a mapping with a 'devices' list"),
        ("devices: [{name: x}]", "needs a uuid"),
        ("{", "inventory file"),
    ],
    ids=["not-a-list", "no-uuid", "bad-yaml"],
)
def test_bad_inventory_file(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "inv.yaml").write_text(text)
    with pytest.raises(InventoryError, match=error):
        FileInventory(tmp_path / "inv.yaml").devices()


def test_long_uuids_fall_back_to_index_ids() -> None:
    ids = unit_ids(Device(3, "MIG-GPU-5f1c1c48-2a9f-4b5e-8c0c-3f4f0e1d2c3b/7/0"))
    assert ids[0] == "dev3::00"
    assert len(ids) == 100


# ---------------------------------------------------------------------------------- the command


def test_command_without_nvml_or_inventory_fails_clearly() -> None:
    from click.testing import CliRunner

    from qosched.extender.cli.main import main

    result = CliRunner().invoke(main, ["device-plugin", "--node-name=gpu-0"])
    assert result.exit_code == 1
    assert "NVML is not available on this node" in result.output


@pytest.mark.slow
def test_command_registers_allocates_and_stops_on_sigterm() -> None:
    """``qosched device-plugin`` as the DaemonSet runs it (a process, NODE_NAME from the
    environment), with a kubeconfig for the fake API server instead of in-cluster config."""
    import os
    import signal
    import subprocess
    import sys

    workdir = Path(tempfile.mkdtemp(prefix="qdp", dir="/tmp"))
    write_inventory(workdir / "inventory.yaml")
    with FakeKubeAPI() as api:
        api.add_node("gpu-0", gpus=0, labels={"qosched.io/sharing": "time-slicing"})
        api.add_pod(share_pod("p", 50, device="0"))
        kubeconfig = write_kubeconfig(api.url, workdir / "kubeconfig")
        kubelet = FakeKubelet(workdir)
        cmd = [sys.executable, "-m", "qosched.extender.cli.main", "device-plugin", f"--plugin-dir={workdir}"]
        cmd += [
            f"--inventory-file={workdir / 'inventory.yaml'}",
            "--poll-s=0.1",
            f"--kubeconfig={kubeconfig}",
        ]
        env = {**os.environ, "NODE_NAME": "gpu-0"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert kubelet.wait_registration(timeout_s=30).resource_name == GPU_SHARE_RESOURCE
            channel, stub = kubelet.plugin()
            with channel:
                ids = unit_ids(Device(1, UUIDS[1]))[:50]
                resp = stub.Allocate(
                    pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]),
                    timeout=10,
                )
            assert resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[0]
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=15)
            assert proc.returncode == 0, out.decode()
            assert not (workdir / PLUGIN_SOCKET).exists()  # cleaned up on the way out
        finally:
            if proc.poll() is None:
                proc.kill()
            kubelet.stop()
            shutil.rmtree(workdir, ignore_errors=True)
