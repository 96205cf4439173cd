"""Leader election on a coordination.k8s.io Lease (``qosched.extender.kube.leader``) through the
official client against the fake apiserver: create, renew, follow, take over after expiry
(observed on the follower's own clock), 409 on a stale update, release, transient errors and
the renew deadline, and the controller loop acting only while leading."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from qosched.extender.controller.loop import CycleReport, run_loop
from qosched.extender.kube.leader import LeaderElector, LeaseSettings, default_identity
from tests.kubefake.server import FakeKubeAPI

NS, NAME = "qosched-system", "qosched-controller"
LEASES = "leases.coordination.k8s.io"  # resource as the fake logs it


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def coord(kube_client: Any) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(kube_client)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def elector(coord: client.CoordinationV1Api, identity: str, clock: FakeClock, **kw: float) -> LeaderElector:
    return LeaderElector(coord, identity, LeaseSettings(**kw), monotonic=clock)  # type: ignore[arg-type]


def lease(api: FakeKubeAPI) -> dict[str, Any]:
    obj = api.get("leases", NAME, NS)
    assert obj is not None
    return obj


def test_first_replica_creates_the_lease(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    a = elector(coord, "a", clock)
    assert a.try_acquire_or_renew()
    assert a.is_leader
    spec = lease(kube_api)["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["renewTime"]
    assert spec["acquireTime"]
    assert kube_api.count(verb="create", resource=LEASES) == 1


def test_renewal_updates_renew_time_with_optimistic_concurrency(
    kube_api: FakeKubeAPI, coord: Any, clock: FakeClock
) -> None:
    a = elector(coord, "a", clock)
    a.try_acquire_or_renew()
    rv = lease(kube_api)["metadata"]["resourceVersion"]
    clock.t += 2
    assert a.try_acquire_or_renew()
    after = lease(kube_api)
    assert int(after["metadata"]["resourceVersion"]) > int(rv)
    assert after["spec"]["leaseTransitions"] == 0  # a renewal is no transition
    puts = kube_api.calls(method="PUT", resource=LEASES)
    assert puts
    assert puts[-1].body["metadata"]["resourceVersion"] == rv


def test_follower_waits_a_full_lease_duration_on_its_own_clock(
    kube_api: FakeKubeAPI, coord: Any, clock: FakeClock
) -> None:
    a = elector(coord, "a", clock)
    b = elector(coord, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert not b.is_leader
    # a goes silent; b must see the record unchanged for 15 s of *its* time before taking over.
    clock.t += 14.9
    assert not b.try_acquire_or_renew()
    clock.t += 0.2
    assert b.try_acquire_or_renew()
    assert b.is_leader
    spec = lease(kube_api)["spec"]
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    # a wakes up: the record changed (b holds it) and is fresh, so a follows; it stopped acting
    # anyway, its renew deadline (10 s) having passed.
    assert not a.is_leader
    assert not a.try_acquire_or_renew()


def test_renewing_leader_is_never_displaced(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    a = elector(coord, "a", clock)
    b = elector(coord, "b", clock)
    a.try_acquire_or_renew()
    for _ in range(8):  # 16 s: past a lease duration
        clock.t += 2.0
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert lease(kube_api)["spec"]["holderIdentity"] == "a"


def test_stale_update_409_means_lost(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    a = elector(coord, "a", clock)
    assert a.try_acquire_or_renew()
    kube_api.fail_next(rf"/leases/{NAME}$", 409, method="PUT")
    clock.t += 2
    assert not a.try_acquire_or_renew()
    assert not a.is_leader


def test_real_conflict_between_two_writers(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    """b read the expired lease, a renewed in between: b's update carries a stale resourceVersion."""
    a = elector(coord, "a", clock)
    a.try_acquire_or_renew()
    b = elector(coord, "b", clock)
    b.try_acquire_or_renew()  # b observes a's record
    clock.t += 16  # from b's view the record is stale

    real_read = coord.read_namespaced_lease

    def read_then_a_renews(name: str, namespace: str, **kw: Any) -> Any:
        obj = real_read(name, namespace, **kw)
        if threading.current_thread().name != "a-renews":
            t = threading.Thread(target=a.try_acquire_or_renew, name="a-renews")
            t.start()
            t.join()
        return obj

    b.api = type("Api", (), {"read_namespaced_lease": staticmethod(read_then_a_renews),
                              "replace_namespaced_lease": coord.replace_namespaced_lease})()  # fmt: skip
    assert not b.try_acquire_or_renew()
    assert kube_api.count(method="PUT", resource=LEASES, status=409) == 1
    assert lease(kube_api)["spec"]["holderIdentity"] == "a"


def test_release_hands_over_at_once(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    a = elector(coord, "a", clock)
    b = elector(coord, "b", clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    assert a.release()
    assert not a.is_leader
    spec = lease(kube_api)["spec"]
    assert spec.get("holderIdentity") is None
    assert spec["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew()  # empty holder: no need to wait for expiry
    assert lease(kube_api)["spec"]["holderIdentity"] == "b"
    assert not a.release()  # not ours any more


def test_transient_error_keeps_leading_until_the_renew_deadline(
    kube_api: FakeKubeAPI, coord: Any, clock: FakeClock
) -> None:
    a = elector(coord, "a", clock)
    a.try_acquire_or_renew()
    kube_api.fail_next(rf"/leases/{NAME}$", 500, times=10, method="GET")
    clock.t += 5
    assert a.try_acquire_or_renew()  # still within the 10 s renew deadline
    clock.t += 5.1
    assert not a.try_acquire_or_renew()
    assert not a.is_leader


def test_lease_deleted_is_recreated(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    a = elector(coord, "a", clock)
    a.try_acquire_or_renew()
    kube_api.delete("leases", NAME, NS)
    clock.t += 2
    assert a.try_acquire_or_renew()
    assert kube_api.count(verb="create", resource=LEASES) == 2


def test_create_race_409(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    kube_api.fail_next(r"/leases$", 409, method="POST")
    a = elector(coord, "a", clock)
    assert not a.try_acquire_or_renew()


@pytest.mark.parametrize(
    "kw",
    [
        {"lease_duration_s": 10.0, "renew_deadline_s": 10.0},
        {"renew_deadline_s": 2.0, "retry_period_s": 2.0},
        {"retry_period_s": 0.0},
        {"name": ""},
    ],
    ids=["deadline-equals-duration", "retry-equals-deadline", "retry-zero", "empty-name"],
)
def test_settings_rejected(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="LeaseSettings"):
        LeaseSettings(**kw)


def test_identity_is_unique() -> None:
    assert default_identity() != default_identity()


# ------------------------------------------------------------------------------ the loop


class CountingController:
    """Stands in for QoEController in run_loop: counts cycles."""

    def __init__(self, interval_s: float) -> None:
        self.settings = type("S", (), {"interval_s": interval_s})()
        self.cycles = 0

    def cycle(self) -> CycleReport:
        self.cycles += 1
        return CycleReport(skipped="test")


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_only_the_leader_runs_cycles(kube_api: FakeKubeAPI, coord: Any, stop: threading.Event) -> None:
    settings = LeaseSettings(lease_duration_s=3.0, renew_deadline_s=2.0, retry_period_s=0.05)
    a, b = LeaderElector(coord, "a", settings), LeaderElector(coord, "b", settings)
    ca, cb = CountingController(0.05), CountingController(0.05)
    threads = [
        threading.Thread(target=run_loop, args=(c, stop), kwargs={"elector": e, "retry_period_s": 0.05})
        for c, e in ((ca, a), (cb, b))
    ]
    for t in threads:
        t.start()
    try:
        deadline = threading.Event()
        deadline.wait(0.6)
        assert (ca.cycles > 0) != (cb.cycles > 0), (ca.cycles, cb.cycles)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    assert lease(kube_api)["spec"].get("holderIdentity") is None  # released on stop


def test_loop_without_elector_runs_the_given_iterations(stop: threading.Event) -> None:
    c = CountingController(0.01)
    reports: list[CycleReport] = []
    assert run_loop(c, stop, iterations=3, on_report=reports.append) == 3  # type: ignore[arg-type]
    assert c.cycles == 3
    assert len(reports) == 3


def test_times_always_carry_microseconds(kube_api: FakeKubeAPI, coord: Any, clock: FakeClock) -> None:
    """The apiserver parses MicroTime with exactly six fractional digits; isoformat() drops a zero
    fraction, so a stamp on a whole second is moved by 1 us."""
    whole = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    a = LeaderElector(coord, "a", LeaseSettings(), monotonic=clock, wall_clock=lambda: whole)
    assert a.try_acquire_or_renew()
    spec = lease(kube_api)["spec"]
    assert re.fullmatch(r"2025-01-01T12:00:00\.000001(\+00:00|Z)", spec["renewTime"]), spec["renewTime"]
    assert re.fullmatch(r"2025-01-01T12:00:00\.000001(\+00:00|Z)", spec["acquireTime"])
