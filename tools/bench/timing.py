"""Side-by-side timing: alternate the contenders, keep each one's best repeat."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def best_times(contenders: dict[str, Callable[[], object]], *, repeats: int) -> dict[str, float]:
    """Seconds of the fastest of ``repeats`` runs of each callable, run in turn A B A B ...

    Alternating means a slow patch of the machine hits every contender alike; the best
    repeat is the one least disturbed by other work. GC is paused while timing.
    """
    best = {name: float("inf") for name in contenders}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best
