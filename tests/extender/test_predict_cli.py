"""``qosched predict`` (contract §3): output, unbounded latency, usage errors, installed script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main
from qosched.extender.cli.predict import parse_colocate

REPO = Path(__file__).resolve().parents[2]


def _profile(directory: Path, accelerator: str, model: str, mean_ms: float, **extra: object) -> None:
    doc = {
        "schema_version": 1,
        "accelerator": accelerator,
        "model": model,
        "service_time_ms": {"mean": mean_ms},
        "memory_mib": 100,
        "provenance": {"source": "test", "method": "hand-written", "measured_on": "nowhere"},
        **extra,
    }
    (directory / f"{accelerator}__{model}.json").write_text(json.dumps(doc))


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    _profile(tmp_path, "test-gpu", "small", 20.0, frontend_service_time_ms=3.0)
    _profile(tmp_path, "test-gpu", "large", 30.0, frontend_service_time_ms=3.0)
    _profile(tmp_path, "edgetpu", "small", 20.0, swap_overhead_ms=10.0)
    _profile(tmp_path, "edgetpu", "large", 30.0, swap_overhead_ms=10.0)
    return tmp_path


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["predict", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (
            ["--accelerator", "test-gpu", "--colocate", "small:10,large:10"],
            [("small", 10.0, 45.0, 0.5), ("large", 10.0, 55.0, 0.5)],
            # time slicing (§A): E[S] = 25, ρ = 0.01·20 + 0.01·30 = 0.5, W = 25·0.5/0.5 = 25
        ),
        (
            ["--accelerator", "test-gpu", "--colocate", "large:10,small:10"],
            [("large", 10.0, 55.0, 0.5), ("small", 10.0, 45.0, 0.5)],
            # same device, input order kept
        ),
        (
            ["--accelerator", "test-gpu", "--colocate", "small:25"],
            [("small", 25.0, 30.0, 0.5)],
            # alone: M/D/1 = 20 + 0.5·20/(2·0.5)
        ),
        (
            ["--accelerator", "edgetpu", "--colocate", "small:10,large:10"],
            [("small", 10.0, 48.75, 0.6), ("large", 10.0, 58.75, 0.6)],
            # edge TPU: q = 0.5, S' = (25, 35), ρ = 0.6, E[S'²] = (650 + 1250)/2 = 950 (Bernoulli),
            # W = 0.02·950/(2·0.4) = 23.75
        ),
        (
            ["--accelerator", "test-gpu", "--colocate", "small:10,large:10", "--sharing", "mps"],
            [
                ("small", 10.0, 44 + 0.01 * 44**2 / (2 * 0.56), 0.44),
                ("large", 10.0, 66 + 0.01 * 66**2 / (2 * 0.34), 0.66),
            ],
            # MPS, equal halves: stretch (1 + 0.1·1)/0.5 = 2.2 → S = (44, 66), own M/D/1 queues
        ),
        (
            ["--accelerator", "test-gpu", "--colocate", "small:10,large:10", "--end-to-end"],
            [("small", 10.0, 45.0 + 3 / 0.97 + 10, 0.5), ("large", 10.0, 55.0 + 3 / 0.97 + 10, 0.5)],
            # + front end M/M/1 3/(1 − 0.01·3) + network 10 ms
        ),
        (
            ["--accelerator", "test-gpu", "--colocate", "small:0"],
            [("small", 0.0, 20.0, 0.0)],
        ),
    ],
    ids=["time-slicing", "input-order", "alone-md1", "edgetpu", "mps-split", "end-to-end", "rate-0"],
)
def test_predictions(
    profiles_dir: Path, args: list[str], want: list[tuple[str, float, float, float]]
) -> None:
    code, out, err = _run(*args, "--profiles", str(profiles_dir))
    assert code == 0, err
    rows = json.loads(out)
    assert [list(r) for r in rows] == [["model", "rate_rps", "predicted_latency_ms", "utilization"]] * len(
        want
    )
    for row, (model, rate, latency, util) in zip(rows, want, strict=True):
        assert row["model"] == model
        assert row["rate_rps"] == rate
        assert row["predicted_latency_ms"] == pytest.approx(latency, rel=1e-9)
        assert row["utilization"] == pytest.approx(util, rel=1e-9)


def test_unbounded_is_null_with_a_note(profiles_dir: Path) -> None:
    code, out, err = _run(
        "--accelerator", "test-gpu", "--colocate", "small:30,large:20", "--profiles", str(profiles_dir)
    )
    assert code == 0
    rows = json.loads(out)  # strict JSON: no Infinity
    assert [r["predicted_latency_ms"] for r in rows] == [None, None]
    assert rows[0]["utilization"] == pytest.approx(1.2)  # ρ = 0.03·20 + 0.02·30
    assert "small: latency unbounded" in err
    assert "printed as null" in err


def test_edgetpu_ignores_the_sharing_label_with_a_note(profiles_dir: Path) -> None:
    code, out, err = _run(
        "--accelerator",
        "edgetpu",
        "--colocate",
        "small:10,large:10",
        "--sharing",
        "mps",
        "--profiles",
        str(profiles_dir),
    )
    assert code == 0
    assert [r["predicted_latency_ms"] for r in json.loads(out)] == pytest.approx([48.75, 58.75])
    assert "modelled as 'edgetpu'" in err


def test_bundled_profiles_are_the_default() -> None:
    code, out, _ = _run("--accelerator", "edgetpu", "--colocate", "inception_v3:1.214,ssd_mobilenet_v2:7.149")
    assert code == 0
    rows = json.loads(out)
    # Ibis vary_rho=0.1 measured 88.3 and 34.2 ms (end − start): the prediction is within 10 %
    assert rows[0]["predicted_latency_ms"] == pytest.approx(88.3, rel=0.1)
    assert rows[1]["predicted_latency_ms"] == pytest.approx(34.2, rel=0.15)


@pytest.mark.parametrize(
    ("colocate", "accelerator", "match"),
    [
        ("nosuch:1", "edgetpu", "models known for 'edgetpu': efficientnet_l"),
        ("mobilenet_v2:1", "tpu-9000", "known accelerators: cpu, edgetpu"),
        ("mobilenet_v2", "edgetpu", "expected MODEL:RATE"),
        ("mobilenet_v2:1:2:3", "edgetpu", "expected MODEL:RATE"),
        (":1", "edgetpu", "expected MODEL:RATE"),
        ("mobilenet_v2:fast", "edgetpu", "is not a number"),
        ("mobilenet_v2:-1", "edgetpu", "finite number >= 0"),
        ("mobilenet_v2:nan", "edgetpu", "finite number >= 0"),
        ("mobilenet_v2:inf", "edgetpu", "finite number >= 0"),
        ("mobilenet_v2:5e9", "edgetpu", "is the unit right"),
        ("mobilenet_v2:1,,inception_v3:1", "edgetpu", "empty item"),
        ("mobilenet_v2:1,mobilenet_v2:2", "edgetpu", "listed twice"),
        ("mobilenet_v2:1:0", "edgetpu", "GPU_MILLI must be in 1..1000"),
        ("mobilenet_v2:1:x", "edgetpu", "is not an integer"),
    ],
    ids=[
        "unknown-model",
        "unknown-accelerator",
        "no-rate",
        "too-many-fields",
        "no-model",
        "rate-not-number",
        "negative-rate",
        "nan-rate",
        "inf-rate",
        "absurd-rate",
        "empty-item",
        "duplicate",
        "zero-milli",
        "milli-not-int",
    ],
)
def test_usage_errors_exit_2(colocate: str, accelerator: str, match: str) -> None:
    code, out, err = _run("--accelerator", accelerator, "--colocate", colocate)
    assert code == 2
    assert out == ""
    assert match in " ".join(err.split())  # click may wrap long messages


def test_unknown_sharing_mode_is_a_usage_error() -> None:
    code, _, err = _run("--accelerator", "edgetpu", "--colocate", "mobilenet_v2:1", "--sharing", "fifo")
    assert code == 2
    assert "time-slicing" in err


def test_parse_colocate_table() -> None:
    items = parse_colocate(" resnet50 : 10 , mobilenet_v2:2.5:250")
    assert [(i.model, i.rate_rps, i.gpu_milli) for i in items] == [
        ("resnet50", 10.0, None),
        ("mobilenet_v2", 2.5, 250),
    ]
    assert math.isclose(parse_colocate("a:1e-3")[0].rate_rps, 0.001)


def test_installed_console_script() -> None:
    script = Path(sys.executable).parent / "qosched"
    assert script.exists(), f"console script not installed at {script}"
    proc = subprocess.run(
        [str(script), "predict", "--accelerator", "edgetpu", "--colocate", "mobilenet_v2:10"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    # alone on the edge TPU: M/G/1 with the bundled S = 4.91 ms (deterministic): ρ = 0.0491,
    # W = 0.01·4.91²/(2·0.9509) = 0.12676 → 5.03676 ms
    assert row == {
        "model": "mobilenet_v2",
        "rate_rps": 10.0,
        "predicted_latency_ms": pytest.approx(4.91 + 0.01 * 4.91**2 / (2 * (1 - 0.0491)), rel=1e-9),
        "utilization": pytest.approx(0.0491, rel=1e-9),
    }
    bad = subprocess.run(
        [str(script), "predict", "--accelerator", "edgetpu", "--colocate", "nosuch:1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "models known for 'edgetpu'" in bad.stderr


def test_printed_floats_carry_no_float_noise() -> None:
    """``0.4681600000000001`` is printed ``0.46816`` (issue 16): 12 significant digits at most."""
    from qosched.extender.cli.predict import _rounded

    assert _rounded(0.4681600000000001) == 0.46816
    assert _rounded(112.93372106) == 112.93372106
    assert _rounded(float("inf")) is None
