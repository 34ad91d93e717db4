"""The cpu target's thread pool (kernels/threadpool.c) under a busy core:
kernels run with 2 threads while another process spins must still compute
exactly what they compute on one thread (correctness only, not timing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None,
                                reason="no C compiler")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# Conv (im2col + SGEMM), a depthwise conv, pooling, a big elementwise chain
# (a parallel loop), softmax and layer normalization (parallel rows with
# reductions inside), a MatMul against a constant: every kind of parallel
# job the cpu target runs.  Prints whether the 2-thread results equal the
# 1-thread ones bitwise and match the ref target.
CHILD = textwrap.dedent("""
    import json, os, sys, warnings
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    import heli
    from heli.targets.cpu import _toolchain as tc

    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    inits = {"w1": r(32, 3, 3, 3), "b1": r(32), "wd": r(32, 1, 3, 3), "w2": r(48, 32, 1, 1),
             "s": r(48, 1, 1), "g": r(56), "beta": r(56), "wm": r(56, 40),
             "shape": np.array([1, 48 * 56, 56], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["d1"], group=32, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d1", "w2"], ["c2"]),
        helper.make_node("Mul", ["c2", "s"], ["m"]),
        helper.make_node("Sigmoid", ["m"], ["sg"]),
        helper.make_node("Mul", ["m", "sg"], ["sw"]),
        helper.make_node("MaxPool", ["sw"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["sm"], axis=-1),
        helper.make_node("LayerNormalization", ["sm", "g", "beta"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "wm"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "busy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("sw", "y")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": r(1, 3, 112, 112)}
    results = {}
    for threads in ("1", "2"):
        os.environ["HELI_NUM_THREADS"] = threads
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # everything on cpu, no fallback
            compiled = heli.compile(model, "cpu")
        results[threads] = [compiled.run(feeds) for _ in range(15)]
    want = heli.compile(model, "ref").run(feeds)
    one = results["1"][0]
    same = all(np.array_equal(run[k], one[k]) for runs in results.values() for run in runs
               for k in one)
    close = all(np.abs(one[k] - want[k]).max() <= 1e-4 * np.abs(want[k]).max() for k in want)
    print(json.dumps({"same": bool(same), "close": bool(close), **tc.pool_stats()}))
""")


def _busy_loop(cpu: int | None) -> subprocess.Popen:
    code = "import os, sys\n"
    if cpu is not None:
        code += f"os.sched_setaffinity(0, {{{cpu}}})\n"
    code += "sys.stdout.write('go\\n'); sys.stdout.flush()\nwhile True:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    return proc


@pytest.mark.parametrize("same_core", [False, True])
def test_two_threads_with_a_busy_core_compute_the_one_thread_results(same_core):
    # same_core: the kernels' process and the busy loop are pinned to one CPU,
    # so the pool's worker always has to wait for a scheduler slice.
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if same_core and not cpus:
        pytest.skip("needs sched_setaffinity")
    pin = cpus[0] if same_core else None
    busy = _busy_loop(pin)
    try:
        prefix = [] if pin is None else ["taskset", "-c", str(pin)]
        if prefix and shutil.which("taskset") is None:
            prefix = []
            code = f"import os; os.sched_setaffinity(0, {{{pin}}})\n" + CHILD
        else:
            code = CHILD
        env = {**os.environ, "PYTHONPATH": ROOT}
        result = subprocess.run([*prefix, sys.executable, "-c", code], env=env,
                                capture_output=True, text=True, timeout=600, cwd=ROOT)
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["close"], "the cpu target disagrees with ref"
    assert report["same"], "2 threads gave different bits than 1 thread"
    assert report["workers"] >= 1 and report["jobs"] > 0  # the pool really ran jobs
