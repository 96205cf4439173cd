"""The fake API server's fault knobs used by the suite: expiry of open watches, writes by another
scheduler, stalled lists — each checked through the official client, as the extender sees them."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
import urllib3
from kubernetes import client

from tests.kubefake import FakeKubeAPI
from tests.kubefake.status import ApiError


def _raw_watch(v1: client.CoreV1Api, rv: str) -> Any:
    return v1.list_pod_for_all_namespaces(
        watch=True, resource_version=rv, timeout_seconds=30, _preload_content=False, _request_timeout=(2, 10)
    )


def test_expire_watches_sends_error_410_on_the_open_stream_then_ends_it(fault_api: FakeKubeAPI) -> None:
    fault_api.add_pod("a", gpu_milli=100)
    v1 = client.CoreV1Api(fault_api.api_client())
    rv = v1.list_pod_for_all_namespaces().metadata.resource_version
    resp = _raw_watch(v1, rv)
    assert fault_api.wait_for_watches(1)
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: lines.extend(orjson.loads(x) for x in resp.stream() if x.strip())
    )
    reader.start()
    fault_api.add_pod("b", gpu_milli=100)
    time.sleep(0.1)
    assert fault_api.expire_watches() == 1
    reader.join(5.0)
    assert not reader.is_alive(), "the expired stream did not end"
    assert [e["type"] for e in lines] == ["ADDED", "ERROR"]
    status = lines[-1]["object"]
    assert (status["code"], status["reason"]) == (410, "Expired")
    assert status["message"].startswith(f"too old resource version: {rv} (")
    # ...and the version it held is now compacted: a watch from it starts with the same ERROR.
    again = [orjson.loads(x) for x in _raw_watch(v1, rv).data.splitlines() if x.strip()]
    assert [(e["type"], e["object"]["code"]) for e in again] == [("ERROR", 410)]


def test_bind_behind_is_one_atomic_write_without_an_http_request(fault_api: FakeKubeAPI) -> None:
    fault_api.add_node("n", accelerator="nvidia-t4", gpus=2)
    fault_api.add_pod("p", gpu_milli=500)
    rv = fault_api.resource_version
    bound = fault_api.bind_behind("p", "n", annotations={"qosched.io/device": "1"})
    assert bound["spec"]["nodeName"] == "n"
    assert bound["metadata"]["annotations"]["qosched.io/device"] == "1"
    assert int(bound["metadata"]["resourceVersion"]) == rv + 1  # one write
    assert fault_api.count(verb="create", subresource="binding") == 0
    with pytest.raises(ApiError, match='already assigned to node "n"') as err:
        fault_api.bind_behind("p", "n")
    assert err.value.code == 409


def test_a_stalled_list_hangs_past_the_clients_read_timeout(fault_api: FakeKubeAPI) -> None:
    fault_api.add_pod("a", gpu_milli=100)
    v1 = client.CoreV1Api(fault_api.api_client())
    fault_api.stall("^/api/v1/pods$", 5.0, verb="list")  # every pod list, until cleared
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError, match="timed out"):
        v1.list_pod_for_all_namespaces(_request_timeout=(1, 0.2))  # the client retries reads 3 times
    assert 0.2 < time.monotonic() - t0 < 2.5
    assert fault_api.count(verb="list") == 0  # nothing answered yet
    fault_api.clear_stalls()
    assert len(v1.list_pod_for_all_namespaces(_request_timeout=(1, 2)).items) == 1
