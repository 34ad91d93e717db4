"""The benchmarks' timing method: one implementation, in the package
(:mod:`heli.runtime._timing`, also behind ``heli bench``); see its docstring
and bench/README.md for the method."""

from heli.runtime._timing import (  # noqa: F401
    THREAD_VARIABLES,
    Comparison,
    Job,
    MeasurementError,
    Result,
    compare,
    matmul_peak,
    measure,
    median_latency,
    thread_env,
)
