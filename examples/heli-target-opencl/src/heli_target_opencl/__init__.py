"""An OpenCL target for Heli: ``heli.compile(model, target="opencl")``, registered
through the ``heli.targets`` entry point; what it does not claim falls back (cpu, ref).
"""

from heli_target_opencl.dialect import OpenCLDialect
from heli_target_opencl.target import OPS, OpenCLExecutable, OpenCLTarget

__version__ = "0.1.0"
__all__ = ["OPS", "OpenCLDialect", "OpenCLExecutable", "OpenCLTarget"]
