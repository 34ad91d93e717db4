"""The surface every target implements.

A target is capability data plus a small abstract surface:

* :meth:`Target.supports` says, per node, whether the target can run it
  (and if not, why), so the partitioner can hand the rest to a fallback;
* :meth:`Target.compile` turns a (sub)graph into an :class:`Executable`;
* :meth:`Executable.run` runs it on numpy feeds.

Optionally, :meth:`Target.prepare` rewrites the whole graph first (the
``npu`` target fuses quantized QDQ chains into its integer ops there).

Optionally, a target can save compiled code (``heli compile -o model.heli``):
:meth:`Executable.serialize` gives the payload bytes, :meth:`Target.deserialize`
turns them back into an executable, and :meth:`Target.host_fingerprint` says
what a host must match to run that code (e.g. the CPU ISA it was compiled for).

Targets are found through the ``heli.targets`` entry-point group; the
built-in ones register exactly the way a vendor's plugin package would.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from heli._errors import TargetError
from heli.ir._graph import Graph, Node

#: The target API version this Heli offers; plugins declare the one they need.
TARGET_API_VERSION = 1


@dataclass(frozen=True)
class Support:
    """A capability answer: ``ok``, or not with a ``reason`` a user can read."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


SUPPORTED = Support(True)


@dataclass
class CompileOptions:
    """Options every target receives (targets may ignore what they don't use)."""

    debug: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)


class Executable(abc.ABC):
    """A compiled (sub)graph, ready to run."""

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on ``feeds`` (by input name) and return outputs by name."""

    def serialize(self) -> bytes:
        """The compiled code as bytes, for :meth:`Target.deserialize` (optional)."""
        raise TargetError(
            f"The executable {type(self).__name__} cannot save compiled code: its target "
            "does not implement Executable.serialize()."
        )


class Target(abc.ABC):
    """Base class of every target (built-in or plugin)."""

    #: Registered name, e.g. ``"ref"``.
    name: ClassVar[str]
    #: The TARGET_API_VERSION this target was written against.
    api_version: ClassVar[int] = TARGET_API_VERSION
    description: ClassVar[str] = ""
    #: The target's own version; a saved artifact runs only on the same version.
    version: ClassVar[str] = ""

    @abc.abstractmethod
    def supports(self, node: Node) -> Support:
        """Whether this target can run ``node`` (types are already inferred)."""

    @abc.abstractmethod
    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        """Compile ``graph`` (every node of which :meth:`supports`)."""

    def prepare(self, graph: Graph) -> Graph:
        """Rewrite the whole graph before Heli's passes, when this target is the
        one requested (optional): e.g. fuse a quantized model's QDQ chains into
        the target's integer ops. Types are inferred. The default returns
        ``graph`` unchanged."""
        return graph

    def deserialize(self, payload: bytes, options: CompileOptions) -> Executable:
        """An executable from the bytes of :meth:`Executable.serialize` (optional)."""
        raise TargetError(
            f"The target {self.name!r} cannot load saved compiled code: it does not "
            "implement Target.deserialize()."
        )

    def capabilities(self) -> dict[str, object]:
        """A summary of what this target claims, for ``heli targets`` (optional).

        Conventional keys: ``"ops"`` (the op names it runs, e.g. ``["Add", "Conv"]``)
        and ``"dtypes"`` (element type names, e.g. ``["float32"]``); other keys are
        shown as they are. A summary only: the partitioner asks :meth:`supports`,
        node by node. Empty (the default) means "not declared".
        """
        return {}

    def host_fingerprint(self) -> dict[str, str]:
        """What a host must match to run this target's saved code (e.g. the CPU ISA).

        Empty (the default) means the saved code runs on any host.
        """
        return {}

    def __repr__(self) -> str:
        return f"<target {self.name!r}>"
