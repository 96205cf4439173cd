"""The quantity parser loaded without the client is the client's own parser (extender/kube/quantity.py)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as client_parse_quantity

from qosched.extender.kube.quantity import parse_quantity

SUFFIXES = [
    "",
    "n",
    "u",
    "m",
    "k",
    "K",
    "M",
    "G",
    "T",
    "P",
    "E",
    "Ki",
    "Mi",
    "Gi",
    "Ti",
    "Pi",
    "Ei",
    "ki",
    "mi",
    "X",
    "i",
]


def test_it_is_the_installed_clients_code() -> None:
    assert parse_quantity.__code__.co_filename.endswith("kubernetes/utils/quantity.py")
    assert parse_quantity.__code__.co_code == client_parse_quantity.__code__.co_code


@given(
    number=st.one_of(
        st.integers(0, 10**12).map(str),
        st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(str),
        st.text(alphabet="0123456789.e+-", max_size=6),
    ),
    suffix=st.sampled_from(SUFFIXES),
)
def test_same_answers_as_the_client(number: str, suffix: str) -> None:
    raw = number + suffix
    try:
        want: Decimal | type[Exception] = client_parse_quantity(raw)
    except ValueError:
        want = ValueError
    if want is ValueError:
        with pytest.raises(ValueError):  # noqa: PT011 - the client's own exception, any message
            parse_quantity(raw)
    else:
        assert parse_quantity(raw) == want


def test_the_extender_serves_a_snapshot_without_importing_the_client() -> None:
    snapshot = Path(__file__).resolve().parents[2] / "extender" / "demo" / "demo-cluster.yaml"
    code = (
        "import sys; from qosched.extender.server.app import create_app; "
        f"create_app({{'cluster_file': {str(snapshot)!r}}}); "
        "print('kubernetes' in sys.modules, 'scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
