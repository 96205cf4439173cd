"""``PUT /profiles/<accelerator>/<model>``: auth, validation, durable storage, hot reload, the CLI.

The cluster: four ``nvidia-t4`` nodes. The pod serves ``tiny_net``, a model with no bundled
profile, so before an upload every node is rejected with "no profile"; at 1 rps a profile with a
2 ms service time makes every node feasible (0.2 % utilisation, 2 ms against a 100 ms SLO); one
with 150 ms makes every node miss the SLO (15 % utilisation, but 150 ms > 100 ms).
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.cli.main import main as cli
from qosched.extender.server.app import create_app
from qosched.extender.server.state import state_of
from qosched.extender.server.uploads import ConfigMapSink, SecretToken, TokenUnavailable
from qosched.profiles.schema import dump_profile_json, loads_profile, profile_filename
from qosched.profiles.store import ProfileStore
from tests.extender.extender_support import (
    JSON_CT,
    QOSCHED_BIN,
    args,
    free_port,
    make_app,
    node,
    pod,
    reasons,
    serving,
    write_snapshot,
)
from tests.kubefake import FakeKubeAPI

NODES = ["t4-0", "t4-1", "t4-2", "t4-3"]
TINY = pod("tiny", model="tiny_net", slo_ms=100, rate_rps=1, gpu_milli=250)
TOKEN = "correct horse battery staple"
URL = "/profiles/nvidia-t4/tiny_net"
NO_PROFILE = (
    "qosched (qosched): no profile for this model on the node's accelerator"
    " (e.g. t4-0: no profile of tiny_net for nvidia-t4)"
)
# 150 ms at 1 rps alone on a device: ρ = 0.15, W = λE[S²]/(2(1 − ρ)) = 0.001 × 150² / 1.7 = 13.2 ms.
SLO_MISS = (
    "qosched (qosched): predicted latency of this pod would exceed its SLO"
    " (e.g. t4-0: device 0: predicted latency 163.2 ms > SLO 100.0 ms)"
)


def profile_doc(
    mean_ms: float = 2.0, *, accelerator: str = "nvidia-t4", model: str = "tiny_net"
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "accelerator": accelerator,
        "model": model,
        "service_time_ms": {"mean": mean_ms},
        "memory_mib": 300,
        "provenance": {"source": "unit test", "method": "hand-written", "measured_on": "nothing"},
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    return write_snapshot(tmp_path / "cluster.json", [*(node(n) for n in NODES), TINY])


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def app(cluster: Path, token_file: Path, tmp_path: Path) -> Flask:
    return make_app(cluster, PROFILES_DIR=str(tmp_path / "profiles"), UPLOAD_TOKEN_FILE=str(token_file))


def put(
    app: Flask, body: bytes | dict[str, Any], *, url: str = URL, token: str | None = TOKEN, **headers: str
) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Content-Type": JSON_CT, **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return app.test_client().put(url, data=data, headers=sent)


def filter_answer(app: Flask) -> dict[str, Any]:
    response = app.test_client().post("/filter", data=orjson.dumps(args(TINY, NODES)), content_type=JSON_CT)
    assert response.status_code == 200
    return orjson.loads(response.data)


# ----------------------------------------------------------------------------- status codes


def test_upload_new_profile_is_201_then_replacing_it_is_200(app: Flask, tmp_path: Path) -> None:
    first = put(app, profile_doc(2.0))
    assert first.status_code == 201, first.text
    body = first.get_json()
    stored = tmp_path / "profiles" / "nvidia-t4__tiny_net.json"
    assert body == {
        "accelerator": "nvidia-t4",
        "model": "tiny_net",
        "created": True,
        "stored": str(stored),
        "version": body["version"],
    }
    again = put(app, profile_doc(3.0))
    assert again.status_code == 200
    assert again.get_json()["created"] is False
    assert again.get_json()["version"] != body["version"]


@pytest.mark.parametrize(
    ("headers", "token", "detail"),
    [
        ({}, None, "missing bearer token"),
        ({}, "wrong", "invalid bearer token"),
        ({}, TOKEN + "x", "invalid bearer token"),
        ({"Authorization": f"Basic {base64.b64encode(b'u:p').decode()}"}, None, "missing bearer token"),
        ({"Authorization": "Bearer"}, None, "missing bearer token"),
    ],
    ids=["no-header", "wrong-token", "token-prefix-only-matches", "basic-auth", "empty-bearer"],
)
def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(
    app: Flask, headers: dict[str, str], token: str | None, detail: str
) -> None:
    response = put(app, profile_doc(), token=token, **headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="qosched"')
    assert response.get_json() == {
        "error": detail if detail.startswith("invalid") else detail + ": send 'Authorization: Bearer <token>'"
    }
    assert filter_answer(app)["FailedAndUnresolvableNodes"] == dict.fromkeys(NODES, NO_PROFILE)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b'{"schema_version": 1,', JSON_CT, 400, "profile: invalid JSON"),
        (
            orjson.dumps(profile_doc(-1.0)),
            JSON_CT,
            422,
            "profile: profile field `service_time_ms.mean`: must be > 0 (got -1",
        ),
        (orjson.dumps({**profile_doc(), "bogus": 1}), JSON_CT, 422, "profile: unknown field `bogus`"),
        (b'{"model": "a", "model": "b"}', JSON_CT, 422, "duplicate key `model`"),
        (
            orjson.dumps(profile_doc(model="resnet50")),
            JSON_CT,
            422,
            "profile field `model`: 'resnet50' does not match the URL's 'tiny_net'",
        ),
        (
            orjson.dumps(profile_doc(accelerator="nvidia-a100")),
            JSON_CT,
            422,
            "profile field `accelerator`: 'nvidia-a100' does not match",
        ),
        (orjson.dumps(profile_doc()), "text/plain", 415, "Content-Type: expected application/json"),
        (orjson.dumps({**profile_doc(), "pad": "x" * 300_000}), JSON_CT, 413, "exceed the limit of 262144"),
    ],
    ids=[
        "bad-json",
        "negative-mean",
        "unknown-field",
        "duplicate-key",
        "model-mismatch",
        "accelerator-mismatch",
        "not-json",
        "too-large",
    ],
)
def test_invalid_uploads_are_refused_with_the_reason_and_change_nothing(
    app: Flask, tmp_path: Path, body: bytes, content_type: str, status: int, message: str
) -> None:
    before = app.test_client().get("/profiles").get_json()["version"]
    response = put(app, body, **{"Content-Type": content_type})
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert app.test_client().get("/profiles").get_json()["version"] == before
    assert not (tmp_path / "profiles" / "nvidia-t4__tiny_net.json").exists()


def test_uploads_disabled_without_a_token_is_403(cluster: Path, tmp_path: Path) -> None:
    app = make_app(cluster, PROFILES_DIR=str(tmp_path / "profiles"))
    response = put(app, profile_doc())
    assert response.status_code == 403
    assert "profile uploads are disabled" in response.get_json()["error"]


def test_an_unreadable_token_file_is_503(cluster: Path, tmp_path: Path) -> None:
    app = make_app(cluster, PROFILES_DIR=str(tmp_path / "p"), UPLOAD_TOKEN_FILE=str(tmp_path / "missing"))
    response = put(app, profile_doc())
    assert response.status_code == 503
    assert "cannot read it" in response.get_json()["error"]


def test_no_durable_storage_is_503(cluster: Path, token_file: Path) -> None:
    app = make_app(cluster, UPLOAD_TOKEN_FILE=str(token_file))
    response = put(app, profile_doc())
    assert response.status_code == 503
    assert "no durable storage" in response.get_json()["error"]


def test_a_rotated_token_file_is_picked_up_without_restart(app: Flask, token_file: Path) -> None:
    token_file.write_text("the new one, longer than before\n")
    assert put(app, profile_doc(), token=TOKEN).status_code == 401
    assert put(app, profile_doc(), token="the new one, longer than before").status_code == 201


def test_get_profiles_lists_bundled_and_uploaded(app: Flask) -> None:
    listed = app.test_client().get("/profiles").get_json()
    keys = {(p["accelerator"], p["model"]) for p in listed["profiles"]}
    assert ("nvidia-t4", "resnet50") in keys
    assert ("nvidia-t4", "tiny_net") not in keys
    put(app, profile_doc(2.5))
    listed = app.test_client().get("/profiles").get_json()
    uploaded = [p for p in listed["profiles"] if (p["accelerator"], p["model"]) == ("nvidia-t4", "tiny_net")]
    assert uploaded == [profile_doc(2.5) | {"service_time_ms": {"mean": 2.5}}]


# ----------------------------------------------------------------------------- hot reload, durability


def test_upload_is_visible_to_the_next_filter(app: Flask) -> None:
    assert filter_answer(app)["FailedAndUnresolvableNodes"] == dict.fromkeys(NODES, NO_PROFILE)
    assert put(app, profile_doc(2.0)).status_code == 201
    assert filter_answer(app)["NodeNames"] == NODES
    assert put(app, profile_doc(150.0)).status_code == 200
    after = filter_answer(app)
    assert after["NodeNames"] == []
    assert reasons(after) == dict.fromkeys(NODES, SLO_MISS)


def test_the_profile_is_on_disk_and_survives_a_restart(
    cluster: Path, token_file: Path, tmp_path: Path
) -> None:
    settings = {"PROFILES_DIR": str(tmp_path / "profiles"), "UPLOAD_TOKEN_FILE": str(token_file)}
    assert put(make_app(cluster, **settings), profile_doc(2.0)).status_code == 201
    path = tmp_path / "profiles" / profile_filename("nvidia-t4", "tiny_net")
    assert path.read_text() == dump_profile_json(loads_profile(orjson.dumps(profile_doc(2.0))))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    restarted = make_app(cluster, **settings)
    assert filter_answer(restarted)["NodeNames"] == NODES


def test_uploads_while_filters_run_give_every_filter_one_consistent_profile_set(app: Flask) -> None:
    # Every filter must see all four nodes under the same profile: all "no profile" (before the
    # first upload), all feasible (2 ms) or all missing the SLO (150 ms) -- never a mix. The
    # decision is the code; the numbers after it are read again when the message is written and
    # are left out when an upload changed the node in between, so codes are compared here.
    seen: set[tuple[str, ...]] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def filters() -> None:
        try:
            while not stop.is_set():
                answer = filter_answer(app)
                outcome = tuple(
                    sorted(
                        {
                            *(["kept"] if answer["NodeNames"] else []),
                            *(_code_of(text) for text in reasons(answer).values()),
                        }
                    )
                )
                seen.add(outcome)
                assert len(answer["NodeNames"]) in (0, len(NODES)), answer
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=filters) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(12):
            assert put(app, profile_doc(2.0 if i % 2 == 0 else 150.0)).status_code in (200, 201)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[0]
    assert seen <= {("kept",), (_code_of(NO_PROFILE),), (_code_of(SLO_MISS),)}
    assert ("kept",) in seen or (_code_of(SLO_MISS),) in seen


def _code_of(text: str) -> str:
    """A filter reason without its example node and numbers: ``qosched (<policy>): <message>``."""
    return text.split(" (e.g. ", 1)[0].split(" (closest: ", 1)[0]


def test_concurrent_uploads_end_with_the_store_and_the_cache_on_the_same_set(app: Flask) -> None:
    means = [2.0, 150.0, 3.0, 140.0, 4.0, 130.0]
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda m: put(app, profile_doc(m)).status_code, means))
    assert sorted(statuses) == [200] * 5 + [201]
    uploader = state_of(app).uploader
    final = uploader.store.current().get("nvidia-t4", "tiny_net").service_time.mean_ms
    answer = filter_answer(app)
    assert (answer["NodeNames"] == NODES) == (final < 100)


# ----------------------------------------------------------------------------- Kubernetes token and ConfigMap


def test_token_from_a_secret_is_cached_for_its_ttl_and_rotates(kube_api: FakeKubeAPI) -> None:
    kube_api.add_secret("upload", "qosched", {"token": "first"})
    now = [100.0]
    client = kube_api.api_client()
    try:
        source = SecretToken.from_ref(client, "qosched/upload", ttl_s=10.0, clock=lambda: now[0])
        assert source() == "first"
        assert source() == "first"
        assert kube_api.count(verb="get", resource="secrets") == 1
        new_data = {"token": base64.b64encode(b"second").decode()}
        kube_api.update("secrets", "upload", lambda obj: {**obj, "data": new_data}, namespace="qosched")
        now[0] += 9.9
        assert source() == "first"  # still cached
        now[0] += 0.2
        assert source() == "second"
        assert kube_api.count(verb="get", resource="secrets") == 2
    finally:
        client.close()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda api: None, "answered 404"),
        (lambda api: api.add_secret("upload", "qosched", {"other": "x"}), "has no key 'token'"),
        (lambda api: api.add_secret("upload", "qosched", {"token": "  "}), "is empty"),
        (
            lambda api: (
                api.add_secret("upload", "qosched", {"token": "t"}),
                api.fail_next("secrets/upload", 500),
            ),
            "answered 500",
        ),
    ],
    ids=["missing-secret", "missing-key", "empty-token", "api-error"],
)
def test_an_unreadable_secret_is_unavailable_never_stale(
    kube_api: FakeKubeAPI, setup: Any, message: str
) -> None:
    setup(kube_api)
    client = kube_api.api_client()
    try:
        with pytest.raises(TokenUnavailable, match=message):
            SecretToken.from_ref(client, "qosched/upload")()
    finally:
        client.close()


@pytest.fixture
def kube_client(kube_api: FakeKubeAPI) -> Iterator[Any]:
    client = kube_api.api_client()
    yield client
    client.close()


#: Apps of this module that follow a profiles ConfigMap: their follower threads are stopped
#: after each test, so none keeps retrying against a closed fake API server (and logging).
_FOLLOWING: list[Flask] = []


@pytest.fixture(autouse=True)
def _stop_followers() -> Iterator[None]:
    yield
    while _FOLLOWING:
        state_of(_FOLLOWING.pop()).uploader.stop()


def k8s_app(cluster: Path, client: Any) -> Flask:
    settings = {
        "CLUSTER_FILE": str(cluster),
        "UPLOAD_TOKEN_SECRET": "qosched/upload",
        "PROFILES_CONFIGMAP": "qosched/profiles",
    }
    app = create_app(settings, registry=CollectorRegistry(), api_client=client)
    _FOLLOWING.append(app)
    return app


def test_secret_token_and_configmap_storage_survive_a_restart(
    kube_api: FakeKubeAPI, kube_client: Any, cluster: Path
) -> None:
    kube_api.add_secret("upload", "qosched", {"token": TOKEN})
    app = k8s_app(cluster, kube_client)
    assert put(app, profile_doc(2.0), token="nope").status_code == 401
    created = put(app, profile_doc(2.0))
    assert created.status_code == 201, created.text
    assert created.get_json()["stored"] == "configmap qosched/profiles key nvidia-t4__tiny_net.json"
    cm = kube_api.get("configmaps", "profiles", namespace="qosched")
    assert cm is not None
    assert loads_profile(cm["data"]["nvidia-t4__tiny_net.json"]).service_time.mean_ms == 2.0
    assert filter_answer(app)["NodeNames"] == NODES
    # A second profile patches the same ConfigMap, keeping the first key.
    other = profile_doc(4.0, model="other_net")
    assert put(app, other, url="/profiles/nvidia-t4/other_net").status_code == 201
    cm = kube_api.get("configmaps", "profiles", namespace="qosched")
    assert cm is not None
    assert sorted(cm["data"]) == ["nvidia-t4__other_net.json", "nvidia-t4__tiny_net.json"]
    # Restart: the profiles come back from the ConfigMap before the first decision.
    assert filter_answer(k8s_app(cluster, kube_client))["NodeNames"] == NODES


def test_configmap_write_retries_a_resource_version_conflict(kube_api: FakeKubeAPI, kube_client: Any) -> None:
    kube_api.add_configmap("profiles", "qosched", {"keep.json": "{}"})
    kube_api.fail_next("configmaps/profiles", 409, times=2, method="PUT")
    sink = ConfigMapSink.from_ref(kube_client, "qosched/profiles")
    sink.write("nvidia-t4__tiny_net.json", "{}\n")
    assert kube_api.count(method="PUT", resource="configmaps") == 3
    assert kube_api.count(method="GET", resource="configmaps") == 3  # read again after each conflict
    assert kube_api.count(method="PATCH", resource="configmaps") == 0  # RBAC grants get/update only
    cm = kube_api.get("configmaps", "profiles", namespace="qosched")
    assert cm is not None
    assert cm["data"] == {"keep.json": "{}", "nvidia-t4__tiny_net.json": "{}\n"}


def test_configmap_write_gives_up_after_repeated_conflicts_and_the_upload_is_503(
    kube_api: FakeKubeAPI, kube_client: Any, cluster: Path
) -> None:
    kube_api.add_secret("upload", "qosched", {"token": TOKEN})
    kube_api.add_configmap("profiles", "qosched", {})
    app = k8s_app(cluster, kube_client)
    kube_api.fail_next("configmaps/profiles", 409, times=5, method="PUT")
    response = put(app, profile_doc())
    assert response.status_code == 503
    assert "gave up after 5 attempts (resourceVersion conflict)" in response.get_json()["error"]
    assert filter_answer(app)["FailedAndUnresolvableNodes"] == dict.fromkeys(NODES, NO_PROFILE)


def test_configmap_entries_that_are_invalid_are_skipped_at_start(
    kube_api: FakeKubeAPI, kube_client: Any
) -> None:
    good = dump_profile_json(loads_profile(orjson.dumps(profile_doc())))
    kube_api.add_configmap(
        "profiles",
        "qosched",
        {"nvidia-t4__tiny_net.json": good, "nvidia-t4__broken.json": "{", "nvidia-t4__renamed.json": good},
    )
    store = ProfileStore(directories=[])
    profiles = ConfigMapSink.from_ref(kube_client, "qosched/profiles").load()
    assert [p.key for p in profiles] == [("nvidia-t4", "tiny_net")]
    assert ("nvidia-t4", "tiny_net") not in store.current()


# ----------------------------------------------------------------------------- the CLI


def cli_upload(*argv: str) -> Any:
    return CliRunner().invoke(cli, ["profile", "upload", *argv])


def test_cli_usage_errors_exit_2(tmp_path: Path, token_file: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps(profile_doc(-1)))
    good = tmp_path / "good.json"
    good.write_bytes(orjson.dumps(profile_doc()))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases = [
        ([str(bad), "--url", "http://127.0.0.1:1", "--token-file", str(token_file)], "service_time_ms.mean"),
        (
            [str(tmp_path / "nope.json"), "--url", "http://127.0.0.1:1", "--token-file", str(token_file)],
            "cannot read",
        ),
        ([str(good), "--url", "http://127.0.0.1:1", "--token-file", str(empty)], "is empty"),
        ([str(good), "--url", "127.0.0.1:1", "--token-file", str(token_file)], "http:// or https://"),
        ([str(good), "--token-file", str(token_file)], "Missing option '--url'"),
    ]
    for argv, message in cases:
        result = cli_upload(*argv)
        assert result.exit_code == 2, (argv, result.output)
        assert message in result.output, (argv, result.output)


def test_cli_connection_refused_exits_1(tmp_path: Path, token_file: Path) -> None:
    good = tmp_path / "good.json"
    good.write_bytes(orjson.dumps(profile_doc()))
    result = cli_upload(
        str(good), "--url", f"http://127.0.0.1:{free_port()}", "--token-file", str(token_file)
    )
    assert result.exit_code == 1
    assert "PUT http://127.0.0.1:" in result.output
    assert "/profiles/nvidia-t4/tiny_net: ConnectionError" in result.output


@pytest.mark.slow
def test_cli_upload_against_a_live_gunicorn_server(cluster: Path, token_file: Path, tmp_path: Path) -> None:
    profile_file = tmp_path / "nvidia-t4__tiny_net.json"
    profile_file.write_bytes(orjson.dumps(profile_doc(2.0)))
    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope")
    profiles = tmp_path / "profiles"
    with serving("--cluster", str(cluster), "--profiles", str(profiles), "--token-file", str(token_file)) as (
        base,
        _,
    ):
        refused = subprocess.run(
            [
                str(QOSCHED_BIN),
                "profile",
                "upload",
                str(profile_file),
                "--url",
                base,
                "--token-file",
                str(wrong),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert f"PUT {base}/profiles/nvidia-t4/tiny_net: HTTP 401: invalid bearer token" in refused.stderr
        done = subprocess.run(
            [
                str(QOSCHED_BIN),
                "profile",
                "upload",
                str(profile_file),
                "--url",
                base + "/",
                "--token-file",
                str(token_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            f"uploaded nvidia-t4/tiny_net (created); stored in {profiles / 'nvidia-t4__tiny_net.json'}; profiles version "
        )
        answer = requests.post(
            base + "/filter",
            data=orjson.dumps(args(TINY, NODES)),
            headers={"Content-Type": JSON_CT},
            timeout=10,
        ).json()
        assert answer["NodeNames"] == NODES
    assert (profiles / "nvidia-t4__tiny_net.json").exists()


def test_uploads_need_only_the_verbs_manifests_rbac_grants(cluster: Path) -> None:
    """Against an API server enforcing ``manifests/rbac.yaml`` for the extender's ServiceAccount:
    Secret token, ConfigMap read/update, and create when the store is missing, all allowed."""
    import yaml

    from tests.kubefake import RbacAuthorizer

    manifests = Path(__file__).resolve().parents[2] / "manifests"
    objects = [
        d
        for p in sorted(manifests.glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    user = "system:serviceaccount:qosched-system:qosched"
    with FakeKubeAPI(authorizer=RbacAuthorizer(objects, user=user)) as api:
        api.add_secret("qosched-upload-token", "qosched-system", {"token": TOKEN})
        client = api.api_client()
        try:
            settings = {
                "CLUSTER_FILE": str(cluster),
                "UPLOAD_TOKEN_SECRET": "qosched-system/qosched-upload-token",
                "PROFILES_CONFIGMAP": "qosched-system/qosched-profiles",
            }
            app = create_app(
                settings, registry=CollectorRegistry(), api_client=client
            )  # the store is missing
            _FOLLOWING.append(app)
            assert put(app, profile_doc(2.0)).status_code == 201  # create
            assert put(app, profile_doc(3.0)).status_code == 200  # get + update
            denied = [r for r in api.requests if r.status == 403]
            assert denied == [], denied
            cm = api.get("configmaps", "qosched-profiles", namespace="qosched-system")
            assert cm is not None
            assert list(cm["data"]) == ["nvidia-t4__tiny_net.json"]
        finally:
            client.close()
