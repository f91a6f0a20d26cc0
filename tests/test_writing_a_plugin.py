"""The README's "Writing a plugin" section works as written: a package built from exactly its
code blocks installs, is discovered, lists its summary and predicts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def readme_plugin_files() -> dict[str, str]:
    """The section's fenced blocks, keyed by the path their first line names (``# my-plugin/...``)."""
    text = (REPOSITORY / "README.md").read_text()
    section = text[text.index("## Writing a plugin"):]
    section = section[: section.index("\n## ", 3)]
    files = {}
    for block in re.findall(r"```(?:toml|python)\n(.*?)```", section, flags=re.S):
        first, _, body = block.partition("\n")
        match = re.match(r"# (my-plugin/\S+)", first)
        assert match, f"every block of the section names its file on its first line: {first!r}"
        files[match.group(1).rstrip(":")] = block if first.endswith(".py") else body
    return files


def test_the_section_has_the_three_files():
    assert set(readme_plugin_files()) == {"my-plugin/pyproject.toml", "my-plugin/meshrec_mean_body/plugin.py",
                                          "my-plugin/meshrec_mean_body/method.py"}


@pytest.mark.slow
def test_a_plugin_written_from_the_readme_installs_and_runs(tmp_path, body_models_dir):
    for relative, content in readme_plugin_files().items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (tmp_path / "my-plugin" / "meshrec_mean_body" / "__init__.py").write_text("")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(tmp_path / "my-plugin")], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    listing = subprocess.run([sys.executable, "-m", "meshrec", "plugins"], env=environment, capture_output=True,
                             text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    assert "meshrec-mean-body" in listing.stdout
    assert re.search(r"\n  mean-body +the rest-pose body, upright, at a fixed distance in front of the camera\n",
                     listing.stdout), listing.stdout

    image = tmp_path / "photo.npy"
    np.save(image, np.zeros((60, 80, 3), dtype=np.uint8))
    script = (
        "import sys, numpy as np, meshrec\n"
        "image = np.load(sys.argv[1])\n"
        "pred = meshrec.predict([image, image], method='mean-body', body_model=sys.argv[2], device='cpu', depth=2.5)\n"
        "print(len(pred), tuple(pred[1].vertices.shape), round(float(pred[0].transl[0, 2]), 3))\n"
        "try:\n"
        "    meshrec.load_method('mean-body', body_model=sys.argv[2], device='cpu', dpth=2)\n"
        "except TypeError as error:\n"
        "    print(error)\n")
    run = subprocess.run([sys.executable, "-c", script, str(image), str(body_models_dir)], env=environment,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "2 (1, 6890, 3) 2.5"
    assert "has no option 'dpth' (did you mean 'depth'?)" in lines[1]
