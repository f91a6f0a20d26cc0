"""The plugin system: hooks, discovery, blocking, failure isolation, and the example plugin
installed as its own package."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import meshrec
from meshrec import hookspecs
from meshrec.plugins import MeshrecPluginWarning

REPOSITORY = Path(__file__).resolve().parents[1]
HOOK_NAMES = sorted(name for name, value in vars(hookspecs).items() if name.startswith("meshrec_") and callable(value))


def test_every_hook_is_documented_and_tested():
    assert HOOK_NAMES, "no hooks found"
    tests = {name for name in globals() if name.startswith("test_hook_")}
    for name in HOOK_NAMES:
        hook = getattr(hookspecs, name)
        doc = inspect.getdoc(hook) or ""
        assert len(doc) > 80 and "Example" in doc, f"hook {name} needs a docstring with an example"
        assert f"test_hook_{name}" in tests, f"hook {name} has no test_hook_{name}"
        for parameter in inspect.signature(hook).parameters:
            assert parameter in doc or parameter == "registry", f"{name}: parameter {parameter} undocumented"


def _plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: meshrec.hookimpl(function) for name, function in hooks.items()})


class _Toy(meshrec.Method):
    name = "toy"
    summary = "a toy"
    body_model_type = None
    options = (meshrec.Option("size", 1, "how big"),)

    @classmethod
    def build(cls, checkpoint, body_model, device, **options):
        import torch

        return cls(torch.nn.Identity(), None, device, **options)

    def predict_batch(self, samples):
        import torch

        return [meshrec.Prediction(vertices=torch.zeros(1, 3, 3), joints=torch.zeros(1, 2, 3),
                                   global_orient=torch.eye(3)[None], body_pose=torch.eye(3).expand(1, 23, 3, 3),
                                   betas=torch.zeros(1, 10), transl=torch.zeros(1, 3), scores=torch.ones(1),
                                   extras={"options": dict(self.options)}) for _ in samples]


def test_hook_meshrec_register_methods(plugin_manager):
    def meshrec_register_methods(registry):
        registry.add(_Toy)
        registry.add(f"{__name__}:_Lazy")

    plugin_manager.register(_plugin(meshrec_register_methods=meshrec_register_methods), name="toys")
    assert meshrec.list_methods() == ["toy", "toy-lazy"]
    spec = plugin_manager.methods()["toy"]
    assert spec.plugin == "toys" and spec.summary == "a toy" and spec.load() is _Toy
    assert plugin_manager.methods()["toy-lazy"].summary == "the toy, registered by its import path"
    assert plugin_manager.plugin("toys").methods == ["toy", "toy-lazy"]
    method = meshrec.load_method("toy", device="cpu", size="3")
    assert isinstance(method, _Toy) and method.options == {"size": 3}
    assert meshrec.load_method("toy", device="cpu").options == {"size": 1}
    with pytest.raises(TypeError, match=r"method 'toy' has no option 'sise' \(did you mean 'size'\?\)"):
        meshrec.load_method("toy", device="cpu", sise=3)


class _Lazy(_Toy):
    name = "toy-lazy"
    summary = "the toy, registered by its import path"


def test_registering_what_is_not_a_method_fails_the_plugin_only(plugin_manager):
    def meshrec_register_methods(registry):
        registry.add("no_such_module_here:Method")

    plugin_manager.register(_plugin(meshrec_register_methods=meshrec_register_methods), name="bad")
    plugin_manager.register(_plugin(meshrec_register_methods=lambda registry: registry.add(_Toy)), name="fine")
    with pytest.warns(MeshrecPluginWarning, match="bad.*ModuleNotFoundError"):
        assert meshrec.list_methods() == ["toy"]
    with pytest.raises(TypeError, match="not a meshrec.Method subclass"):
        plugin_manager.methods().add(f"{__name__}:_plugin")


def test_hook_meshrec_register_datasets(plugin_manager, tmp_path):
    calls = []

    def evaluate(method, data_root, body_model, batch_size, progress, **options):
        calls.append((method.name, data_root, batch_size, options))
        return {"mpjpe": 12.5, "num_samples": 3}

    def meshrec_register_methods(registry):
        registry.add(_Toy)

    def meshrec_register_datasets(registry):
        registry.add("toyset", evaluate, summary="a toy protocol")

    plugin_manager.register(_plugin(meshrec_register_methods=meshrec_register_methods,
                                    meshrec_register_datasets=meshrec_register_datasets), name="toys")
    assert meshrec.list_datasets() == ["toyset"]
    out = tmp_path / "results.json"
    result = meshrec.evaluate("toy", "toyset", tmp_path, device="cpu", batch_size=4, output=out, split="test")
    assert result["metrics"] == {"mpjpe": 12.5, "num_samples": 3}
    assert calls == [("toy", tmp_path, 4, {"split": "test"})]
    assert json.loads(out.read_text())["metrics"]["mpjpe"] == 12.5
    with pytest.raises(meshrec.UnknownDatasetError, match="Installed datasets: toyset"):
        meshrec.evaluate("toy", "nope", tmp_path)
    with pytest.raises(meshrec.UnknownDatasetError, match=r"pip install --no-build-isolation \./plugins/hmr"):
        meshrec.evaluate("toy", "pw3d", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        meshrec.evaluate("toy", "toyset", tmp_path / "missing")


class _ToyBoxes:
    kind = "person"
    summary = "one box around the bright pixels"

    def __init__(self, threshold=128):
        self.threshold = threshold

    def detect(self, image):
        from meshrec.detectors import Detections, check_image

        rows, cols = np.nonzero(check_image(image).max(axis=2) >= self.threshold)
        if not len(rows):
            return Detections(np.zeros((0, 4)), np.zeros(0))
        return Detections([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], [1.0])


def test_hook_meshrec_register_detectors(plugin_manager):
    def meshrec_register_detectors(registry):
        registry.add("toy-boxes", f"{__name__}:_ToyBoxes", kind="person", summary="a toy detector")
        registry.add("toy-direct", _ToyBoxes)

    plugin_manager.register(_plugin(meshrec_register_detectors=meshrec_register_detectors), name="toys")
    registry = plugin_manager.detectors()
    assert registry.names() == ["toy-boxes", "toy-direct"] and registry.of_kind("person") == ["toy-boxes", "toy-direct"]
    assert registry.of_kind("keypoints") == [] and registry["toy-boxes"].plugin == "toys"
    assert plugin_manager.plugin("toys").detectors == ["toy-boxes", "toy-direct"]
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:9, 10:17] = 200
    found = registry.create("toy-boxes", threshold=100).detect(image)
    assert found.boxes.tolist() == [[10, 5, 17, 9]] and found.scores.tolist() == [1.0]
    with pytest.raises(KeyError, match=r"installed detectors: toy-boxes \(person\), toy-direct"):
        registry.create("nope")
    with pytest.raises(ValueError, match="kind"):
        registry.add("lazy", f"{__name__}:_ToyBoxes")
    with pytest.raises(ValueError, match="uint8"):
        registry.create("toy-direct").detect(image.astype(np.float32))


def test_implementations_may_take_fewer_arguments(plugin_manager):
    seen = []
    plugin_manager.register(_plugin(meshrec_register_methods=lambda: seen.append(True)), name="lazy")
    plugin_manager.methods()
    assert seen == [True]


def test_a_failing_hook_is_isolated(plugin_manager):
    def broken(registry):
        raise RuntimeError("boom")

    plugin_manager.register(_plugin(meshrec_register_methods=broken), name="broken")
    plugin_manager.register(_plugin(meshrec_register_methods=lambda registry: registry.add(_Toy)), name="fine")
    with pytest.warns(MeshrecPluginWarning, match="broken.*RuntimeError: boom"):
        assert meshrec.list_methods() == ["toy"]
    assert plugin_manager.plugin("broken").status == "error"


def test_misspelled_hook_is_reported(plugin_manager):
    with pytest.warns(MeshrecPluginWarning, match="unknown hooks.*meshrec_register_method"):
        info = plugin_manager.register(_plugin(meshrec_register_method=lambda registry: None), name="typo")
    assert info.status == "error"


def test_duplicate_method_names_warn_and_keep_the_first(plugin_manager):
    plugin_manager.register(_plugin(meshrec_register_methods=lambda registry: registry.add(_Toy)), name="a")
    plugin_manager.register(_plugin(meshrec_register_methods=lambda registry: registry.add(_Clone)), name="b")
    with pytest.warns(UserWarning, match="registered by both"):
        spec = plugin_manager.methods()["toy"]
    assert spec.target is _Toy


class _Clone(_Toy):
    summary = "another toy of the same name"


def test_bad_method_names_are_refused(plugin_manager):
    registry = plugin_manager.methods()
    for bad in ("Toy", "to y", "toy!"):
        with pytest.raises(ValueError, match="lower-case words"):
            registry.add(type("Bad", (_Toy,), {"name": bad}))
    with pytest.raises(ValueError, match="sets no name"):
        registry.add(type("Nameless", (_Toy,), {"name": ""}))


def test_unknown_method_lists_installed_and_names_the_package(plugin_manager):
    plugin_manager.register(_plugin(meshrec_register_methods=lambda registry: registry.add(_Toy)), name="toys")
    with pytest.raises(meshrec.UnknownMethodError, match=r"Installed methods: toy\..*meshrec-sahmr"):
        meshrec.load_method("sahmr")
    with pytest.raises(meshrec.UnknownMethodError, match="unknown method 'nonsense'. Installed methods: toy.$"):
        meshrec.load_method("nonsense")


# ---------------------------------------------------------------------------------------------
# Entry points, through real distributions on sys.path (in subprocesses: discovery is per process)


def _write_distribution(site: Path, name: str, module: str, source: str) -> None:
    dist_info = site / f"{name.replace('-', '_')}-0.3.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.0\n")
    (dist_info / "entry_points.txt").write_text(f"[meshrec]\n{module} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


def _run(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, *args], env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    _write_distribution(site, "meshrec-broken", "broken_plugin", "raise ImportError('needs a missing dependency')\n")
    _write_distribution(site, "meshrec-good", "good_plugin", """
        import meshrec

        @meshrec.hookimpl
        def meshrec_register_methods(registry):
            registry.add("good_plugin:Good")

        class Good(meshrec.Method):
            name = "good"
            summary = "good"
    """)
    return site


def test_broken_plugin_never_breaks_meshrec(site):
    script = ("import warnings, meshrec\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    print(meshrec.list_methods())\n"
              "print([str(w.message) for w in caught])\n")
    result = _run(["-c", script], site)
    assert result.returncode == 0, result.stderr
    assert "'good'" in result.stdout
    assert "plugin 'broken_plugin' (meshrec-broken) is skipped: import failed: ImportError: needs a missing dependency" in result.stdout
    listing = _run(["-m", "meshrec", "plugins", "--json"], site)
    plugins = {plugin["name"]: plugin for plugin in json.loads(listing.stdout)}
    assert plugins["broken_plugin"]["status"] == "error" and "missing dependency" in plugins["broken_plugin"]["error"]
    assert plugins["good_plugin"] == {"name": "good_plugin", "distribution": "meshrec-good", "version": "0.3.0",
                                      "module": "good_plugin", "methods": ["good"], "datasets": [], "detectors": [],
                                      "status": "ok",
                                      "error": None}


def test_disable_plugins_variable(site):
    result = _run(["-m", "meshrec", "plugins", "--json"], site, MESHREC_DISABLE_PLUGINS="broken_plugin, meshrec-good")
    plugins = {plugin["name"]: plugin for plugin in json.loads(result.stdout)}
    assert plugins["broken_plugin"]["status"] == plugins["good_plugin"]["status"] == "blocked"
    assert plugins["good_plugin"]["methods"] == [] and "skipped" not in result.stderr


@pytest.mark.slow
def test_example_plugin_installed_as_its_own_package(tmp_path, body_models_dir):
    """pip installs plugins/example into a fresh target folder; a new process finds it through
    the entry point, lists it, and runs its method end to end from the command line."""
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(REPOSITORY / "plugins" / "example")],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    listing = _run(["-m", "meshrec", "plugins"], target)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("example "))
    assert row.split()[:4] == ["example", "meshrec-example", "0.1.0", "example"]

    from PIL import Image

    image = tmp_path / "person.png"
    Image.new("RGB", (320, 240), (90, 120, 150)).save(image)
    out = tmp_path / "out"
    result = _run(["-m", "meshrec", "predict", str(image), "--method", "example", "--body-models", str(body_models_dir),
                   "--bbox", "100", "20", "80", "200", "--out", str(out), "--device", "cpu"], target)
    assert result.returncode == 0, result.stderr
    assert (out / "person.npz").is_file() and (out / "person.ply").is_file()
    import numpy as np

    saved = np.load(out / "person.npz")
    assert saved["vertices"].shape == (1, 6890, 3) and str(saved["method"]) == "example"
