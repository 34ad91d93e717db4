"""``heli new-target`` and ``heli targets``: the plugin skeleton installs into a
fresh venv, registers, runs a model with fallback and passes its own tests;
broken plugins are listed with clear messages while the other targets work."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from heli.cli import main
from heli.cli._new_target import render
from heli.cli._targets import summarize
from heli.target import TARGET_API_VERSION

PUBLIC = ("heli", "heli.target", "heli.ir", "heli.conformance")


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- heli new-target: arguments and files -------------------------------------


@pytest.mark.parametrize("name", ["Acme", "1chip", "my-chip", "a b", "", "x" * 41, "ünï"])
def test_a_bad_name_is_refused_clearly(name, tmp_path, capsys):
    line = one_error(*cli(capsys, "new-target", name, "-o", tmp_path)[::2])
    assert f"The target name {name!r} is not valid" in line
    assert "lowercase letters, digits and underscores" in line
    assert list(tmp_path.iterdir()) == []


def test_the_name_of_an_installed_target_is_refused(tmp_path, capsys):
    line = one_error(*cli(capsys, "new-target", "ref", "-o", tmp_path)[::2])
    assert "'ref' is already taken by an installed target" in line


def test_an_existing_directory_is_never_overwritten(tmp_path, capsys):
    existing = tmp_path / "heli-target-acme"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    line = one_error(*cli(capsys, "new-target", "acme", "-o", tmp_path)[::2])
    assert "already exists; heli new-target does not overwrite it" in line
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
    (tmp_path / "file").write_text("")
    line = one_error(*cli(capsys, "new-target", "acme", "-o", tmp_path / "file")[::2])
    assert "exists and is not a directory" in line


def test_the_skeleton_has_its_files_and_nothing_half_written(tmp_path, capsys):
    code, out, err = cli(capsys, "new-target", "my_chip", "-o", tmp_path / "new")
    assert code == 0, err
    root = tmp_path / "new" / "heli-target-my_chip"
    assert "pip install -e" in out
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/heli_target_my_chip/__init__.py",
                     "src/heli_target_my_chip/device.py", "src/heli_target_my_chip/kernels.py",
                     "src/heli_target_my_chip/target.py", "tests/test_my_chip.py"]
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["heli-target-my_chip"]  # no temp
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points."heli.targets"]' in pyproject
    assert 'my_chip = "heli_target_my_chip:MyChipTarget"' in pyproject
    assert f"api_version = {TARGET_API_VERSION}" in (root / "src/heli_target_my_chip/target.py"
                                                     ).read_text()


def test_the_skeleton_imports_only_helis_public_api():
    """Every ``heli`` name the generated code uses is in a public module's ``__all__``."""
    for path, text in render("acme").items():
        if not path.endswith(".py"):
            continue
        tree = ast.parse(text, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "heli":
                assert node.module in PUBLIC, f"{path} imports {node.module}"
                public = importlib.import_module(node.module).__all__
                for alias in node.names:
                    assert alias.name in public, f"{path}: {node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "heli":
                        assert alias.name in PUBLIC, f"{path} imports {alias.name}"
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "heli"):
                import heli

                assert node.attr in heli.__all__, f"{path} uses heli.{node.attr}"


# -- heli targets -----------------------------------------------------------------


def test_targets_lists_the_installed_targets(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(capsys, "targets")
    assert code == 0, err
    assert f"target API version {TARGET_API_VERSION}" in out
    for name in ("ref", "cpu", "npu"):
        assert f"\n {name} " in out
    assert "could not be loaded" not in out


def test_summarize_capabilities():
    assert summarize({}) == "(not declared)"
    assert summarize({"ops": ["Relu", "Add"], "dtypes": ["float32"], "device": "sim"}) == (
        "2 ops (Add, Relu); dtypes: float32; device: sim")
    assert summarize({"ops": [f"Op{i}" for i in range(10)]}).endswith(", ...)")


def _fake_dist(site: Path, name: str, entries: str) -> None:
    dist = site / f"{name.replace('-', '_')}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[heli.targets]\n{entries}\n")


def test_broken_plugins_are_listed_and_the_other_targets_keep_working(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "boom_plugin.py").write_text("raise ImportError('no module named acme_driver')\n")
    (site / "old_plugin.py").write_text(textwrap.dedent(f"""
        from heli.targets.ref import RefTarget
        class Old(RefTarget):
            name = "old"
            api_version = {TARGET_API_VERSION + 1}
    """))
    (site / "dup_a.py").write_text("from heli.targets.ref import RefTarget as T\n")
    (site / "dup_b.py").write_text("from heli.targets.ref import RefTarget as T\n")
    _fake_dist(site, "fake-broken", "boom = boom_plugin:Target\nold = old_plugin:Old")
    _fake_dist(site, "fake-a", "dup = dup_a:T")
    _fake_dist(site, "fake-b", "dup = dup_b:T")
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "250"}

    def heli(*args):
        return subprocess.run([sys.executable, "-m", "heli", *map(str, args)],
                              capture_output=True, text=True, env=env, cwd=tmp_path)

    result = heli("targets")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 plugin(s) could not be loaded (the targets above still work):" in out
    assert ("  boom: The target plugin 'boom' failed to import: ImportError: no module named "
            "acme_driver.") in out
    assert (f"  old: The target plugin 'old' was written for target API version "
            f"{TARGET_API_VERSION + 1}, but this Heli offers version {TARGET_API_VERSION}.") in out
    assert "  dup: Two plugins register the target name 'dup': dup_" in out
    assert "neither is used until one is uninstalled." in out
    assert "\n ref " in out and "\n npu " in out

    model = tmp_path / "m.onnx"
    model.write_bytes(_model().SerializeToString())
    for name, message in [("old", "The target plugin 'old' was written for target API version"),
                          ("boom", "The target plugin 'boom' failed to import"),
                          ("dup", "Two plugins register the target name 'dup'")]:
        result = heli("run", model, "--target", name)
        assert result.returncode == 2 and f"error: {message}" in result.stderr, result.stderr
    result = heli("run", model, "--target", "ref")
    assert result.returncode == 0, result.stderr
    assert "ran on ref: 6 nodes" in result.stdout


# -- the whole story in a fresh venv ----------------------------------------------


def _model():
    """Conv -> Relu -> Sigmoid -> MatMul -> Add -> Softmax (Sigmoid, Softmax unclaimed)."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4),
             "m": rng.standard_normal((8, 5)), "c": rng.standard_normal(5)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["y2"], name="relu"),
        helper.make_node("Sigmoid", ["y2"], ["y3"], name="sigmoid"),
        helper.make_node("MatMul", ["y3", "m"], ["y4"], name="matmul"),
        helper.make_node("Add", ["y4", "c"], ["y5"], name="add"),
        helper.make_node("Softmax", ["y5"], ["z"], name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "demo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _oracle(model, x: np.ndarray) -> np.ndarray:
    """The model in float64 numpy, written out by hand."""
    p = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((1, 4, 8, 8))
    for i in range(8):
        for j in range(8):
            y[0, :, i, j] = np.einsum("mchw,chw->m", p["w"], xp[0, :, i:i + 3, j:j + 3])
    y = np.maximum(y + p["b"].reshape(1, 4, 1, 1), 0)
    y = 1 / (1 + np.exp(-y)) @ p["m"] + p["c"]
    e = np.exp(y - y.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.slow
def test_new_target_installs_in_a_fresh_venv_and_runs_a_model_with_fallback(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True)
    python = venv / "bin" / "python"
    # --system-site-packages shows the *base* interpreter's packages; when the tests run
    # from a venv (the repo's .venv), bridge to its site-packages so heli, numpy, pip,
    # setuptools and pytest are importable. Installs still go into the fresh venv.
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    bridge = f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    (Path(purelib.stdout.strip()) / "_heli_test_bridge.pth").write_text(bridge)
    env = {**os.environ, "COLUMNS": "250", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)

    def run(*args, cwd=tmp_path):
        result = subprocess.run([str(python), *map(str, args)], capture_output=True,
                                text=True, env=env, cwd=cwd)
        assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
        return result

    run("-m", "heli", "new-target", "acme", "-o", "tmp")
    package = tmp_path / "tmp" / "heli-target-acme"
    run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", package)

    listing = run("-m", "heli", "targets").stdout
    row = next(line for line in listing.splitlines() if line.startswith(" acme "))
    assert "0.1.0" in row and "heli-target-acme" in row
    assert "4 ops (Add, Conv, MatMul, Relu); dtypes: float32" in row

    model = _model()
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run("-m", "heli", "run", "model.onnx", "--target", "acme", "--input", "x=x.npy",
                 "--output", "out")
    assert ("warning: 2 node(s) fall back from 'acme': sigmoid (no acme kernel for "
            "Sigmoid), softmax (no acme kernel for Softmax).") in result.stderr
    # the default fallback: cpu (generated C), or ref where no C compiler is found
    fallback = "cpu" if shutil.which(os.environ.get("CC") or "cc") else "ref"
    assert f"ran on acme: 4 nodes, {fallback}: 2 nodes" in result.stdout
    got = np.load(tmp_path / "out" / "z.npy")
    assert got.dtype == np.float32 and got.shape == (1, 4, 8, 5)
    np.testing.assert_allclose(got, _oracle(model, x), rtol=1e-5, atol=1e-6)

    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package).stdout
    assert "6 passed" in tests, tests
