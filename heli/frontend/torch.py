"""PyTorch front door: ``torch.nn.Module`` → ONNX bytes (→ the ONNX importer).

torch is optional (``pip install torch==2.13.0``).  The module is exported
with TorchScript-based ``torch.onnx.export`` (no extra packages needed);
inputs are named ``input_0``, ``input_1``... unless ``input_names`` is given.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

from heli._errors import HeliError, UnsupportedError

__all__ = ["export_torch"]

EXPORT_OPSET = 17


def export_torch(module: Any, example_inputs: Sequence[Any] | None,
                 input_names: Sequence[str] | None = None) -> bytes:
    """Export ``module`` called on ``example_inputs`` to ONNX bytes."""
    try:
        import torch
    except ImportError:
        raise UnsupportedError(
            "Compiling a torch.nn.Module needs PyTorch: pip install torch==2.13.0."
        ) from None
    if example_inputs is None:
        raise HeliError("heli.compile(module) needs example_inputs=(tensor, ...) to trace it.")
    if not isinstance(example_inputs, tuple | list):
        example_inputs = (example_inputs,)
    args = tuple(torch.as_tensor(x) for x in example_inputs)
    names = list(input_names or [f"input_{i}" for i in range(len(args))])
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, input_names=names,
                              opset_version=EXPORT_OPSET, dynamo=False)
    except Exception as error:
        raise UnsupportedError(
            f"torch.onnx.export could not export the module {type(module).__name__!r}: {error}"
        ) from None
    finally:
        module.train(was_training)
    return buffer.getvalue()
