"""The names ``import fusekit`` offers stay callable, however often they are used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import fusekit


def test_no_public_function_is_shadowed_by_a_submodule() -> None:
    """A submodule named like a function (``fusekit/compare.py``) would replace it on the
    package the first time it is imported; import every submodule and look again."""
    import pkgutil

    for info in pkgutil.walk_packages(fusekit.__path__, "fusekit."):
        if info.name != "fusekit.__main__":
            importlib.import_module(info.name)
    for name in fusekit.__all__:
        if name != "__version__":
            assert callable(getattr(fusekit, name)), f"fusekit.{name} is no longer a function"


def test_compare_twice_in_one_process(tmp_path) -> None:
    """The documented call, twice, in a fresh interpreter (the second one used to fail)."""
    spec = tmp_path / "missing.yaml"
    code = (
        "import fusekit\n"
        "from fusekit.errors import FusekitError\n"
        "for _ in range(2):\n"
        "    try:\n"
        f"        fusekit.compare({str(spec)!r})\n"
        "    except FusekitError as exc:\n"
        "        print('refused:', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("refused:") == 2
