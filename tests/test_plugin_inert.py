"""The plugin in a pytest run that is not a conformance run: it costs little and changes
nothing (no markers that collide, no report of its own, no Hypothesis import)."""

from __future__ import annotations

import subprocess
import sys

pytest_plugins = ["pytester"]


def test_loading_the_plugin_does_not_import_hypothesis():
    code = (
        "import sys, pytest_vfiouser.plugin, pytest_vfiouser.fuzz as f\n"
        "assert 'hypothesis' not in sys.modules, 'imported with the plugin'\n"
        "f.Fuzzer\n"
        "assert 'hypothesis' in sys.modules, 'the engine is imported on first use'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
