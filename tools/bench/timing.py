"""Side-by-side timing: alternate the contenders, keep each one's best repeat."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable


def best_times(
    contenders: dict[str, Callable[[], object]], *, repeats: int, min_time: float = 0.05
) -> dict[str, float]:
    """Seconds per call of each callable: the best of ``repeats`` measurements, taken in
    turn A B A B ... so a slow patch of the machine hits every contender alike.

    Like timeit's autorange, each measurement loops a callable often enough to last at
    least ``min_time`` (a fast contender is not left to timer noise); the calibration call
    doubles as warm-up. GC is paused while timing.
    """
    loops = {}
    for name, fn in contenders.items():
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-9)
        loops[name] = max(1, math.ceil(min_time / once))
    best = {name: float("inf") for name in contenders}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in contenders.items():
                n = loops[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - start) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best
