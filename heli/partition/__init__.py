"""Partitioning a graph across targets (with automatic fallback)."""

from heli.partition._partition import Segment, assign, node_label, partition

__all__ = ["Segment", "assign", "node_label", "partition"]
