"""``heli quantize``: int8 post-training quantization into QDQ ONNX."""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path

import numpy as np

from heli._errors import InputError


def cmd_quantize(args: argparse.Namespace) -> int:
    from heli.cli._commands import console, parse_shapes
    from heli.frontend.onnx import import_onnx
    from heli.quant import quantize, save_qdq_onnx

    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"-o {args.output!r} is a directory; give the output .onnx file.")
    if not out.parent.resolve().is_dir():
        raise InputError(f"-o {args.output!r}: the directory {str(out.parent)!r} does not exist.")
    shapes = parse_shapes(args.input_shape)
    graph = import_onnx(args.model)
    input_names = [v.name for v in graph.inputs]
    samples = load_calibration(args.calib, graph)
    qgraph = quantize(graph, samples, calibrator=args.calibrator, input_shapes=shapes or None)
    try:
        save_qdq_onnx(qgraph, out)
    except OSError as error:
        raise InputError(f"-o {args.output!r} cannot be written: "
                         f"{error.strerror or error}.") from None
    count = sum(1 for n in qgraph.nodes if n.op.name == "QuantizeLinear")
    console.print(f"quantized {args.model} ({args.calibrator}, {len(samples)} samples of "
                  f"{input_names}): {count} activation tensor(s) quantized; wrote {out}")
    return 0


def load_calibration(path: str, graph) -> list[dict[str, np.ndarray]]:
    """Feeds from a directory of .npy files (one sample each, single-input
    models) or an .npz with one array per input name (first axis = samples)."""
    inputs = {v.name: v for v in graph.inputs}
    if not os.path.exists(path):
        raise InputError(f"The calibration data {path!r} does not exist.")
    if os.path.isdir(path):
        return _from_directory(path, inputs)
    return _from_npz(path, inputs)


def _from_directory(path: str, inputs: dict) -> list[dict[str, np.ndarray]]:
    from heli.cli._commands import _load_npy

    if len(inputs) != 1:
        raise InputError(f"A calibration directory ({path!r}) serves single-input models; this "
                         f"model has inputs {list(inputs)!r}: give an .npz with one array per "
                         "input.")
    files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
    if not files:
        raise InputError(f"The calibration directory {path!r} has no .npy files.")
    (name, value), = inputs.items()
    return [{name: _fit(_load_npy(os.path.join(path, f), name), value, f)}
            for f in files]


def _from_npz(path: str, inputs: dict) -> list[dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise InputError("")
            arrays = {k: archive[k] for k in archive.files}
    except (InputError, ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError):
        raise InputError(f"The calibration data {path!r} is neither a directory of .npy files "
                         "nor a valid .npz archive.") from None
    wrong = sorted(set(arrays) ^ set(inputs))
    if wrong:
        raise InputError(f"The calibration archive {path!r} has arrays {sorted(arrays)!r}, but "
                         f"the model's inputs are {list(inputs)!r}.")
    counts = {len(a) if a.ndim else 0 for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"The arrays of {path!r} must all have the same number of samples "
                         "(> 0) along their first axis.")
    (count,) = counts
    return [{k: _fit(a[i], inputs[k], f"{k}[{i}]") for k, a in arrays.items()}
            for i in range(count)]


def _fit(array: np.ndarray, value, label: str) -> np.ndarray:
    """One sample as a feed: given a batch axis of 1 if it lacks the model's
    leading (batch) axis, and cast to the input's float type."""
    vtype = value.type
    shape = getattr(vtype, "shape", None)
    if shape is not None and array.ndim == len(shape) - 1:
        array = array[None]
    if shape is not None and array.ndim != len(shape):
        raise InputError(f"Calibration sample {label} has shape {list(array.shape)}, which does "
                         f"not fit the input {value.name!r} of rank {len(shape)}.")
    dtype = getattr(getattr(vtype, "dtype", None), "np", None)
    if dtype is not None and array.dtype != dtype:
        if array.dtype.kind not in "fiub":
            raise InputError(f"Calibration sample {label} has dtype {array.dtype}; the input "
                             f"{value.name!r} is {dtype}.")
        array = array.astype(dtype)
    return array
