"""ProfileSet lookups, profile directories, durable writes and the hot-swapping ProfileStore."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from qosched.profiles.schema import (
    Profile,
    ProfileError,
    Provenance,
    ServiceTime,
    dump_profile_json,
    profile_to_json,
)
from qosched.profiles.store import (
    ProfileSet,
    ProfileStore,
    UnknownProfileError,
    bundled_profiles,
    load_profile_dir,
    merge,
    write_profile_file,
)

PROV = Provenance(source="test", method="hand-written", measured_on="nowhere")


def make(accelerator: str = "edgetpu", model: str = "mobilenet_v2", mean_ms: float = 4.91) -> Profile:
    return Profile(
        accelerator=accelerator,
        model=model,
        service_time=ServiceTime(mean_ms=mean_ms),
        memory_mib=100.0,
        provenance=PROV,
    )


@pytest.fixture
def small_set() -> ProfileSet:
    return ProfileSet(
        [
            make("edgetpu", "mobilenet_v2"),
            make("edgetpu", "inception_v3", 62.95),
            make("jetson-nano", "resnet50", 29.4),
        ]
    )


# ------------------------------------------------------------------------------ ProfileSet


def test_lookup_and_listing(small_set: ProfileSet) -> None:
    assert small_set.get("edgetpu", "inception_v3").mean_service_ms == 62.95
    assert small_set[("jetson-nano", "resnet50")].mean_service_ms == 29.4
    assert ("edgetpu", "mobilenet_v2") in small_set
    assert ("edgetpu", "resnet50") not in small_set
    assert small_set.find("edgetpu", "resnet50") is None
    assert small_set.models_for("edgetpu") == ("inception_v3", "mobilenet_v2")
    assert small_set.models_for("cpu") == ()
    assert small_set.accelerators() == ("edgetpu", "jetson-nano")
    assert len(small_set) == 3
    assert list(small_set) == [
        ("edgetpu", "inception_v3"),
        ("edgetpu", "mobilenet_v2"),
        ("jetson-nano", "resnet50"),
    ]


@pytest.mark.parametrize(
    ("accelerator", "model", "expected", "known"),
    [
        (
            "edgetpu",
            "resnet50",
            "no profile for model 'resnet50' on accelerator 'edgetpu'; models known for 'edgetpu': "
            "inception_v3, mobilenet_v2",
            ("inception_v3", "mobilenet_v2"),
        ),
        (
            "nvidia-t4",
            "resnet50",
            "no profile for model 'resnet50' on accelerator 'nvidia-t4': no profiles for that accelerator; "
            "known accelerators: edgetpu, jetson-nano",
            ("edgetpu", "jetson-nano"),
        ),
    ],
    ids=["unknown-model-lists-models", "unknown-accelerator-lists-accelerators"],
)
def test_unknown_profile_error_lists_known_keys(
    small_set: ProfileSet, accelerator: str, model: str, expected: str, known: tuple[str, ...]
) -> None:
    for lookup in (lambda: small_set.get(accelerator, model), lambda: small_set[(accelerator, model)]):
        with pytest.raises(UnknownProfileError) as info:
            lookup()
        assert str(info.value) == expected  # no KeyError quoting around the message
        assert info.value.known == known
        assert (info.value.accelerator, info.value.model) == (accelerator, model)
        assert isinstance(info.value, KeyError)


def test_empty_set_error_says_none_known() -> None:
    with pytest.raises(UnknownProfileError, match=r"known accelerators: \(none\)"):
        ProfileSet().get("cpu", "resnet18")


def test_duplicate_keys_rejected() -> None:
    with pytest.raises(ProfileError, match="duplicate profile for edgetpu/mobilenet_v2"):
        ProfileSet([make(), make(mean_ms=5.0)])


def test_version_is_a_content_hash(small_set: ProfileSet) -> None:
    same_content_other_order = ProfileSet(reversed(small_set.profiles()))
    assert same_content_other_order.version == small_set.version
    assert same_content_other_order == small_set
    changed = small_set.with_profile(make("edgetpu", "mobilenet_v2", 4.92))
    assert changed.version != small_set.version
    assert len(small_set.version) == 64
    assert ProfileSet().version != small_set.version


def test_with_profile_is_copy_on_write(small_set: ProfileSet) -> None:
    before = small_set.version
    added = small_set.with_profile(make("nvidia-t4", "resnet50", 3.0))
    replaced = small_set.with_profile(make("edgetpu", "mobilenet_v2", 9.9))
    assert ("nvidia-t4", "resnet50") not in small_set
    assert small_set.get("edgetpu", "mobilenet_v2").mean_service_ms == 4.91
    assert small_set.version == before
    assert added.get("nvidia-t4", "resnet50").mean_service_ms == 3.0
    assert replaced.get("edgetpu", "mobilenet_v2").mean_service_ms == 9.9
    assert len(replaced) == len(small_set)


def test_without(small_set: ProfileSet) -> None:
    smaller = small_set.without("edgetpu", "mobilenet_v2")
    assert len(smaller) == 2
    assert ("edgetpu", "mobilenet_v2") in small_set
    with pytest.raises(UnknownProfileError):
        small_set.without("edgetpu", "resnet50")


def test_merge_override_wins(small_set: ProfileSet) -> None:
    override = ProfileSet([make("edgetpu", "mobilenet_v2", 5.5), make("cpu", "resnet18", 40.0)])
    merged = merge(small_set, override)
    assert merged.get("edgetpu", "mobilenet_v2").mean_service_ms == 5.5
    assert merged.get("edgetpu", "inception_v3").mean_service_ms == 62.95
    assert merged.get("cpu", "resnet18").mean_service_ms == 40.0
    assert len(merged) == 4


def test_to_json_is_canonical(small_set: ProfileSet) -> None:
    assert small_set.to_json() == [profile_to_json(p) for p in small_set.profiles()]


# ---------------------------------------------------------------------------- directories


def _write(directory: Path, name: str, doc: dict[str, Any] | str) -> Path:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_load_profile_dir_reads_profiles_and_skips_other_files(tmp_path: Path) -> None:
    write_profile_file(make("edgetpu", "mobilenet_v2"), tmp_path)
    write_profile_file(make("cpu", "resnet18", 40.0), tmp_path)
    _write(tmp_path, "README.md", "not a profile")
    _write(tmp_path, ".cpu__resnet18.json.abc.tmp", "{half a file")
    loaded = load_profile_dir(tmp_path)
    assert set(loaded) == {("edgetpu", "mobilenet_v2"), ("cpu", "resnet18")}
    assert loaded.get("cpu", "resnet18") == make("cpu", "resnet18", 40.0)


def test_file_name_content_mismatch_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "edgetpu__resnet50.json", profile_to_json(make("edgetpu", "mobilenet_v2")))
    with pytest.raises(ProfileError) as info:
        load_profile_dir(tmp_path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "holds accelerator 'edgetpu', model 'mobilenet_v2'" in message
    assert "rename it to edgetpu__mobilenet_v2.json" in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("mobilenet_v2.json", profile_to_json(make()), "file names must be <accelerator>__<model>.json"),
        ("edgetpu__mobilenet_v2.json", "{broken", "invalid JSON at line 1"),
        ("edgetpu__mobilenet_v2.json", {**profile_to_json(make()), "extra": 1}, "unknown field `extra`"),
    ],
    ids=["no-double-underscore", "broken-json", "schema-error"],
)
def test_bad_files_are_named(tmp_path: Path, name: str, content: dict[str, Any] | str, expected: str) -> None:
    path = _write(tmp_path, name, content)
    with pytest.raises(ProfileError) as info:
        load_profile_dir(tmp_path)
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="profile directory does not exist"):
        load_profile_dir(tmp_path / "absent")


def test_write_profile_file_is_canonical_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = write_profile_file(make(), tmp_path / "new")
    assert target == tmp_path / "new" / "edgetpu__mobilenet_v2.json"
    assert target.read_text() == dump_profile_json(make())
    write_profile_file(make(mean_ms=6.0), tmp_path / "new")  # overwrite in place
    assert json.loads(target.read_text())["service_time_ms"]["mean"] == 6
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["edgetpu__mobilenet_v2.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_profile_file(make(), tmp_path)
    old_text = target.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_profile_file(make(mean_ms=7.0), tmp_path)
    assert target.read_text() == old_text
    assert [p.name for p in tmp_path.iterdir()] == ["edgetpu__mobilenet_v2.json"]


# ------------------------------------------------------------------------------ ProfileStore


def test_store_starts_from_bundled_and_directories(tmp_path: Path) -> None:
    write_profile_file(make("cpu", "toy_model", 12.0), tmp_path)
    store = ProfileStore(directories=[tmp_path])
    current = store.current()
    assert current.get("cpu", "toy_model").mean_service_ms == 12.0
    for key in bundled_profiles():
        assert key in current
    assert ProfileStore(directories=[tmp_path], include_bundled=False).current().accelerators() == ("cpu",)


def test_store_directory_overrides_bundled(tmp_path: Path) -> None:
    bundled = bundled_profiles().get("edgetpu", "mobilenet_v2")
    write_profile_file(dataclasses.replace(bundled, service_time=ServiceTime(mean_ms=5.5)), tmp_path)
    store = ProfileStore(directories=[tmp_path])
    assert store.current().get("edgetpu", "mobilenet_v2").mean_service_ms == 5.5


def test_put_persists_and_swaps(tmp_path: Path) -> None:
    store = ProfileStore(directories=[tmp_path], include_bundled=False)
    old = store.current()
    new = store.put(make("cpu", "resnet18", 40.0), persist_dir=tmp_path)
    assert store.current() is new
    assert ("cpu", "resnet18") not in old  # the old set is untouched
    assert (tmp_path / "cpu__resnet18.json").read_text() == dump_profile_json(make("cpu", "resnet18", 40.0))
    # an uploaded JSON body works the same way, and survives a reload
    store.put(profile_to_json(make("cpu", "resnet50", 90.0)), persist_dir=tmp_path)
    reloaded = store.reload()
    assert set(reloaded) == {("cpu", "resnet18"), ("cpu", "resnet50")}


def test_put_without_persist_dir_is_memory_only(tmp_path: Path) -> None:
    store = ProfileStore(directories=[tmp_path], include_bundled=False)
    store.put(make("cpu", "resnet18", 40.0))
    assert ("cpu", "resnet18") in store.current()
    assert list(tmp_path.iterdir()) == []
    assert ("cpu", "resnet18") not in store.reload()


@pytest.mark.parametrize(
    "bad",
    [
        {**profile_to_json(make()), "memory_mib": -1},
        {**profile_to_json(make()), "service_time_ms": {"mean": 4.0, "second_moment": 1.0}},
        {"schema_version": 1},
    ],
    ids=["negative-memory", "second-moment-below-mean-squared", "missing-fields"],
)
def test_invalid_put_changes_nothing(tmp_path: Path, bad: dict[str, Any]) -> None:
    store = ProfileStore(directories=[tmp_path], include_bundled=False)
    before = store.current()
    with pytest.raises(ProfileError):
        store.put(bad, persist_dir=tmp_path)
    assert store.current() is before
    assert list(tmp_path.iterdir()) == []


def test_reload_picks_up_new_files_and_keeps_the_set_on_error(tmp_path: Path) -> None:
    store = ProfileStore(directories=[tmp_path], include_bundled=False)
    assert len(store.current()) == 0
    write_profile_file(make("cpu", "resnet18", 40.0), tmp_path)
    good = store.reload()
    assert store.current() is good
    assert len(good) == 1
    _write(tmp_path, "cpu__resnet50.json", "{not json")
    with pytest.raises(ProfileError, match=r"cpu__resnet50\.json"):
        store.reload()
    assert store.current() is good


def test_replace_returns_previous(small_set: ProfileSet) -> None:
    store = ProfileStore(ProfileSet(), include_bundled=False)
    previous = store.replace(small_set)
    assert len(previous) == 0
    assert store.current() is small_set
    with pytest.raises(TypeError):
        store.replace({})  # type: ignore[arg-type]


def _short_request(store: ProfileStore, problems: list[str]) -> str:
    """A short request: takes the current set and reads it several times; returns its version."""
    taken = store.current()
    version = taken.version
    mean = taken.get("cpu", "resnet18").mean_service_ms
    for _ in range(5):
        if taken.get("cpu", "resnet18").mean_service_ms != mean or taken.version != version:
            problems.append("set changed under a reader")
    if taken.get("cpu", "resnet18") != make("cpu", "resnet18", mean):
        problems.append(f"torn profile {mean}")
    return version


@pytest.mark.timeout(60)
def test_readers_keep_their_set_during_hot_swaps(tmp_path: Path) -> None:
    """A request in flight keeps the set it took, whatever uploads happen meanwhile."""
    store = ProfileStore(ProfileSet([make("cpu", "resnet18", 1.0)]), include_bundled=False)
    puts = 200
    readers_started = threading.Barrier(3)  # the writer starts only once both readers hold a set
    writer_done = threading.Event()
    problems: list[str] = []
    versions_seen: set[str] = set()

    def reader() -> None:
        held = store.current()  # a long request: holds its set through every upload below
        held_version = held.version
        readers_started.wait()
        while True:
            finished = writer_done.is_set()
            versions_seen.add(_short_request(store, problems))
            if finished:
                break
        if held.get("cpu", "resnet18").mean_service_ms != 1.0 or held.version != held_version:
            problems.append("the held set changed")

    def writer() -> None:
        readers_started.wait()
        for i in range(2, puts + 2):
            store.put(make("cpu", "resnet18", float(i)), persist_dir=tmp_path if i % 50 == 0 else None)
        writer_done.set()

    threads = [
        threading.Thread(target=reader),
        threading.Thread(target=reader),
        threading.Thread(target=writer),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert store.current().get("cpu", "resnet18").mean_service_ms == float(puts + 1)
    # each reader's last pass started after the writer finished, so it saw the final set
    assert store.current().version in versions_seen
    assert json.loads((tmp_path / "cpu__resnet18.json").read_text())["service_time_ms"]["mean"] == 200


def test_concurrent_puts_lose_no_update(tmp_path: Path) -> None:
    store = ProfileStore(ProfileSet(), include_bundled=False)

    def put_many(accelerator: str) -> None:
        for i in range(50):
            store.put(make(accelerator, f"model_{i}", 1.0 + i))

    threads = [threading.Thread(target=put_many, args=(acc,)) for acc in ("cpu", "nvidia-t4", "edgetpu")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.current()) == 150


def test_profiler_output_folder_loads_as_a_profile_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``qosched profile run --out DIR`` writes report.json and colocation.json beside the
    profiles; the folder is usable as ``--profiles DIR`` as it is (issue 16)."""
    _write(tmp_path, "edgetpu__mobilenet_v2.json", profile_to_json(make()))
    _write(tmp_path, "report.json", {"summary": {}, "rows": []})
    _write(tmp_path, "colocation.json", {"format": 1, "accelerator": "cpu", "service_ms": {}})
    with caplog.at_level("INFO", logger="qosched.profiles.store"):
        loaded = load_profile_dir(tmp_path)
    assert set(loaded) == {("edgetpu", "mobilenet_v2")}
    skipped = sorted(r.getMessage().split(":")[0] for r in caplog.records if "skipped" in r.getMessage())
    assert skipped == [str(tmp_path / "colocation.json"), str(tmp_path / "report.json")]


def test_bundled_measurement_folder_loads(caplog: pytest.LogCaptureFixture) -> None:
    folder = Path(__file__).resolve().parents[2] / "profiles" / "measurements" / "cpu-2026-11-24" / "seed0"
    if not folder.is_dir():
        pytest.skip(f"{folder} not in this checkout")
    loaded = load_profile_dir(folder)
    assert ("cpu", "resnet18") in set(loaded)
