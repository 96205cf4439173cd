"""Packaging: every folder with an ``__init__.py`` under the three mapped folders is a listed package.

setup.cfg lists packages explicitly (the folders are mapped to ``qosched.*`` names, which
``find:`` cannot discover), so a sub-package added without a line there would be missing from
a wheel install while still importing fine from an editable checkout.
"""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}
    on_disk = set()
    for folder in ("policies", "extender", "profiles"):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            on_disk.add(".".join(("qosched", *rel)))
    assert on_disk == listed, (
        f"missing from setup.cfg: {sorted(on_disk - listed)}; stale: {sorted(listed - on_disk)}"
    )
