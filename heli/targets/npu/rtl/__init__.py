"""RTL of the reference NPU, generated with Amaranth 0.5 (``docs/npu.md``, "RTL").

* :mod:`~heli.targets.npu.rtl.params` — the generator's parameters (an
  :class:`~heli.targets.npu.config.NpuConfig`) checked before any generation;
* :mod:`~heli.targets.npu.rtl.array` — processing element and the DIM x DIM
  weight-stationary systolic array;
* :mod:`~heli.targets.npu.rtl.vector` — the vector unit (bias, exact
  requantization, clip, add, max / sum pooling steps, fill);
* :mod:`~heli.targets.npu.rtl.decoder` — the instruction decoder, generated
  from :mod:`heli.targets.npu.isa`;
* :mod:`~heli.targets.npu.rtl.top` — the datapath: SRAMs and the units;
* :mod:`~heli.targets.npu.rtl.bus` — the memory bus (valid / ready beats of rows);
* :mod:`~heli.targets.npu.rtl.dma` — the DMA engine;
* :mod:`~heli.targets.npu.rtl.queues` — fetch, token channels, the load / store
  queue executor;
* :mod:`~heli.targets.npu.rtl.sequencer` — the compute queue's sequencer;
* :mod:`~heli.targets.npu.rtl.core` — the whole core (``docs/npu.md``, "RTL core");
* :mod:`~heli.targets.npu.rtl.generate` — Verilog and ``params.json`` output.

Only :mod:`params` is imported here, so parameter checks need no Amaranth.
"""

from heli.targets.npu.rtl.params import (
    RtlConfigError,
    check_rtl_config,
    parse_size,
    rtl_config,
    rtl_params,
)

__all__ = ["RtlConfigError", "check_rtl_config", "parse_size", "rtl_config", "rtl_params"]
