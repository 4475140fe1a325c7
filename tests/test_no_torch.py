"""`edge/` installs and runs without torch: import every module where `import torch` fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, importlib.abc, pkgutil, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed on the edge box")
        return None

sys.meta_path.insert(0, NoTorch())
import edge
names = [m.name for m in pkgutil.walk_packages(edge.__path__, "edge.")]
for name in names:
    importlib.import_module(name)
assert "torch" not in sys.modules
print(len(names))
"""


def test_every_edge_module_imports_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 5  # the walk really found the package's modules


TRAIN_COMMANDS = r"""
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return None

sys.meta_path.insert(0, NoTorch())
from edge.cli import main
codes = [main(["train", "--data", "d", "--machines", "fan", "--out", "r"]),
         main(["export", "--run", "r", "--machine", "fan", "--data", "d", "--out", "m"])]
print(codes)
"""


def test_training_commands_on_an_edge_box_say_which_extra_to_install() -> None:
    result = subprocess.run([sys.executable, "-c", TRAIN_COMMANDS], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[2, 2]", result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("asd-edge[train]") == 2
