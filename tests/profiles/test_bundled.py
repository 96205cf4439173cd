"""The bundled profiles: valid, canonical, documented, and faithful to their sources.

Numbers copied from a source are checked against a hand-copied table here (from
``shared/spec/models.md`` §A and the files PROVENANCE.md names); numbers derived from
``../shared/data/ibis/`` are recomputed from that data when it is present.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from qosched.profiles.schema import dump_profile_json, load_profile_file
from qosched.profiles.store import bundled_profiles, load_profile_dir

BUNDLED_DIR = Path(str(resources.files("qosched.profiles").joinpath("bundled")))
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
IBIS = SHARED / "data" / "ibis"
needs_ibis = pytest.mark.skipif(not IBIS.is_dir(), reason="../shared/data/ibis not present")

# models.md §A: edge TPU solo profiles (S ms, swap O ms), Jetson Nano S ms.
EDGETPU_TABLE = {
    "efficientnet_s": (9.83, 17.33),
    "efficientnet_m": (15.85, 22.63),
    "efficientnet_l": (42.18, 17.53),
    "mobilenet_v1": (4.55, 15.12),
    "mobilenet_v2": (4.91, 10.43),
    "inception_v3": (62.95, 19.39),
    "inception_v4": (125.13, 19.43),
    "ssd_mobilenet_v1": (18.03, 23.93),
    "ssd_mobilenet_v2": (19.23, 24.63),
}
JETSON_TABLE = {"resnet18": 10.8, "resnet50": 29.4}
# NVIDIA DeepLearningExamples triton/resnet50 README, Offline, Client Batch Size 1: (avg, p95, p99) ms
TRITON_RESNET50 = {
    "nvidia-t4": (3.003, 3.093, 3.189),
    "nvidia-v100": (2.838, 3.051, 3.143),
    "nvidia-a100": (2.128, 2.245, 2.272),
}
DEVICE_MIB = {
    "edgetpu": 4096,
    "jetson-nano": 4096,
    "nvidia-t4": 16384,
    "nvidia-v100": 32768,
    "nvidia-a100": 81920,
}


def _bundled_files() -> list[Path]:
    """Bundled files written from published sources (cpu__*.json come from the profiler)."""
    return sorted(p for p in BUNDLED_DIR.glob("*.json") if not p.name.startswith("cpu__"))


def test_contract_keys_are_bundled() -> None:
    profiles = bundled_profiles()
    for model in EDGETPU_TABLE:
        assert ("edgetpu", model) in profiles
    for key in [("jetson-nano", "resnet18"), ("jetson-nano", "resnet50")]:
        assert key in profiles
    for gpu in TRITON_RESNET50:
        assert set(profiles.models_for(gpu)) >= {"resnet50", "resnet18", "mobilenet_v2"}


@pytest.mark.parametrize("path", _bundled_files(), ids=lambda p: p.name)
def test_file_is_valid_canonical_and_named_for_its_content(path: Path) -> None:
    profile = load_profile_file(path)
    assert profile.filename == path.name
    assert path.read_text(encoding="utf-8") == dump_profile_json(profile)  # round-trips byte for byte
    assert profile.device is not None
    assert profile.device.memory_mib == DEVICE_MIB[profile.accelerator]
    assert profile.memory_mib <= 0.8 * profile.device.memory_mib  # placeable under models.md's 0.8 rule
    for text in (profile.provenance.source, profile.provenance.method, profile.provenance.measured_on):
        assert len(text) > 20


def test_bundled_set_equals_the_directory() -> None:
    assert load_profile_dir(BUNDLED_DIR) == bundled_profiles()


@pytest.mark.parametrize(("model", "s_o"), EDGETPU_TABLE.items(), ids=list(EDGETPU_TABLE))
def test_edgetpu_numbers_are_the_papers(model: str, s_o: tuple[float, float]) -> None:
    p = bundled_profiles().get("edgetpu", model)
    assert (p.service_time.mean_ms, p.swap_overhead_ms) == s_o
    assert p.memory_mib == 100
    assert p.frontend_service_time_ms == 20


@pytest.mark.parametrize(("model", "s"), JETSON_TABLE.items(), ids=list(JETSON_TABLE))
def test_jetson_numbers_are_the_papers(model: str, s: float) -> None:
    p = bundled_profiles().get("jetson-nano", model)
    assert p.service_time.mean_ms == s
    assert p.service_time.is_deterministic
    assert p.frontend_service_time_ms == 24  # Ibis TensorRT placement: 1000/24 ms


@pytest.mark.parametrize(("gpu", "figures"), TRITON_RESNET50.items(), ids=list(TRITON_RESNET50))
def test_gpu_resnet50_is_the_published_figure(gpu: str, figures: tuple[float, float, float]) -> None:
    st = bundled_profiles().get(gpu, "resnet50").service_time
    assert (st.mean_ms, st.p95_ms, st.p99_ms) == figures


@pytest.mark.parametrize("gpu", list(TRITON_RESNET50))
@pytest.mark.parametrize(("model", "ratio"), [("resnet18", 10.8 / 29.4), ("mobilenet_v2", 13.02 / 29.4)])
def test_gpu_estimates_follow_their_stated_formula(gpu: str, model: str, ratio: float) -> None:
    profiles = bundled_profiles()
    p = profiles.get(gpu, model)
    expected = profiles.get(gpu, "resnet50").service_time.mean_ms * ratio
    assert p.service_time.mean_ms == pytest.approx(expected, abs=0.0006)  # written with 3 decimals
    assert p.provenance.method.startswith("estimate:")
    assert "estimated" in p.provenance.measured_on


def test_only_the_documented_estimates_say_estimate() -> None:
    estimated = {p.key for p in bundled_profiles().profiles() if p.provenance.method.startswith("estimate:")}
    assert estimated == {(gpu, m) for gpu in TRITON_RESNET50 for m in ("resnet18", "mobilenet_v2")}


def test_provenance_table_lists_every_bundled_file() -> None:
    text = (BUNDLED_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| ([a-z0-9-]+__[a-z0-9_]+\.json) \|", text, flags=re.MULTILINE))
    assert listed == {p.name for p in _bundled_files()}


def test_provenance_table_means_match_the_files() -> None:
    text = (BUNDLED_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    for name, mean in re.findall(
        r"^\| ([a-z0-9-]+__[a-z0-9_]+\.json) \| ([0-9.]+) \|", text, flags=re.MULTILINE
    ):
        assert load_profile_file(BUNDLED_DIR / name).service_time.mean_ms == float(mean), name


# -------------------------------------------------------- recomputed from ../shared/data/ibis


def _clean_device_times_ms() -> dict[str, list[float]]:
    """Device times of requests that found the TPU idle with their own model resident.

    Per experiment (``vary_rho``), in submission order: a request is clean when every earlier
    request finished before its ``tpu_submit_time`` (no queueing) and the last to finish served
    the same model (no swap). Its device time is ``tpu_end_time - tpu_submit_time``.
    """
    path = IBIS / "queueing_validation" / "queuing_tpu_inception_v3Xssd_mobilenet_v2.csv"
    experiments: dict[str, list[dict[str, str]]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            experiments[row["vary_rho"]].append(row)
    clean: dict[str, list[float]] = defaultdict(list)
    for rows in experiments.values():
        rows.sort(key=lambda r: float(r["tpu_submit_time"]))
        last_end, last_model = -math.inf, None
        for row in rows:
            submit, end = float(row["tpu_submit_time"]), float(row["tpu_end_time"])
            if last_model == row["model"] and last_end <= submit:
                clean[row["model"]].append((end - submit) * 1000.0)
            if end > last_end:
                last_end, last_model = end, row["model"]
    return clean


@needs_ibis
@pytest.mark.parametrize(
    ("model", "count", "empirical_mean_ms"),
    [("inception_v3", 403, 63.25), ("ssd_mobilenet_v2", 2738, 22.79)],
    ids=["inception_v3", "ssd_mobilenet_v2"],
)
def test_edgetpu_second_moment_recomputed_from_the_csv(
    model: str, count: int, empirical_mean_ms: float
) -> None:
    times = _clean_device_times_ms()[model]
    n = len(times)
    mean = sum(times) / n
    scv = (sum(t * t for t in times) / n - mean * mean) / (mean * mean)
    assert n == count
    assert mean == pytest.approx(empirical_mean_ms, abs=0.005)
    st = bundled_profiles().get("edgetpu", model).service_time
    # E[S²] = S²(1 + c²) with the paper's S; the file rounds E[S²] to 0.01 ms², so c² is exact
    # to 0.005 / S² (1.3e-6 for inception_v3, 1.4e-5 for ssd_mobilenet_v2).
    assert st.second_moment_ms2 == pytest.approx(st.mean_ms**2 * (1 + scv), abs=0.005 + 1e-9)
    assert st.scv == pytest.approx(scv, abs=0.005 / st.mean_ms**2 + 1e-12)


def _load_yaml_documents(path: Path) -> list[Any]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@needs_ibis
def test_jetson_profiles_recomputed_from_the_workloads() -> None:
    rates: dict[str, set[float]] = defaultdict(set)
    memory: dict[str, list[float]] = defaultdict(list)
    for doc in _load_yaml_documents(IBIS / "workloads" / "gpu-workload1.yaml"):
        for m in doc["models"]:
            rates[m["model_name"]].add(float(m["service_rate"]))
            memory[m["model_name"]].append(float(m["backend_memory"]))
    for doc in _load_yaml_documents(IBIS / "workloads" / "heter-toy_workload.yaml"):
        for m in doc:
            rates[m["model_name"]].add(float(m["service_rate_gpu"]))
            memory[m["model_name"]].append(float(m["backend_memory_gpu"]))
    profiles = bundled_profiles()
    for model in ("googlenet", "resnet34", "inception_v3", "mobilenet_v2"):
        (rate,) = rates[model]
        p = profiles.get("jetson-nano", model)
        assert p.service_time.mean_ms == pytest.approx(1000.0 / rate, abs=0.0006), model
        assert p.memory_mib == max(memory[model]), model
    for model, s in JETSON_TABLE.items():  # the workload rates agree with the paper within 1 %
        (rate,) = rates[model]
        assert 1000.0 / rate == pytest.approx(s, rel=0.01)
        assert profiles.get("jetson-nano", model).memory_mib == max(memory[model])


@needs_ibis
def test_edgetpu_memory_is_the_workloads_backend_memory() -> None:
    declared: dict[str, float] = {}
    for doc in _load_yaml_documents(IBIS / "workloads" / "edgetpu-workload1.yaml"):
        for m in doc["models"]:
            declared[m["model_filename"]] = float(m["backend_memory"])
    for doc in _load_yaml_documents(IBIS / "workloads" / "heter-toy_workload.yaml"):
        for m in doc:
            declared[m["model_filename_tpu"]] = float(m["backend_memory_tpu"])
    assert set(declared.values()) == {100.0}
    for p in bundled_profiles().profiles():
        if p.accelerator == "edgetpu":
            assert p.memory_mib == 100.0
