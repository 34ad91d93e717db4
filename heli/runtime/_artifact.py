"""Compiled artifacts: one self-describing ``.heli`` file per compiled model.

Layout (all integers little-endian)::

    header    magic (8 bytes) | format version (u32) | reserved (u32)
              | manifest length (u64) | SHA-256 of the manifest (32 bytes)
    manifest  UTF-8 JSON: versions, host, inputs/outputs, segments, constants,
              and where each blob lies (offset, length, SHA-256)
    data      the blobs, each starting on a 64-byte boundary: each segment's
              target payload (:meth:`Executable.serialize`) and the raw bytes
              of the constants the segments do not hold themselves

Nothing is pickled: a manifest is JSON and a blob is bytes, so loading a file
never runs code from it.  Loading runs no pass and reads no ONNX model; each
target turns its payload back into an executable (:meth:`Target.deserialize`).
Files are written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heli._errors import InputError, ModelLoadError, TargetError
from heli.ir._graph import Graph, Value
from heli.ir._types import DType, OptionalType, SequenceType, TensorType, Type
from heli.runtime._model import CompiledModel, Placement, Specialization, Stage

__all__ = ["FORMAT_VERSION", "MAGIC", "LoadedModel", "is_artifact", "load", "save_compiled"]

#: The first bytes of every ``.heli`` file (PNG-style: catches text-mode mangling).
MAGIC = b"\x89HELI\r\n\x1a"
#: The layout version this Heli writes and reads.
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQ32s")
_ALIGN = 64
_DTYPES = {str(d): d for d in DType}


# -- the file layout ----------------------------------------------------------


def _pad(n: int) -> int:
    return -n % _ALIGN


def write_artifact(path: str | os.PathLike, manifest: dict[str, Any],
                   blobs: Sequence[bytes | memoryview]) -> None:
    """Write ``manifest`` and ``blobs`` as a ``.heli`` file, whole or not at all.

    The manifest gets a ``blobs`` table (offset, length, SHA-256 of each blob)
    and the total ``data_size``, which loading checks.
    """
    table, offset = [], 0
    for blob in blobs:
        table.append({"offset": offset, "length": len(blob),
                      "sha256": hashlib.sha256(blob).hexdigest()})
        offset += len(blob) + _pad(len(blob))
    manifest = {**manifest, "blobs": table, "data_size": offset}
    text = json.dumps(manifest, indent=1, sort_keys=False).encode()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(text), hashlib.sha256(text).digest())
    head = header + text
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(head + b"\0" * _pad(len(head)))
            for blob in blobs:
                f.write(blob)
                f.write(b"\0" * _pad(len(blob)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise InputError(f"The compiled model cannot be written to {str(path)!r}: "
                         f"{error.strerror or error}.") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_artifact(path: str | os.PathLike) -> tuple[dict[str, Any], list[memoryview]]:
    """The manifest and blobs of a ``.heli`` file, with every layout check done."""
    where = str(path)
    data = _read_file(Path(path))
    if len(data) < _HEADER.size:
        if data and (MAGIC.startswith(bytes(data[:8])) or data.startswith(MAGIC)):
            raise ModelLoadError(f"The compiled model {where!r} is truncated (it ends inside "
                                 "its header).")
        raise _foreign(where, data)
    magic, version, _, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _foreign(where, data)
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"The compiled model {where!r} has format version {version}; this Heli reads "
            f"format version {FORMAT_VERSION}. Recompile the model with this Heli."
        )
    start = _HEADER.size
    if start + length > len(data):
        raise ModelLoadError(f"The compiled model {where!r} is truncated (its manifest is "
                             f"{length} bytes, but the file ends before that).")
    text = bytes(data[start:start + length])
    if hashlib.sha256(text).digest() != digest:
        raise ModelLoadError(f"The compiled model {where!r} is corrupt (its manifest does not "
                             "match its checksum).")
    try:
        manifest = json.loads(text)
        blobs_table = manifest["blobs"]
        data_size = int(manifest["data_size"])
        if not isinstance(blobs_table, list):
            raise TypeError("blobs is not a list")
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"The compiled model {where!r} has a malformed manifest: "
                             f"{error}.") from None
    data_start = start + length + _pad(start + length)
    if data_start + data_size > len(data):
        raise ModelLoadError(
            f"The compiled model {where!r} is truncated: it has {len(data)} bytes, but its "
            f"manifest describes {data_start + data_size}."
        )
    if data_start + data_size < len(data):
        raise ModelLoadError(f"The compiled model {where!r} is corrupt (it has "
                             f"{len(data) - data_start - data_size} unexpected trailing bytes).")
    view = memoryview(data)[data_start:]
    blobs = []
    for index, entry in enumerate(blobs_table):
        try:
            offset, size, sha = int(entry["offset"]), int(entry["length"]), entry["sha256"]
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"The compiled model {where!r} has a malformed manifest "
                                 f"(blob {index}).") from None
        if offset < 0 or size < 0 or offset + size > data_size:
            raise ModelLoadError(f"The compiled model {where!r} is corrupt (blob {index} lies "
                                 "outside the file).")
        blob = view[offset:offset + size]
        if hashlib.sha256(blob).hexdigest() != sha:
            raise ModelLoadError(f"The compiled model {where!r} is corrupt (blob {index} does "
                                 "not match its checksum).")
        blobs.append(blob)
    return manifest, blobs


def _read_file(path: Path) -> bytearray:
    if not path.exists():
        raise ModelLoadError(f"The compiled model {str(path)!r} does not exist.")
    if not path.is_file():
        raise ModelLoadError(f"The compiled model path {str(path)!r} is not a regular file.")
    try:
        with open(path, "rb") as f:
            return bytearray(f.read())  # writable: constants are views of it, not copies
    except OSError as error:
        raise ModelLoadError(f"The compiled model {str(path)!r} cannot be read: "
                             f"{error.strerror or error}.") from None


def _foreign(where: str, data: bytes | bytearray) -> ModelLoadError:
    hint = ""
    if bytes(data[:1]) == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version)
        hint = " It looks like an ONNX model: compile it with `heli compile`."
    return ModelLoadError(f"The file {where!r} is not a compiled Heli model (it does not start "
                          f"with the .heli header).{hint}")


def is_artifact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the ``.heli`` magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# -- types and arrays in JSON -------------------------------------------------


def _type_json(vtype: Type | None) -> Any:
    if vtype is None:
        return None
    if isinstance(vtype, TensorType):
        shape = None if vtype.shape is None else list(vtype.shape)
        return {"tensor": str(vtype.dtype), "shape": shape}
    if isinstance(vtype, SequenceType):
        return {"sequence": _type_json(vtype.elem)}
    if isinstance(vtype, OptionalType):
        return {"optional": _type_json(vtype.elem)}
    raise TypeError(f"cannot describe the type {vtype!r}")


def _type_from(data: Any) -> Type | None:
    if data is None:
        return None
    if "tensor" in data:
        shape = data["shape"]
        dims = None if shape is None else tuple(d if isinstance(d, str) else int(d)
                                                for d in shape)
        return TensorType(_dtype(data["tensor"]), dims)
    if "sequence" in data:
        return SequenceType(_type_from(data["sequence"]))
    if "optional" in data:
        return OptionalType(_type_from(data["optional"]))
    raise ValueError(f"unknown type {data!r}")


def _dtype(name: str) -> DType:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}")
    return _DTYPES[name]


def _array_blob(array: np.ndarray) -> tuple[str, bytes]:
    """``(dtype name, bytes)``: raw little-endian data; strings as a JSON list."""
    dtype = DType.from_numpy(array.dtype.newbyteorder("="))
    if dtype is DType.STRING:
        items = [str(x) if not isinstance(x, bytes) else x.decode() for x in array.reshape(-1)]
        return str(dtype), json.dumps(items).encode()
    data = np.ascontiguousarray(array)
    if data.dtype.itemsize > 1 and data.dtype.byteorder not in ("<", "|"):
        little = data.dtype.newbyteorder("<")
        if data.dtype != little:  # big-endian data (or a big-endian host)
            data = data.astype(little)
    return str(dtype), data.tobytes()


def _array_from(dtype_name: str, shape: list[int], blob: memoryview) -> np.ndarray:
    dtype = _dtype(dtype_name)
    shape_t = tuple(int(d) for d in shape)
    if dtype is DType.STRING:
        items = json.loads(bytes(blob))
        return np.array(items, dtype=object).reshape(shape_t)
    array = np.frombuffer(blob, dtype=dtype.np)  # a view of the file's (writable) buffer
    if sys.byteorder == "big" and array.dtype.itemsize > 1:
        array = array.byteswap()  # stored little-endian
    return array.reshape(shape_t)


# -- saving -------------------------------------------------------------------


@dataclass(frozen=True)
class SavedInfo:
    """What :func:`save_compiled` wrote."""

    path: Path
    bytes: int
    segments: tuple[str, ...]  # the target of each segment
    shapes: tuple[tuple[int, ...], ...]


def host_info() -> dict[str, str]:
    return {"machine": platform.machine(), "system": platform.system(),
            "platform": platform.platform(), "byteorder": sys.byteorder,
            "python": platform.python_version(), "numpy": np.__version__}


def _heli_version() -> str:
    from heli import __version__

    return __version__


def _choose(model: CompiledModel, input_shapes: Mapping[str, Sequence[int]] | None
            ) -> Specialization:
    if input_shapes is not None:
        return model.specialize({k: tuple(int(d) for d in v) for k, v in input_shapes.items()})
    cached = list(model.specializations.values())
    if len(cached) == 1:
        return cached[0]
    if len(cached) > 1:
        raise InputError(f"The model has {len(cached)} specializations (one per input shape); "
                         "say which one to save with input_shapes= (--input-shape).")
    return model.specialize({})  # static inputs: compiles; dynamic ones: a clear ShapeError


def _check_can_save(target: Any) -> None:
    from heli.target import Target

    if type(target).deserialize is Target.deserialize:
        raise TargetError(f"The target {target.name!r} cannot save compiled code (it does not "
                          "implement Target.deserialize), so the model cannot be saved.")


def save_compiled(model: CompiledModel, path: str | os.PathLike, *,
                  input_shapes: Mapping[str, Sequence[int]] | None = None) -> SavedInfo:
    """Save one specialization of ``model`` as a self-describing ``.heli`` file.

    ``input_shapes`` picks (or compiles) the specialization; without it the
    model's only specialization is saved, or, for static inputs, the one for
    their shapes.  Nothing is written unless every segment could be saved.
    """
    from heli.target import TARGET_API_VERSION, Executable, get_target

    spec = _choose(model, input_shapes)
    blobs: list[bytes] = []
    segments, targets = [], {}
    for index, stage in enumerate(spec.stages):
        name, graph, exe = stage.target, stage.graph, stage.executable
        target = get_target(name)
        _check_can_save(target)
        if type(exe).serialize is Executable.serialize:
            raise TargetError(f"The target {name!r} cannot save compiled code (its executables "
                              "do not implement serialize), so the model cannot be saved.")
        payload = exe.serialize()
        if not isinstance(payload, bytes | bytearray):
            raise TargetError(f"The target {name!r} saved segment {index} as "
                              f"{type(payload).__name__}, not bytes.")
        segments.append({"target": name, "payload": len(blobs),
                         "inputs": [v.name for v in graph.inputs],
                         "outputs": [v.name for v in graph.outputs],
                         "nodes": list(spec.placement.segments[index][1])})
        blobs.append(bytes(payload))
        targets[name] = {"version": target.version, "api_version": target.api_version,
                         "host_fingerprint": dict(target.host_fingerprint())}
    constants = []
    for name in _run_constants(spec.graph, segments):
        dtype, blob = _array_blob(np.asarray(spec.graph.constants[name]))
        constants.append({"name": name, "dtype": dtype,
                          "shape": list(np.shape(spec.graph.constants[name])),
                          "blob": len(blobs)})
        blobs.append(blob)
    bound = {v.name: v for v in spec.graph.inputs}
    manifest = {
        "format": "heli compiled model",
        "heli_version": _heli_version(),
        "target_api_version": TARGET_API_VERSION,
        "target": model.target,
        "targets": targets,
        "host": host_info(),
        "model": spec.graph.name,
        "inputs": [{"name": v.name, "type": _type_json(bound.get(v.name, v).type),
                    "declared": _type_json(v.type)} for v in model.graph.inputs],
        "outputs": [{"name": v.name, "type": _type_json(v.type)} for v in spec.graph.outputs],
        "segments": segments,
        "constants": constants,
        "fallback_reasons": dict(spec.placement.fallback_reasons),
        "pass_times": spec.pass_times,
    }
    write_artifact(path, manifest, blobs)
    shapes = tuple(tuple(v.type.shape) for v in spec.graph.inputs
                   if isinstance(v.type, TensorType) and v.type.shape is not None)
    return SavedInfo(Path(path), os.path.getsize(path), tuple(s["target"] for s in segments),
                     shapes)


def _run_constants(graph: Graph, segments: list[dict]) -> list[str]:
    """Constants the run itself needs: outputs that were folded to constants (segments
    carry the constants they read in their own payloads)."""
    produced = {name for seg in segments for name in seg["outputs"]}
    wanted = [v.name for v in graph.outputs]
    wanted += [n for seg in segments for n in seg["inputs"]]
    return list(dict.fromkeys(n for n in wanted if n in graph.constants and n not in produced))


# -- loading ------------------------------------------------------------------


class LoadedModel(CompiledModel):
    """A model loaded from a ``.heli`` file: one specialization, ready to run."""

    def __init__(self, path: Path, manifest: dict[str, Any], graph: Graph,
                 spec: Specialization) -> None:
        super().__init__(graph, manifest["target"], lambda _graph, _types: spec)
        self.path = path
        self.manifest = manifest
        shapes = {v.name: v.type.shape for v in graph.inputs
                  if isinstance(v.type, TensorType) and v.type.is_static}
        self.specialize(shapes)

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return f"<LoadedModel {str(self.path)!r} target={self.target!r} ({ins})>"


def load(path: str | os.PathLike, *, debug: bool = False) -> LoadedModel:
    """Load a ``.heli`` file written by ``heli compile`` (or :func:`save_compiled`).

    Every problem is a clear :class:`heli.HeliError`: a missing, foreign,
    truncated or corrupt file, another format, Heli or target API version, a
    target that is not installed or has another version, or a host that does
    not match the one the code was compiled for.
    """
    where = str(path)
    manifest, blobs = read_artifact(path)
    try:
        _check_versions(where, manifest)
        executables = _load_segments(where, manifest, blobs, debug)
        return _assemble(Path(path), manifest, blobs, executables)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ModelLoadError(f"The compiled model {where!r} has a malformed manifest: "
                             f"{type(error).__name__}: {error}.") from None


def _check_versions(where: str, manifest: dict[str, Any]) -> None:
    from heli.target import TARGET_API_VERSION

    version = manifest["heli_version"]
    if version != _heli_version():
        raise ModelLoadError(
            f"The compiled model {where!r} was made by Heli {version}; this is Heli "
            f"{_heli_version()}. Recompile the model with this Heli."
        )
    api = manifest["target_api_version"]
    if api != TARGET_API_VERSION:
        raise ModelLoadError(
            f"The compiled model {where!r} uses target API version {api}; this Heli offers "
            f"version {TARGET_API_VERSION}. Recompile the model with this Heli."
        )


def _load_segments(where: str, manifest: dict[str, Any], blobs: list[memoryview],
                   debug: bool) -> list[Any]:
    from heli.target import CompileOptions, available_targets, get_target

    targets = {}
    for name, saved in manifest["targets"].items():
        try:
            target = get_target(name)
        except TargetError as error:
            raise TargetError(
                f"The compiled model {where!r} needs the target {name!r}, which cannot be "
                f"used here ({error} Installed targets: {available_targets()!r})."
            ) from None
        if saved["version"] != target.version:
            raise TargetError(
                f"The compiled model {where!r} was compiled by version {saved['version']!r} of "
                f"the target {name!r}, but version {target.version!r} is installed. Recompile "
                "the model."
            )
        _check_host(where, name, saved["host_fingerprint"], target.host_fingerprint())
        targets[name] = target
    options = CompileOptions(debug=debug)
    executables = []
    for segment in manifest["segments"]:
        target = targets[segment["target"]]
        executables.append(target.deserialize(bytes(blobs[segment["payload"]]), options))
    return executables


def _check_host(where: str, target: str, saved: Mapping[str, Any],
                here: Mapping[str, Any]) -> None:
    here = dict(here)
    diffs = [f"{key}={saved.get(key)!r} (this host: {here.get(key)!r})"
             for key in sorted(set(saved) | set(here)) if saved.get(key) != here.get(key)]
    if diffs:
        raise TargetError(
            f"The compiled model {where!r} was compiled by target {target!r} for another host: "
            f"{', '.join(diffs)}. Recompile the model on this host."
        )


def _assemble(path: Path, manifest: dict[str, Any], blobs: list[memoryview],
              executables: list[Any]) -> LoadedModel:
    constants = {c["name"]: _array_from(c["dtype"], c["shape"], blobs[c["blob"]])
                 for c in manifest["constants"]}
    inputs = tuple(Value(i["name"], _type_from(i["type"])) for i in manifest["inputs"])
    outputs = tuple(Value(o["name"], _type_from(o["type"])) for o in manifest["outputs"])
    segments = manifest["segments"]
    value_types = {v.name: v.type for v in (*inputs, *outputs)}
    stages = [
        Stage(seg["target"], _segment_signature(seg, value_types), exe)
        for seg, exe in zip(segments, executables, strict=True)
    ]

    placement = Placement(
        tuple((seg["target"], tuple(seg["nodes"])) for seg in segments),
        dict(manifest.get("fallback_reasons", {})),
    )
    graph = Graph(inputs, outputs, (), constants, name=manifest.get("model", "main"))
    spec = Specialization(graph, stages, placement, {})
    return LoadedModel(path, manifest, graph, spec)


def _segment_signature(segment: Mapping[str, Any], value_types: Mapping[str, Any]) -> Graph:
    """A node-less graph naming a saved segment's inputs and outputs: what a
    Stage needs to route values (the executable holds the computation)."""
    def value(name: str) -> Value:
        return Value(name, value_types.get(name))

    return Graph(tuple(value(n) for n in segment["inputs"]),
                 tuple(value(n) for n in segment["outputs"]), ())
