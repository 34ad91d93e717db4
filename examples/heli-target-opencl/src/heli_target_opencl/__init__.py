"""An OpenCL target for Heli: ``heli.compile(model, target="opencl")``.

Elementwise float32 ops are lowered to Heli's kernel IR and rendered as
OpenCL C by :class:`OpenCLDialect` (a subclass of Heli's C dialect);
MatMul and Gemm run a tiled OpenCL kernel.  Everything else falls back to
``ref``.  Registered through the ``heli.targets`` entry point.
"""

from heli_target_opencl.dialect import OpenCLDialect
from heli_target_opencl.target import OPS, OpenCLExecutable, OpenCLTarget

__version__ = "0.1.0"
__all__ = ["OPS", "OpenCLDialect", "OpenCLExecutable", "OpenCLTarget"]
