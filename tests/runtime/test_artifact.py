"""Compiled .heli artifacts: bit-exact round trips, and a clear error for every bad file."""

import os
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest
from onnx import helper, numpy_helper

import heli
from heli._errors import HeliError, InputError, ModelLoadError, ShapeError, TargetError
from heli.runtime import LoadedModel, is_artifact, load, save_compiled
from heli.runtime._artifact import (
    MAGIC,
    _array_blob,
    _array_from,
    read_artifact,
    write_artifact,
)
from heli.target import Executable, Target, register_target
from heli.target import _registry as registry
from heli.targets.ref import RefExecutable, RefTarget
from tests.frontend.test_onnx import make_model, tensor_info


def small_model():
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 7, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"]),
             helper.make_node("Shape", ["x"], ["s"])]  # folded to a constant output
    return make_model(nodes, [tensor_info("x", ["n", 4])],
                      [tensor_info("z", None), tensor_info("s", None)], [w])


def assert_same(got, want):
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        assert got[name].tobytes() == want[name].tobytes(), name  # bit for bit


@pytest.fixture
def small(tmp_path):
    """A compiled small model, its .heli file and a feed."""
    model = heli.compile(small_model(), input_shapes={"x": (2, 4)})
    path = tmp_path / "small.heli"
    save_compiled(model, path)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    return model, path, {"x": x}


def rewrite(path, change):
    """Edit a file's manifest, keeping the file otherwise valid (checksums redone)."""
    manifest, blobs = read_artifact(path)
    change(manifest)
    write_artifact(path, manifest, [bytes(b) for b in blobs])


# -- round trips --------------------------------------------------------------


def test_small_model_round_trip_is_bit_exact(small):
    model, path, feeds = small
    loaded = load(path)
    assert isinstance(loaded, LoadedModel) and loaded.target == "ref"
    assert loaded.input_names == ["x"] and loaded.output_names == ["z", "s"]
    assert_same(loaded.run(feeds), model.run(feeds))
    assert loaded.run(feeds)["s"].tolist() == [2, 4]
    (spec,) = loaded.specializations.values()
    assert spec.placement.counts() == {"ref": 2}
    assert is_artifact(path) and heli.load is load


def test_loaded_model_checks_feeds(small):
    _, path, feeds = small
    loaded = load(path)
    with pytest.raises(ShapeError, match=r"static size 2 on axis 0"):
        loaded.run({"x": np.zeros((3, 4), np.float32)})
    with pytest.raises(InputError, match="dtype 'float32'"):
        loaded.run({"x": feeds["x"].astype(np.float64)})
    with pytest.raises(InputError, match=r"missing input\(s\) \['x'\]"):
        loaded.run({})


def test_manifest_describes_the_model(small):
    _, path, _ = small
    manifest, blobs = read_artifact(path)
    assert manifest["heli_version"] == heli.__version__
    assert manifest["target_api_version"] == 1
    assert manifest["targets"]["ref"]["host_fingerprint"] == {}
    assert {"machine", "platform"} <= set(manifest["host"])
    assert manifest["inputs"] == [{"name": "x", "type": {"tensor": "float32", "shape": [2, 4]},
                                   "declared": {"tensor": "float32", "shape": ["n", 4]}}]
    (segment,) = manifest["segments"]
    assert segment["target"] == "ref" and segment["inputs"] == ["x"]
    assert segment["outputs"] == ["z"]
    (const,) = manifest["constants"]
    assert (const["name"], const["dtype"], const["shape"]) == ("s", "int64", [2])
    assert len(blobs) == 2


@pytest.mark.slow
def test_ppocr_cls_round_trip_without_the_onnx_file_or_passes(tmp_path, monkeypatch):
    from heli.passes import PassManager
    from heli.testing import ppocr_model

    source = tmp_path / "cls.onnx"
    shutil.copy(ppocr_model("cls"), source)
    model = heli.compile(str(source), input_shapes={"x": (1, 3, 48, 192)})
    x = np.random.default_rng(1).standard_normal((1, 3, 48, 192)).astype(np.float32)
    want = model.run({"x": x})
    save_compiled(model, tmp_path / "cls.heli")
    source.unlink()

    def no_passes(*args, **kwargs):
        raise AssertionError("loading ran a pass")

    monkeypatch.setattr(PassManager, "run", no_passes)
    loaded = heli.load(tmp_path / "cls.heli")
    assert_same(loaded.run({"x": x}), want)


def test_dynamic_model_needs_shapes_and_picks_its_specialization(tmp_path):
    model = heli.compile(small_model())
    with pytest.raises(ShapeError, match="dynamic shape"):
        save_compiled(model, tmp_path / "m.heli")
    model.run({"x": np.zeros((1, 4), np.float32)})
    model.run({"x": np.zeros((3, 4), np.float32)})
    with pytest.raises(InputError, match="2 specializations"):
        save_compiled(model, tmp_path / "m.heli")
    info = save_compiled(model, tmp_path / "m.heli", input_shapes={"x": (3, 4)})
    assert info.shapes == ((3, 4),) and info.segments == ("ref",)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16),
    np.array([[-8, 7]], dtype=ml_dtypes.int4),
    np.array([True, False]),
    np.arange(4, dtype=">i4"),  # big-endian data is stored little-endian
    np.array(["a", "héllo", ""], dtype=object),
    np.zeros((0, 3), np.int64),
    np.float64(3.5),
])
def test_constants_round_trip_as_raw_arrays(array):
    dtype, blob = _array_blob(np.asarray(array))
    back = _array_from(dtype, list(np.shape(array)), memoryview(bytearray(blob)))
    assert back.shape == np.shape(array)
    assert back.tolist() == np.asarray(array).tolist()
    assert back.dtype == np.asarray(array).dtype.newbyteorder("=")


def test_nothing_is_unpickled_on_load(small, monkeypatch):
    import pickle

    _, path, feeds = small

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    load(path).run(feeds)


# -- bad files ----------------------------------------------------------------


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "nope.heli")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(small_model().SerializeToString())
    with pytest.raises(ModelLoadError, match="not a compiled Heli model.*ONNX model"):
        load(onnx_file)
    text = tmp_path / "notes.heli"
    text.write_text("hello, this is not a model at all, just some text in a file\n")
    with pytest.raises(ModelLoadError, match="not a compiled Heli model"):
        load(text)
    (tmp_path / "empty.heli").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a compiled Heli model"):
        load(tmp_path / "empty.heli")
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load(tmp_path)


def test_truncated_files_are_clear(small, tmp_path):
    _, path, _ = small
    data = path.read_bytes()
    cut = tmp_path / "cut.heli"
    for size in (5, 30, 80, len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:size])
        with pytest.raises(ModelLoadError, match="truncated"):
            load(cut)


def test_corrupt_files_are_clear(small, tmp_path):
    _, path, _ = small
    data = path.read_bytes()
    manifest, blobs = read_artifact(path)
    bad = tmp_path / "bad.heli"
    payload = data.index(bytes(blobs[0]))
    for position in (70, payload + len(blobs[0]) // 2):  # in the manifest, in a blob
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ModelLoadError, match="corrupt"):
            load(bad)
    bad.write_bytes(data + b"extra")
    with pytest.raises(ModelLoadError, match="corrupt.*trailing"):
        load(bad)
    shutil.copy(path, bad)
    rewrite(bad, lambda m: m.pop("segments"))
    with pytest.raises(ModelLoadError, match="malformed manifest"):
        load(bad)


def test_damaged_payload_is_a_target_error(small, tmp_path):
    _, path, _ = small
    manifest, blobs = read_artifact(path)
    manifest = {k: v for k, v in manifest.items() if k not in ("blobs", "data_size")}
    bad = tmp_path / "bad.heli"
    write_artifact(bad, manifest, [b"garbage, not ONNX", bytes(blobs[1])])
    with pytest.raises(TargetError, match="saved ref code is damaged"):
        load(bad)


def test_other_format_version(small):
    _, path, _ = small
    data = bytearray(path.read_bytes())
    assert data[:8] == MAGIC
    struct.pack_into("<I", data, 8, 99)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="format version 99; this Heli reads format version 1"):
        load(path)


def test_other_heli_and_target_api_versions(small):
    _, path, _ = small
    rewrite(path, lambda m: m.update(heli_version="0.0.1"))
    with pytest.raises(ModelLoadError, match="made by Heli 0.0.1; this is Heli"):
        load(path)
    rewrite(path, lambda m: m.update(heli_version=heli.__version__, target_api_version=7))
    with pytest.raises(ModelLoadError, match="target API version 7"):
        load(path)


def test_target_not_installed_or_of_another_version(small):
    _, path, _ = small

    def rename(m):
        m["targets"] = {"npu9": m["targets"]["ref"]}
        m["segments"][0]["target"] = "npu9"

    original = path.read_bytes()
    rewrite(path, rename)
    with pytest.raises(TargetError, match="needs the target 'npu9'.*Installed targets"):
        load(path)
    path.write_bytes(original)
    rewrite(path, lambda m: m["targets"]["ref"].update(version="0.0.0-old"))
    with pytest.raises(TargetError, match="version '0.0.0-old' of the target 'ref'"):
        load(path)


# -- targets that save (or cannot) ---------------------------------------------


class IsaTarget(RefTarget):
    """ref, pretending its code is tied to a CPU ISA."""

    name = "isa_test"
    isa = "avx2"

    def host_fingerprint(self):
        return {"isa": type(self).isa}


class PlainExecutable(Executable):
    def __init__(self, graph):
        self._inner = RefExecutable(graph, check_types=False)

    def run(self, feeds):
        return self._inner.run(feeds)


class NoSaveTarget(Target):
    name = "nosave_test"

    def supports(self, node):
        from heli.target import SUPPORTED

        return SUPPORTED

    def compile(self, graph, options):
        return PlainExecutable(graph)


@pytest.fixture
def extra_targets():
    for cls in (IsaTarget, NoSaveTarget):
        register_target(cls)
    yield
    for cls in (IsaTarget, NoSaveTarget):
        registry._discover().pop(cls.name, None)
        registry._instances.pop(cls.name, None)


def test_host_mismatch(extra_targets, tmp_path, monkeypatch):
    model = heli.compile(small_model(), target="isa_test", input_shapes={"x": (2, 4)})
    save_compiled(model, tmp_path / "m.heli")
    assert load(tmp_path / "m.heli").target == "isa_test"
    monkeypatch.setattr(IsaTarget, "isa", "neon")
    with pytest.raises(TargetError, match=r"another host: isa='avx2' \(this host: 'neon'\)"):
        load(tmp_path / "m.heli")


def test_a_target_that_cannot_save_leaves_no_file(extra_targets, tmp_path):
    model = heli.compile(small_model(), target="nosave_test", input_shapes={"x": (2, 4)})
    with pytest.raises(TargetError, match="'nosave_test' cannot save compiled code"):
        save_compiled(model, tmp_path / "m.heli")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TargetError, match="'nosave_test' cannot load saved compiled code"):
        NoSaveTarget().deserialize(b"", None)
    with pytest.raises(TargetError, match="cannot save compiled code"):
        PlainExecutable(model.specializations[((2, 4),)].graph).serialize()
    assert NoSaveTarget().host_fingerprint() == {}


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(small, monkeypatch):
    model, path, feeds = small
    before = path.read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(InputError, match="cannot be written.*No space left"):
        save_compiled(model, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # untouched
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file
    with pytest.raises(HeliError):
        save_compiled(model, path.parent / "missing_dir" / "m.heli")
