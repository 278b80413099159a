"""A serving process tunes its garbage collector once its node is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api.serve import GC_THRESHOLDS
from tests.support import ROOT

_SERVE_AND_STOP = """
import gc, json, sys
from api.node import Node
from api.serve import GC_THRESHOLDS, run
from orderlog.config import load_settings

settings = load_settings(env={}, overrides={"database_url": sys.argv[1], "port": 0})
before = (gc.get_threshold(), gc.get_freeze_count())
node = Node(settings).start()
code = run(node, None, announce=lambda address: None, stop_asked=lambda: True)
print(json.dumps([before, [gc.get_threshold(), gc.get_freeze_count()], code]))
"""


def test_run_freezes_what_the_node_holds_and_collects_less_often(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_STOP, f"sqlite:///{tmp_path / 'o.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    (threshold, frozen), (tuned, frozen_after), code = json.loads(done.stdout)
    assert threshold[0] == 700 and frozen == 0  # CPython's defaults until run
    assert tuple(tuned) == GC_THRESHOLDS == (20_000, 20, 20)
    assert frozen_after > 10_000  # the modules and the node: never walked again
    assert code == 0
