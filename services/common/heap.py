"""Keeps the garbage collector off long-lived objects, so a full collection never stalls the event loop.

Measured (docs/benchmarks.md): after start-up, a full collection under load walked ~240,000 long-lived
objects (modules, engines, Temporal's sandbox) and paused the loop for 70-110 ms, the whole of the c=32
p99 tail. Frozen objects are never scanned; what requests allocate is still collected as usual.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Collect once, then move every surviving object out of the collector's reach."""
    gc.collect()
    gc.freeze()


def settle() -> None:
    """After engines were unloaded: let the collector reclaim their cycles, then freeze what remains
    (one full collection per reload, instead of one per few thousand requests). Nothing to do when
    nothing was frozen (AISF_GC_FREEZE=false)."""
    if gc.get_freeze_count():
        gc.unfreeze()
        freeze()
