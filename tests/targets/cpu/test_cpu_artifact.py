"""Saved cpu code (``heli compile --target cpu -o m.heli``): the loaded model
gives the same bits, loading runs neither the C compiler nor a graph pass,
and damaged or foreign files give clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from onnx import helper

import heli
from heli._api import FallbackWarning
from heli._errors import ModelLoadError, TargetError
from heli.runtime import save_compiled
from heli.runtime._artifact import read_artifact, write_artifact
from heli.target import CompileOptions, get_target
from heli.targets.cpu import _artifact, _gemm, _toolchain
from tests.targets.cpu.test_cpu_target import make_model, rand

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None,
                                reason="no C compiler")


def _model():
    """A conv with a fused epilogue, pooling, a host reshape, a Gemm with a packed
    constant weight, an elementwise chain, LayerNormalization and Softmax."""
    inits = {"w": rand(6, 3, 3, 3, seed=1), "b": rand(6, seed=2), "shape": np.array([2, -1]),
             "wg": rand(54, 10, seed=3), "g": rand(10, seed=4), "k": np.float32(0.5)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "wg"], ["m"]),
        helper.make_node("Mul", ["m", "k"], ["mk"]),
        helper.make_node("Tanh", ["mk"], ["t"]),
        helper.make_node("LayerNormalization", ["t", "g"], ["ln"], epsilon=1e-5),
        helper.make_node("Softmax", ["ln"], ["y"], axis=-1),
    ]
    return make_model(nodes, [("x", [2, 3, 6, 6])], ["y", "t"], inits)


@pytest.fixture
def saved(tmp_path):
    """(compiled model, its .heli path, feeds, outputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # all of it on cpu
        model = heli.compile(_model(), "cpu")
    feeds = {"x": rand(2, 3, 6, 6, seed=5)}
    want = model.run(feeds)
    path = tmp_path / "m.heli"
    info = save_compiled(model, path)
    assert info.segments == ("cpu",)
    return model, path, feeds, want


def _refuse(*args, **kwargs):
    raise AssertionError("loading saved cpu code must not run the C compiler")


def test_load_runs_neither_the_compiler_nor_a_pass(saved, monkeypatch):
    _, path, feeds, want = saved
    # Any compiler run (kernels, the SGEMM library, the ISA probe) fails the test...
    monkeypatch.setattr(_toolchain, "build_library", _refuse)
    monkeypatch.setattr(_toolchain, "compile_library", _refuse)
    monkeypatch.setattr(_toolchain, "subprocess", types.SimpleNamespace(run=_refuse))
    # ...and so does a graph pass (the fused graph is saved as it is)...
    from heli.passes._fusion import Fusion

    monkeypatch.setattr(Fusion, "apply", _refuse)
    # ...and the SGEMM library must come from the file, not from this process.
    monkeypatch.setattr(_gemm, "_libraries", {})
    loaded = heli.load(path)
    got = loaded.run(feeds)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].tobytes() == value.tobytes(), name
    assert _gemm._libraries  # the saved SGEMM library was installed
    # Saving what was loaded writes the same code again.
    exe = loaded.specializations[next(iter(loaded.specializations))].stages[0].executable
    assert exe.serialize() == bytes(read_artifact(path)[1][0])


def _payload(path):
    manifest, blobs = read_artifact(path)
    return bytes(blobs[manifest["segments"][0]["payload"]])


def test_damaged_payloads_are_clear_errors(saved):
    _, path, _, _ = saved
    payload = _payload(path)
    target, options = get_target("cpu"), CompileOptions()
    plan, blobs = _artifact._unpack(payload)
    first = len(payload) - sum(len(b) + -len(b) % 64 for b in blobs)  # the model library
    flipped = bytearray(payload)
    flipped[first + 100] ^= 0x01
    cases = {
        b"": "fewer than its header",
        b"not a cpu payload at all": "header",
        payload[: len(payload) // 2]: "truncated",
        bytes(flipped): "blob 0 does not match its checksum",
    }
    del plan["blobs"]
    cases[_artifact._pack({**plan, "graph": {"nodes": 3}}, [bytes(b) for b in blobs])] = \
        "malformed"
    for bad, fragment in cases.items():
        with pytest.raises(TargetError, match="saved cpu code is damaged") as caught:
            target.deserialize(bad, options)
        assert fragment in str(caught.value)

    # A flipped byte inside the .heli file is caught by the file's own checksums.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken = path.with_name("broken.heli")
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt"):
        heli.load(broken)


def test_code_for_another_host_is_refused(saved):
    _, path, _, _ = saved
    here = get_target("cpu").host_fingerprint()
    assert {"isa", "machine", "abi", "sanitizer"} <= set(here)
    assert here["isa"] == _toolchain.host_isa()

    other = "portable" if here["isa"] != "portable" else "avx512"
    manifest, blobs = read_artifact(path)
    manifest["targets"]["cpu"]["host_fingerprint"]["isa"] = other
    foreign = path.with_name("foreign.heli")
    write_artifact(foreign, manifest, [bytes(b) for b in blobs])
    with pytest.raises(TargetError, match="for another host") as caught:
        heli.load(foreign)
    assert f"isa={other!r} (this host: {here['isa']!r})" in str(caught.value)

    # The payload checks its own ISA level and sanitizer too (target.deserialize alone).
    plan, payload_blobs = _artifact._unpack(_payload(path))
    del plan["blobs"]
    for key, value, fragment in [("isa", other, "ISA level"),
                                 ("sanitizer", "thread", "sanitizer"),
                                 ("machine", "vax", "machine")]:
        bad = _artifact._pack({**plan, key: value}, [bytes(b) for b in payload_blobs])
        with pytest.raises(TargetError, match=fragment):
            get_target("cpu").deserialize(bad, CompileOptions())


@pytest.mark.slow
@pytest.mark.asan
def test_resnet18_heli_file_runs_bit_for_bit(tmp_path):
    """`heli compile resnet18.onnx --target cpu -o r.heli`, then `heli run r.heli`
    gives the very bits of `heli run resnet18.onnx --target cpu`."""
    from heli.testing import resnet18_onnx

    onnx_path = resnet18_onnx()
    env = {**os.environ, "HELI_NUM_THREADS": "2"}

    def heli_cli(*args):
        result = subprocess.run([sys.executable, "-m", "heli", *map(str, args)], env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout

    shape = ("--input-shape", "input=1,3,224,224")
    heli_cli("compile", onnx_path, "--target", "cpu", "-o", tmp_path / "r.heli", *shape)
    out = heli_cli("run", tmp_path / "r.heli", "--output", tmp_path / "saved")
    assert "ran on cpu" in out
    heli_cli("run", onnx_path, "--target", "cpu", *shape, "--output", tmp_path / "fresh")
    got = np.load(tmp_path / "saved" / "logits.npy")
    want = np.load(tmp_path / "fresh" / "logits.npy")
    assert got.shape == (1, 1000) and got.tobytes() == want.tobytes()
