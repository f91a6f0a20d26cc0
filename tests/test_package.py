"""``import meshrec`` is cheap, and its submodules are reachable as attributes right after it."""

from __future__ import annotations

import subprocess
import sys

import pytest

SUBMODULES = ("body", "camera", "datasets", "io", "metrics", "nn", "ops", "plugins", "rotations", "scene")


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_is_an_attribute_after_import_meshrec(name):
    out = _run(f"import meshrec, types; m = meshrec.{name}; print(isinstance(m, types.ModuleType), m.__name__)")
    assert out.split() == ["True", f"meshrec.{name}"]


def test_readme_pattern_works():
    assert _run("import meshrec; print(meshrec.body.SMPL.__name__, meshrec.metrics.pa_mpjpe.__name__)").split() == [
        "SMPL", "pa_mpjpe"]


def test_import_meshrec_loads_no_heavy_submodule():
    loaded = _run("import sys, meshrec; print(' '.join(sorted(m for m in sys.modules if m.startswith('meshrec'))))")
    for heavy in ("meshrec.body.mannequin", "meshrec.scene", "meshrec.metrics", "meshrec.nn", "meshrec.testing"):
        assert heavy not in loaded.split(), f"import meshrec imported {heavy}"


def test_unknown_attribute_still_raises():
    import meshrec

    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        meshrec.nonsense  # noqa: B018


def test_runtime_never_imports_pytest():
    out = _run("import sys, meshrec, meshrec.body, meshrec.metrics, meshrec.scene, meshrec.cli\n"
               "from meshrec.body.mannequin import mannequin_smpl\n"
               "print('pytest' in sys.modules)")
    assert out.strip() == "False"
