"""Saving and loading compiled cpu code (the cpu segments of a ``.heli`` file).

A payload (:func:`serialize`) holds everything a cpu executable runs:

* the compiled **shared libraries**, as bytes: the model's generated kernels
  and the SGEMM library of the same ISA level;
* the **run plan**: the fused graph the executable runs (nodes, attributes,
  value types; ``heli:FusedGroup`` bodies included) as JSON, its constants
  as raw little-endian arrays;
* what the code needs from a host: its ISA level, whether it was built with
  AddressSanitizer, and the SHA-256 of the generated C source.

Layout (integers little-endian; nothing is pickled)::

    magic (8 bytes) | version (u32) | reserved (u32) | plan length (u64) | plan (JSON)
    | blobs, each on a 64-byte boundary of the payload (offset, length and
      SHA-256 of each in the plan)

Loading (:func:`deserialize`) runs neither the C compiler nor any graph pass:
it writes each library into the kernel cache under the hash of its bytes
(atomically; a file already there is reused), loads it with ctypes, and binds
the fused graph's steps to it with the same lowering as ``compile``
(:class:`~heli.targets.cpu._codegen.ModuleBuilder`), whose C source must hash
to the saved one.  Constant weights are packed again by the loaded SGEMM
library (a copy, no compiler), so the packing always matches the library
that runs.

What loading still asks of the toolchain, once per process and host: the
host's ISA level (:func:`~heli.targets.cpu._toolchain.host_isa` probes the
compiler with a tiny program) and the process-wide thread-pool runtime that
every kernel library links against (built once into the kernel cache).
Neither depends on the model.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import struct
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from heli._errors import TargetError
from heli.ir._graph import Graph, Node, Value
from heli.ir._types import Type
from heli.target import CompileOptions

__all__ = ["MAGIC", "VERSION", "deserialize", "host_fingerprint", "serialize"]

MAGIC = b"HELICPU\x00"
VERSION = 1
_HEADER = struct.Struct("<8sIIQ")
_ALIGN = 64


class _Damaged(ValueError):
    """A payload that does not parse; reported as a TargetError."""


# ------------------------------------------------------------------- host

@functools.lru_cache(maxsize=1)
def _abi() -> str:
    """What generated code assumes of the platform, whatever the compiler."""
    return (f"{ctypes.sizeof(ctypes.c_void_p) * 8}-bit pointers, "
            f"{ctypes.sizeof(ctypes.c_long) * 8}-bit long, {sys.byteorder}-endian")


@functools.lru_cache(maxsize=1)
def _libc() -> str:
    return platform.libc_ver()[0] or "unknown"


def _sanitizer() -> str:
    from heli.targets.cpu import _toolchain

    return "address" if _toolchain.asan_enabled() else "none"


def host_fingerprint() -> dict[str, str]:
    """What a host must match to run saved cpu code: the ISA level kernels are
    built for here, the machine, OS, C ABI and libc family, and whether
    kernels are AddressSanitizer builds (which need its runtime preloaded).
    The compiler's identity is left out: any compiler's code of the same ISA
    level and ABI runs."""
    from heli.targets.cpu import _toolchain

    return {"isa": _toolchain.host_isa(), "machine": platform.machine(),
            "system": platform.system(), "abi": _abi(), "libc": _libc(),
            "sanitizer": _sanitizer()}


# ------------------------------------------------------------ graph to JSON

class _Writer:
    """Turns a graph into JSON, collecting its arrays as blobs."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.arrays: list[dict[str, Any]] = []
        self._seen: dict[int, int] = {}
        self._keep: list[Any] = []  # ids stay unique while the arrays live

    def array(self, array: np.ndarray) -> int:
        from heli.runtime._artifact import _array_blob

        index = self._seen.get(id(array))
        if index is not None:
            return index
        dtype, blob = _array_blob(np.asarray(array))
        self._seen[id(array)] = index = len(self.arrays)
        self._keep.append(array)
        self.arrays.append({"dtype": dtype, "shape": list(np.shape(array)),
                            "blob": len(self.blobs)})
        self.blobs.append(blob)
        return index

    def value(self, value: Value | None) -> Any:
        from heli.runtime._artifact import _type_json

        if value is None:
            return None
        return {"name": value.name, "type": _type_json(value.type)}

    def attr(self, node: Node, key: str, value: Any) -> Any:
        if isinstance(value, bool | np.bool_):
            return {"bool": bool(value)}
        if isinstance(value, int | np.integer):
            return {"int": int(value)}
        if isinstance(value, float | np.floating):
            return {"float": float(value).hex()}  # exact, infinities included
        if isinstance(value, str):
            return {"str": value}
        if isinstance(value, bytes):
            return {"bytes": value.hex()}
        if isinstance(value, tuple | list):
            return {"list": [self.attr(node, key, v) for v in value]}
        if isinstance(value, Graph):
            return {"graph": self.graph(value)}
        if isinstance(value, np.ndarray):
            return {"array": self.array(value)}
        if isinstance(value, Type):
            from heli.runtime._artifact import _type_json

            return {"type": _type_json(value)}
        if value is None:
            return None
        raise TargetError(f"The cpu target cannot save attribute {key!r} of node "
                          f"{node.name or node.op.qualname!r} (a {type(value).__name__}).")

    def graph(self, graph: Graph) -> dict[str, Any]:
        nodes = [{"op": n.op.name, "domain": n.op.domain, "name": n.name,
                  "inputs": [self.value(v) for v in n.inputs],
                  "outputs": [self.value(v) for v in n.outputs],
                  "attrs": {k: self.attr(n, k, v) for k, v in n.attrs.items()}}
                 for n in graph.nodes]
        return {"name": graph.name, "opset": graph.opset,
                "inputs": [self.value(v) for v in graph.inputs],
                "outputs": [self.value(v) for v in graph.outputs],
                "constants": {k: self.array(v) for k, v in graph.constants.items()},
                "nodes": nodes}


class _Reader:
    """Rebuilds a graph from :class:`_Writer`'s JSON and the payload's arrays."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays

    def value(self, data: Any) -> Value | None:
        from heli.runtime._artifact import _type_from

        if data is None:
            return None
        return Value(str(data["name"]), _type_from(data["type"]))

    def attr(self, data: Any) -> Any:
        if data is None:
            return None
        (kind, raw), = data.items()
        if kind in ("bool", "int", "str"):
            return {"bool": bool, "int": int, "str": str}[kind](raw)
        if kind == "float":
            return float.fromhex(raw)
        if kind == "bytes":
            return bytes.fromhex(raw)
        if kind == "list":
            return tuple(self.attr(v) for v in raw)
        if kind == "graph":
            return self.graph(raw)
        if kind == "array":
            return self.arrays[int(raw)]
        if kind == "type":
            from heli.runtime._artifact import _type_from

            return _type_from(raw)
        raise _Damaged(f"unknown attribute kind {kind!r}")

    def graph(self, data: Mapping[str, Any]) -> Graph:
        from heli.ir._ops import find_op

        nodes = []
        for item in data["nodes"]:
            op = find_op(item["op"], item["domain"])
            if op is None:
                qualname = f"{item['domain']}:{item['op']}" if item["domain"] else item["op"]
                raise _Damaged(f"it uses the op {qualname!r}, which this Heli does not have")
            nodes.append(Node(op, tuple(self.value(v) for v in item["inputs"]),
                              tuple(self.value(v) for v in item["outputs"]),
                              {k: self.attr(v) for k, v in item["attrs"].items()},
                              name=str(item["name"])))
        return Graph(tuple(self.value(v) for v in data["inputs"]),
                     tuple(self.value(v) for v in data["outputs"]), tuple(nodes),
                     {str(k): self.arrays[int(i)] for k, i in data["constants"].items()},
                     name=str(data["name"]), opset=int(data["opset"]))


# --------------------------------------------------------------- the layout

def _pad(n: int) -> int:
    return -n % _ALIGN


def _pack(plan: dict[str, Any], blobs: list[bytes]) -> bytes:
    table, offset = [], 0
    for blob in blobs:
        table.append({"offset": offset, "length": len(blob),
                      "sha256": hashlib.sha256(blob).hexdigest()})
        offset += len(blob) + _pad(len(blob))
    text = json.dumps({**plan, "blobs": table}, separators=(",", ":")).encode()
    head = _HEADER.pack(MAGIC, VERSION, 0, len(text)) + text
    parts = [head, b"\0" * _pad(len(head))]
    for blob in blobs:
        parts += [blob, b"\0" * _pad(len(blob))]
    return b"".join(parts)


def _unpack(payload: bytes | bytearray) -> tuple[dict[str, Any], list[memoryview]]:
    if len(payload) < _HEADER.size:
        raise _Damaged(f"it has {len(payload)} bytes, fewer than its header")
    magic, version, _, length = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise _Damaged("it does not start with the cpu payload header")
    if version != VERSION:
        raise _Damaged(f"it has cpu payload version {version}; this Heli reads version "
                       f"{VERSION}")
    end = _HEADER.size + length
    if end > len(payload):
        raise _Damaged("it is truncated inside its plan")
    try:
        plan = json.loads(bytes(payload[_HEADER.size:end]))
    except ValueError as error:
        raise _Damaged(f"its plan is not JSON ({error})") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("blobs"), list):
        raise _Damaged("its plan has no blob table")
    data = memoryview(payload)[end + _pad(end):]
    blobs = []
    for index, entry in enumerate(plan["blobs"]):
        offset, size = int(entry["offset"]), int(entry["length"])
        if offset < 0 or size < 0 or offset + size > len(data):
            raise _Damaged(f"blob {index} lies outside the payload (truncated?)")
        blob = data[offset:offset + size]
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise _Damaged(f"blob {index} does not match its checksum")
        blobs.append(blob)
    return plan, blobs


# ------------------------------------------------------------------- saving

def serialize(exe: Any) -> bytes:
    """The payload of a cpu executable (see the module docstring)."""
    saved = getattr(exe, "_saved_payload", None)
    if saved is not None:  # loaded from a payload: the very same bytes
        return saved
    from heli.targets.cpu import _gemm, _toolchain
    from heli.targets.cpu._codegen import ModuleBuilder

    graph: Graph = exe.graph
    isa = _toolchain.host_isa()
    # Lower the fused graph again to name its C source; the content-addressed
    # cache then hands back the library compile() built (no compiler run,
    # unless the cache was emptied in between).
    builder = ModuleBuilder(graph, _toolchain.num_threads())
    for node in graph.nodes:
        builder.add(node)
    source = builder.source()
    model_lib = _toolchain.build_library(source, name=f"model-{graph.name}")
    gemm = _gemm.library(isa)
    sgemm_lib = Path(gemm.raw._name)  # the very file this process runs
    writer = _Writer()
    writer.blobs += [model_lib.read_bytes(), sgemm_lib.read_bytes()]
    graph_json = writer.graph(graph)
    plan = {
        "format": "heli cpu code",
        "isa": isa,
        "sanitizer": _sanitizer(),
        "machine": platform.machine(),
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "gemm_config": _config_json(gemm.config),
        "libraries": {"model": {"blob": 0, "name": f"model-{graph.name}"},
                      "sgemm": {"blob": 1, "name": f"sgemm-{isa}"}},
        "arrays": writer.arrays,
        "graph": graph_json,
    }
    return _pack(plan, writer.blobs)


def _config_json(config: Any) -> dict[str, Any]:
    return {k: getattr(config, k) for k in ("mr", "nr", "kc", "mc", "nc", "vector_width", "isa")}


# ------------------------------------------------------------------ loading

def deserialize(payload: bytes, options: CompileOptions) -> Any:
    """A :class:`~heli.targets.cpu.CpuExecutable` from :func:`serialize`'s bytes."""
    payload = bytes(payload)  # the blobs and constants are views of these bytes
    try:
        plan, blobs = _unpack(payload)
        return _rebuild(payload, plan, blobs, options)
    except _Damaged as error:
        raise TargetError(f"The saved cpu code is damaged: {error}.") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise TargetError(f"The saved cpu code is damaged: its plan is malformed "
                          f"({type(error).__name__}: {error}).") from None


def _check_host(plan: Mapping[str, Any]) -> str:
    from heli.targets.cpu import _toolchain

    isa, here = str(plan["isa"]), _toolchain.host_isa()
    if isa != here:
        raise TargetError(
            f"The saved cpu code was built for ISA level {isa!r}, but kernels here are built "
            f"for {here!r} (set HELI_CPU_ISA or recompile the model on this host).")
    if plan["machine"] != platform.machine():
        raise TargetError(f"The saved cpu code was built for a {plan['machine']} machine; "
                          f"this one is {platform.machine()}. Recompile the model here.")
    if plan["sanitizer"] != _sanitizer():
        raise TargetError(
            f"The saved cpu code was built with sanitizer {plan['sanitizer']!r}, but this "
            f"process runs with {_sanitizer()!r} (HELI_CPU_ASAN). Recompile the model.")
    return isa


def _rebuild(payload: bytes, plan: dict[str, Any], blobs: list[memoryview],
             options: CompileOptions) -> Any:
    from heli.runtime._artifact import _array_from
    from heli.targets.cpu import CpuExecutable, _frees, _toolchain
    from heli.targets.cpu._codegen import ModuleBuilder

    if plan.get("format") != "heli cpu code":
        raise _Damaged("its plan is not a cpu plan")
    isa = _check_host(plan)
    libraries = plan["libraries"]
    model_lib = _toolchain.load_library(
        _materialize(blobs[int(libraries["model"]["blob"])], str(libraries["model"]["name"])))
    _install_gemm(isa, blobs[int(libraries["sgemm"]["blob"])], plan["gemm_config"])

    # The constants are (read-only) views of the payload, which the executable
    # keeps anyway to save itself again: no second copy of the weights.
    arrays = [_array_from(a["dtype"], a["shape"], blobs[int(a["blob"])])
              for a in plan["arrays"]]
    graph = _Reader(arrays).graph(plan["graph"])
    if options.debug:
        from heli.ir._verify import verify

        verify(graph)

    class Loader(ModuleBuilder):
        """The compile-time lowering, bound to the saved library."""

        def build(self) -> list:
            digest = hashlib.sha256(self.source().encode()).hexdigest()
            if digest != plan["source_sha256"]:
                raise TargetError(
                    "The saved cpu code does not match the kernels this Heli generates for "
                    "its graph (its C source differs). Recompile the model with this Heli.")
            self.arena.allocate()
            return [make(model_lib) for make in self.makers]

    builder = Loader(graph, _toolchain.num_threads())
    try:
        for node in graph.nodes:
            builder.add(node)
        steps = builder.build()
    except AttributeError as error:  # a kernel the library lacks
        raise TargetError(f"The saved cpu library lacks a kernel this Heli binds: {error}. "
                          "Recompile the model.") from None
    exe = CpuExecutable(graph, steps, _frees(graph))
    exe._saved_payload = payload  # saving it again writes the same bytes
    return exe


def _install_gemm(isa: str, blob: memoryview, config: Mapping[str, Any]) -> None:
    """Make the saved SGEMM library the process's library for ``isa``, unless
    one is loaded already (the same source built for the same level)."""
    from heli.targets.cpu import _gemm, _toolchain

    with _gemm._lock:
        found = _gemm._libraries.get(isa)
        if found is None:
            lib = _toolchain.load_library(_materialize(blob, f"sgemm-{isa}"))
            found = _gemm._libraries[isa] = _gemm.GemmLibrary(lib, isa)
    if _config_json(found.config) != dict(config):
        raise TargetError(
            f"The saved cpu code packs its weights for SGEMM blocking {dict(config)!r}, but "
            f"the SGEMM library loaded here uses {_config_json(found.config)!r}. Recompile "
            "the model.")


def _materialize(blob: memoryview, name: str) -> Path:
    """The library bytes as a file in the kernel cache, named by their hash
    (written atomically; one already there is reused)."""
    from heli.targets.cpu import _toolchain

    digest = hashlib.sha256(blob).hexdigest()[:32]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "kernel"
    folder = _toolchain.cache_dir()
    path = folder / f"{safe}-saved-{digest}.so"
    try:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest()[:32] == digest:
            return path
        fd, tmp = tempfile.mkstemp(prefix=".saved-", suffix=".so", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as error:
        raise TargetError(f"Cannot write the saved cpu library into {str(folder)!r}: "
                          f"{error.strerror or error}.") from None
    return path
