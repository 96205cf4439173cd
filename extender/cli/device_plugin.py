"""``qosched device-plugin``: the kubelet device plugin for ``qosched.io/gpu-share`` (a DaemonSet
on the GPU nodes qosched shares; docs/device-layer.md)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import click

log = logging.getLogger(__name__)


@click.command("device-plugin")
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    required=True,
    help="This node (the DaemonSet passes spec.nodeName through the downward API).",
)
@click.option(
    "--plugin-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="/var/lib/kubelet/device-plugins",
    show_default=True,
    help="The kubelet's device plugin directory (kubelet.sock lives there).",
)
@click.option(
    "--inventory-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A fake inventory (YAML/JSON) instead of NVML, for nodes without NVIDIA hardware.",
)
@click.option(
    "--mps-pipe-dir",
    default="/run/nvidia/mps",
    show_default=True,
    help="Host directory of the MPS control daemon's pipes (mounted into MPS clients).",
)
@click.option(
    "--poll-s", type=click.FloatRange(0.05, 3600), default=10.0, show_default=True, help="Health poll."
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Outside a cluster; in-cluster config otherwise.",
)
def device_plugin(
    node_name: str,
    plugin_dir: Path,
    inventory_file: Path | None,
    mps_pipe_dir: str,
    poll_s: float,
    kubeconfig: str | None,
) -> None:
    """Advertise qosched.io/gpu-share (1 unit = 1/100 GPU) and allocate qosched's chosen GPU."""
    from qosched.extender.deviceplugin.inventory import (
        FileInventory,
        Inventory,
        InventoryError,
        NvmlInventory,
    )
    from qosched.extender.deviceplugin.kube import pod_lister, sharing_reader
    from qosched.extender.deviceplugin.pods import PodMatcher
    from qosched.extender.deviceplugin.server import PluginRunner, PluginSettings, SharePlugin
    from qosched.extender.kube.watch import api_client_from
    from qosched.extender.server.settings import ConfigError

    try:
        inventory: Inventory = FileInventory(inventory_file) if inventory_file else NvmlInventory()
        devices = inventory.devices()
        api_client = api_client_from({"KUBECONFIG": kubeconfig})
    except (InventoryError, ConfigError) as err:
        raise click.ClickException(str(err)) from None
    log.info(
        "node %s: %d devices: %s", node_name, len(devices), ", ".join(f"{d.index}={d.uuid}" for d in devices)
    )
    settings = PluginSettings(
        node=node_name,
        plugin_dir=plugin_dir,
        mps_pipe_host_dir=mps_pipe_dir,
        poll_s=poll_s,
        sharing_of=sharing_reader(api_client, node_name),
    )
    matcher = PodMatcher(pod_lister(api_client, node_name), node_name)
    runner = PluginRunner(lambda: SharePlugin(inventory, matcher, settings), settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        runner.run()
    finally:
        api_client.close()
