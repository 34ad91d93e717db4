"""``heli new-target NAME``: a working target plugin package to start a port from.

It writes ``heli-target-NAME/``: a ``heli.targets`` entry point, a Target whose
capability data claims a few float32 ops (Add, Conv, MatMul, Relu), an emulated
device on numpy behind a small runtime surface (allocate, copy in/out, load a
program, launch, synchronize), tests (a model with fallback, ONNX's node cases
for the claimed ops) and a README.  The generated code imports only Heli's
public API.  ``docs/vendor-guide.md`` walks through it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from pathlib import Path

from heli._errors import InputError

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_MAX_NAME = 40


def add_new_target_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("new-target", help="write a target plugin package skeleton "
                                          "(heli-target-NAME/) for your chip")
    p.add_argument("name", help="the target's name, e.g. acme (lowercase letters, digits, _)")
    p.add_argument("-o", "--output", default=".", metavar="DIR",
                   help="where to create heli-target-NAME/ (default: the current directory)")
    p.set_defaults(func=cmd_new_target)


def check_name(name: str) -> None:
    """Refuse a name that cannot be a target name, a package name and a class name."""
    if not _NAME.match(name) or len(name) > _MAX_NAME:
        raise InputError(
            f"The target name {name!r} is not valid: use up to {_MAX_NAME} lowercase letters, "
            "digits and underscores, starting with a letter (e.g. 'acme' or 'my_chip')."
        )
    from heli.target import available_targets

    if name in available_targets():
        raise InputError(f"The target name {name!r} is already taken by an installed target; "
                         "a second plugin with that name would disable both. Choose another.")


def class_prefix(name: str) -> str:
    """``my_chip`` → ``MyChip``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def render(name: str) -> dict[str, str]:
    """The skeleton's files (relative path → text) for target ``name``."""
    import heli
    from heli.target import TARGET_API_VERSION

    values = {
        "{{name}}": name,
        "{{Name}}": class_prefix(name),
        "{{api}}": str(TARGET_API_VERSION),
        "{{heli_version}}": heli.__version__,
    }
    files = {}
    for path, text in _FILES.items():
        for key, value in values.items():
            path, text = path.replace(key, value), text.replace(key, value)
        files[path] = text.lstrip("\n")
    return files


def new_target(name: str, output: str | os.PathLike = ".") -> Path:
    """Write ``OUTPUT/heli-target-NAME/``; returns its path. Never overwrites."""
    check_name(name)
    parent = Path(output)
    if parent.exists() and not parent.is_dir():
        raise InputError(f"-o {str(parent)!r} exists and is not a directory.")
    root = parent / f"heli-target-{name}"
    if root.exists() or root.is_symlink():
        raise InputError(f"{str(root)!r} already exists; heli new-target does not overwrite "
                         "it. Remove it or choose another -o directory.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # Written into a temporary sibling, then renamed: the package appears whole or not at all.
        staging = Path(tempfile.mkdtemp(prefix=f".heli-target-{name}.", dir=parent))
        try:
            for relative, text in render(name).items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            os.rename(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        raise InputError(f"The package cannot be written to {str(root)!r}: "
                         f"{error.strerror or error}.") from None
    return root


def cmd_new_target(args: argparse.Namespace) -> int:
    from heli.cli._commands import console

    root = new_target(args.name, args.output)
    console.print(f"wrote {root}/ (target {args.name!r}: Add, Conv, MatMul, Relu in float32 on "
                  "an emulated device; everything else falls back to ref)")
    console.print("next:")
    console.print(f"  pip install -e {root}")
    console.print(f"  heli run model.onnx --target {args.name}")
    console.print(f"  python -m pytest {root / 'tests'}")
    return 0


# -- the skeleton ---------------------------------------------------------------
# Placeholders: {{name}} (target name), {{Name}} (class prefix), {{api}} (the
# TARGET_API_VERSION it is written for), {{heli_version}}.

_PYPROJECT = '''
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "heli-target-{{name}}"
version = "0.1.0"
description = "The {{name}} target for Heli (an emulated device on numpy, to replace with yours)"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["heli>={{heli_version}}", "numpy"]

[project.optional-dependencies]
test = ["pytest", "onnx"]

# This line is the whole registration: Heli finds targets through this group.
[project.entry-points."heli.targets"]
{{name}} = "heli_target_{{name}}:{{Name}}Target"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_README = '''
# heli-target-{{name}}

A [Heli](https://github.com/heli-compiler/heli) target plugin for the `{{name}}`
chip, generated by `heli new-target {{name}}`. Out of the box the "chip" is an
emulated device on numpy, so everything works before you touch any hardware:

```sh
pip install -e .                        # registers the target through its entry point
heli targets                            # {{name}} is listed, with the ops it claims
heli run model.onnx --target {{name}}   # claimed ops on {{name}}, the rest falls back to ref
python -m pytest tests                  # a model with fallback, ONNX's cases for claimed ops
heli conformance --target {{name}} --no-models --show fail   # the full scorecard
```

## Layout

* `src/heli_target_{{name}}/target.py`: `{{Name}}Target`, the capability data
  (`OPS`, `supports`, `capabilities`) and `compile` (a graph segment lowered to
  a device program), and `{{Name}}Executable` (copy in, launch, synchronize,
  copy out). Becomes your compiler.
* `src/heli_target_{{name}}/device.py`: `EmulatedDevice`, the runtime surface
  (allocate, free, copy_in, copy_out, load_program, launch, synchronize)
  emulated on numpy. Becomes the bindings to your driver / runtime.
* `src/heli_target_{{name}}/kernels.py`: what the device computes for each
  kernel, in numpy float32. Becomes your chip's kernels.
* `tests/test_{{name}}.py`: registration, a model with fallback, ONNX's node
  cases for each claimed op. Keep it, and it grows with your ops.

## Adding an op

1. Add a kernel to `kernels.py` (or to your chip's library).
2. Claim it in `OPS` in `target.py`, with a check that refuses, with a reason,
   what the kernel cannot do (other dtypes, ranks, attribute values).
3. Add its argument preparation to `kernel_args()` if the kernel needs attributes.
4. `python -m pytest tests`: the conformance test picks the new op up from
   `capabilities()` and runs ONNX's cases for it.

The target API version this code was written for is `api_version = {{api}}` in
`target.py`; Heli refuses (with a clear message, other targets unaffected) a
plugin whose version it does not offer. See Heli's `docs/vendor-guide.md`.
'''

_INIT = '''
"""The {{name}} target for Heli: ``heli.compile(model, target="{{name}}")``.

Registered through the ``heli.targets`` entry point in ``pyproject.toml``.
"""

from heli_target_{{name}}.device import DeviceError, EmulatedDevice
from heli_target_{{name}}.target import OPS, {{Name}}Executable, {{Name}}Target

__version__ = "0.1.0"

__all__ = [
    "OPS", "DeviceError", "EmulatedDevice", "{{Name}}Executable", "{{Name}}Target",
]
'''

_DEVICE = '''
"""The {{name}} device, emulated on numpy.

This is the only file that talks to the "hardware". Replace the bodies with
calls into your driver / runtime library and keep the surface, which is all
``target.py`` uses:

    allocate(shape, dtype) -> Buffer    reserve device memory
    free(buffer)                        give it back
    copy_in(buffer, array)              host -> device
    copy_out(buffer) -> array           device -> host (waits for queued work first)
    load_program(program) -> handle     upload compiled code (a list of kernel launches)
    launch(handle)                      queue one run of a loaded program (asynchronous)
    synchronize()                       wait until every queued launch has finished
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heli_target_{{name}} import kernels


class DeviceError(RuntimeError):
    """The device refused a request (out of memory, bad buffer, unknown kernel ...)."""


@dataclass(frozen=True)
class Buffer:
    """A handle to device memory holding one tensor."""

    id: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class Launch:
    """One kernel call: which kernel, on which buffers, with which arguments."""

    kernel: str
    inputs: tuple[Buffer | None, ...]  # None: an omitted optional operand
    outputs: tuple[Buffer, ...]
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    """Compiled code: kernel launches in order."""

    launches: tuple[Launch, ...]


class EmulatedDevice:
    """An emulated accelerator: memory is a dict of numpy arrays, launches are
    queued and run on :meth:`synchronize`, as on a real asynchronous device."""

    def __init__(self, memory_bytes: int = 8 << 30) -> None:
        self.memory_bytes = memory_bytes
        self._memory: dict[int, np.ndarray] = {}
        self._used = 0
        self._ids = itertools.count(1)
        self._programs: dict[int, Program] = {}
        self._queue: list[int] = []

    # -- memory ----------------------------------------------------------------
    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> Buffer:
        buffer = Buffer(next(self._ids), tuple(int(d) for d in shape), np.dtype(dtype))
        if self._used + buffer.nbytes > self.memory_bytes:
            raise DeviceError(f"out of device memory: {buffer.nbytes} bytes requested, "
                              f"{self.memory_bytes - self._used} of {self.memory_bytes} free")
        self._memory[buffer.id] = np.zeros(buffer.shape, buffer.dtype)
        self._used += buffer.nbytes
        return buffer

    def free(self, buffer: Buffer) -> None:
        if self._memory.pop(buffer.id, None) is not None:
            self._used -= buffer.nbytes

    def copy_in(self, buffer: Buffer, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.shape != buffer.shape or array.dtype != buffer.dtype:
            raise DeviceError(f"copy_in of {array.dtype}{list(array.shape)} into a buffer of "
                              f"{buffer.dtype}{list(buffer.shape)}")
        self._memory_of(buffer)[...] = array

    def copy_out(self, buffer: Buffer) -> np.ndarray:
        self.synchronize()  # the copy is ordered after the queued launches
        return self._memory_of(buffer).copy()

    # -- execution -------------------------------------------------------------
    def load_program(self, program: Program) -> int:
        for launch in program.launches:
            if launch.kernel not in kernels.KERNELS:
                raise DeviceError(f"the device has no kernel {launch.kernel!r}")
        handle = next(self._ids)
        self._programs[handle] = program
        return handle

    def unload_program(self, handle: int) -> None:
        self._programs.pop(handle, None)

    def launch(self, handle: int) -> None:
        if handle not in self._programs:
            raise DeviceError(f"no program is loaded as handle {handle}")
        self._queue.append(handle)

    def synchronize(self) -> None:
        queue, self._queue = self._queue, []
        for handle in queue:
            for launch in self._programs[handle].launches:
                self._run(launch)

    def _run(self, launch: Launch) -> None:
        args = [None if b is None else self._memory_of(b) for b in launch.inputs]
        results = kernels.KERNELS[launch.kernel](*args, **launch.args)
        for buffer, result in zip(launch.outputs, results, strict=True):
            result = np.asarray(result)
            if result.shape != buffer.shape or result.dtype != buffer.dtype:
                raise DeviceError(f"kernel {launch.kernel!r} produced {result.dtype}"
                                  f"{list(result.shape)} for a buffer of {buffer.dtype}"
                                  f"{list(buffer.shape)}")
            self._memory_of(buffer)[...] = result

    def _memory_of(self, buffer: Buffer) -> np.ndarray:
        try:
            return self._memory[buffer.id]
        except KeyError:
            raise DeviceError(f"buffer {buffer.id} is not allocated") from None
'''

_KERNELS = '''
"""What the {{name}} device computes: one numpy function per kernel, in float32.

Each kernel takes its input arrays (None for an omitted optional operand) and
keyword arguments prepared by the compiler, and returns a tuple of outputs.
On real hardware these are your chip's kernels; here they are the emulation.
"""

from __future__ import annotations

import numpy as np


def relu(x: np.ndarray) -> tuple[np.ndarray]:
    return (np.maximum(x, np.float32(0)),)


def add(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
    return (np.add(a, b, dtype=np.float32),)


def matmul(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
    return (np.matmul(a, b, dtype=np.float32),)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
           strides: tuple[int, int], dilations: tuple[int, int],
           pads: tuple[int, int, int, int], group: int) -> tuple[np.ndarray]:
    """2-D convolution (cross-correlation) with explicit pads (top, left, bottom, right)."""
    n, c, _, _ = x.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    # im2col: one strided view per kernel tap, then one batched matrix product per group.
    cols = np.empty((n, c, kh, kw, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                 j * dw:j * dw + sw * (ow - 1) + 1:sw]
    cols = cols.reshape(n, group, cg * kh * kw, oh * ow)
    y = np.matmul(w.reshape(1, group, m // group, cg * kh * kw), cols)
    y = y.reshape(n, m, oh, ow)
    if b is not None:
        y = y + b.reshape(1, m, 1, 1)
    return (y.astype(np.float32, copy=False),)


#: The device's kernel table: name -> function.
KERNELS = {"relu": relu, "add": add, "matmul": matmul, "conv2d": conv2d}
'''

_TARGET = '''
"""The {{name}} target: what Heli sees of your chip.

* Capability data: ``OPS`` says which ops the chip runs and checks each node's
  specifics; :meth:`{{Name}}Target.supports` answers per node, with a reason
  when it refuses, so the partitioner hands that node to the fallback targets
  (by default ``cpu``, then ``ref``).
* :meth:`{{Name}}Target.compile` lowers a graph segment (whose every node it
  supports) to a device :class:`Program` and returns an executable.
* :meth:`{{Name}}Executable.run` copies the feeds in, launches the program,
  synchronizes and copies the outputs out.

Only Heli's public API is used: ``heli``, ``heli.target``, ``heli.ir``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import heli
import numpy as np
from heli.ir import Graph, Node, TensorType
from heli.target import SUPPORTED, CompileOptions, Executable, Support, Target

from heli_target_{{name}}.device import Buffer, DeviceError, EmulatedDevice, Launch, Program

DTYPE = np.dtype(np.float32)


def _conv_check(node: Node) -> Support:
    x = node.inputs[0]
    if x is None or len(x.type.shape) != 4:
        return Support(False, "the {{name}} Conv kernel is 2-D only (inputs of rank 4)")
    return SUPPORTED


#: The ops the chip runs (ONNX default domain): name -> (device kernel, extra check).
OPS: dict[str, tuple[str, Callable[[Node], Support] | None]] = {
    "Add": ("add", None),
    "Conv": ("conv2d", _conv_check),
    "MatMul": ("matmul", None),
    "Relu": ("relu", None),
}


class {{Name}}Target(Target):
    name = "{{name}}"
    # The heli.target.TARGET_API_VERSION this code was written for. Heli refuses a
    # plugin whose version it does not offer (other targets keep working); bump it
    # only after porting to the new API.
    api_version = {{api}}
    version = "0.1.0"
    description = "{{name}} accelerator (an emulated device on numpy; replace with yours)"

    def __init__(self) -> None:
        self.device = EmulatedDevice()

    def capabilities(self) -> dict[str, object]:
        """A summary for ``heli targets``; the partitioner asks :meth:`supports`."""
        return {"ops": sorted(OPS), "dtypes": [DTYPE.name], "device": "emulated on numpy"}

    def supports(self, node: Node) -> Support:
        if node.op.domain or node.op.name not in OPS:
            return Support(False, f"no {{name}} kernel for {node.op.qualname}")
        for value in (*node.inputs, *node.outputs):
            if value is None:
                continue
            vtype = value.type
            if not isinstance(vtype, TensorType) or vtype.dtype.np != DTYPE:
                return Support(False, f"{{name}} runs {DTYPE.name} only; "
                                      f"{value.name!r} is {vtype}")
            if not vtype.is_static:
                return Support(False, f"{{name}} needs static shapes; {value.name!r} is {vtype}")
        check = OPS[node.op.name][1]
        return check(node) if check else SUPPORTED

    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        for node in graph.nodes:
            answer = self.supports(node)
            if not answer:
                raise heli.TargetError(f"The {{name}} target cannot compile {node.op.name} "
                                       f"node {node.name!r}: {answer.reason}.")
        try:
            return {{Name}}Executable(self.device, graph)
        except DeviceError as error:
            raise heli.TargetError(f"The {{name}} device cannot load {graph.name!r}: "
                                   f"{error}.") from None


class {{Name}}Executable(Executable):
    """A graph segment lowered to one device program, its buffers allocated once."""

    def __init__(self, device: EmulatedDevice, graph: Graph) -> None:
        self.device, self.graph = device, graph
        self.buffers: dict[str, Buffer] = {}
        for value in graph.inputs:
            self.buffers[value.name] = device.allocate(value.type.shape, DTYPE)
        launches = []
        for node in graph.nodes:
            inputs = tuple(None if v is None else self._operand(v.name) for v in node.inputs)
            outputs = []
            for value in node.outputs:
                self.buffers[value.name] = device.allocate(value.type.shape, DTYPE)
                outputs.append(self.buffers[value.name])
            launches.append(Launch(OPS[node.op.name][0], inputs, tuple(outputs),
                                   kernel_args(node)))
        self.program = device.load_program(Program(tuple(launches)))
        # Device memory and the program go back to the device with this executable.
        weakref.finalize(self, _release, device, list(self.buffers.values()), self.program)

    def _operand(self, name: str) -> Buffer:
        """The buffer of a value; weights (graph constants) are uploaded once, here."""
        if name not in self.buffers:
            data = np.asarray(self.graph.constants[name])
            self.buffers[name] = self.device.allocate(data.shape, data.dtype)
            self.device.copy_in(self.buffers[name], data)
        return self.buffers[name]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            for value in self.graph.inputs:
                self.device.copy_in(self.buffers[value.name], feeds[value.name])
            self.device.launch(self.program)
            self.device.synchronize()
            return {v.name: self.device.copy_out(self._operand(v.name))
                    for v in self.graph.outputs}
        except DeviceError as error:
            raise heli.ExecutionError(f"The {{name}} device failed running "
                                      f"{self.graph.name!r}: {error}.") from None


def _release(device: EmulatedDevice, buffers: list[Buffer], program: int) -> None:
    device.unload_program(program)
    for buffer in buffers:
        device.free(buffer)


def kernel_args(node: Node) -> dict[str, Any]:
    """The keyword arguments of a node's kernel, resolved at compile time."""
    if node.op.name != "Conv":
        return {}
    x, w = node.inputs[0].type.shape, node.inputs[1].type.shape
    kernel = tuple(node.attr("kernel_shape") or w[2:])
    strides = tuple(node.attr("strides") or (1, 1))
    dilations = tuple(node.attr("dilations") or (1, 1))
    pads = tuple(node.attr("pads") or (0, 0, 0, 0))
    auto_pad = node.attr("auto_pad")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(x[2:], kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        pads = (*begins, *ends)
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    return {"strides": strides, "dilations": dilations, "pads": pads,
            "group": int(node.attr("group") or 1)}
'''

_TESTS = '''
"""The {{name}} target: registration, a model with fallback, and ONNX's node
cases for every op it claims (as ``heli conformance --target {{name}}`` runs them)."""

import heli
import numpy as np
import pytest
from heli.conformance import case_op, heli_runner, node_cases, run_case
from heli.target import TARGET_API_VERSION, available_targets, get_target, target_problems
from onnx import TensorProto, helper, numpy_helper

from heli_target_{{name}} import OPS, {{Name}}Target


def test_the_entry_point_registers_the_target():
    assert "{{name}}" in available_targets(), target_problems()
    assert isinstance(get_target("{{name}}"), {{Name}}Target)
    assert {{Name}}Target.api_version == TARGET_API_VERSION
    assert sorted({{Name}}Target().capabilities()["ops"]) == sorted(OPS)


def _model():
    """Conv -> Relu -> Sigmoid -> MatMul -> Add -> Softmax: Sigmoid and Softmax
    are not claimed and fall back to ref."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    m = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "m")
    c = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "c")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["y2"], name="relu"),
        helper.make_node("Sigmoid", ["y2"], ["y3"], name="sigmoid"),
        helper.make_node("MatMul", ["y3", "m"], ["y4"], name="matmul"),
        helper.make_node("Add", ["y4", "c"], ["y5"], name="add"),
        helper.make_node("Softmax", ["y5"], ["z"], name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "fallback_demo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 5])],
        [w, b, m, c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_runs_with_fallback_and_matches_ref():
    model = _model()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    # fallback ref (the float golden model) for a placement that needs no C
    # compiler; heli.compile's default fallback is ("cpu", "ref")
    compiled = heli.compile(model, target="{{name}}", fallback=("ref",))
    with pytest.warns(heli.FallbackWarning, match="sigmoid") as warned:
        got = compiled.run({"x": x})["z"]
    assert "softmax" in str(warned[0].message)
    want = heli.compile(model, target="ref").run({"x": x})["z"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    placement = next(iter(compiled.specializations.values())).placement
    assert placement.counts() == {"{{name}}": 4, "ref": 2}
    assert set(placement.fallback_reasons) == {"sigmoid", "softmax"}


@pytest.fixture(scope="module")
def cases_by_op():
    by_op = {}
    for case in node_cases():
        by_op.setdefault(case_op(case), []).append(case)
    return by_op


@pytest.mark.parametrize("op", sorted(OPS))
def test_conformance_of_a_claimed_op(op, cases_by_op):
    """ONNX's cases for the op: none may fail; the ones {{name}} refuses (other
    dtypes, expanded forms) count as unsupported, and at least one must pass."""
    results = [run_case(case, heli_runner("{{name}}")) for case in cases_by_op[op]]
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "fail"]
    assert not failed, failed
    assert any(r.status == "pass" for r in results), [(r.name, r.detail) for r in results]
'''

_FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "src/heli_target_{{name}}/__init__.py": _INIT,
    "src/heli_target_{{name}}/device.py": _DEVICE,
    "src/heli_target_{{name}}/kernels.py": _KERNELS,
    "src/heli_target_{{name}}/target.py": _TARGET,
    "tests/test_{{name}}.py": _TESTS,
}
