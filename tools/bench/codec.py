"""``orbithil bench codec``: the C codec against the pure-Python reference and ``cobs``.

Workload (seeded), MB/s counting payload (or data-word) bytes:
- ``frame_*`` / ``c_over_python``: full frames (255-byte payloads) the way the HAL moves
  them: one encode call per frame, the wire deframed in 4 KiB chunks; ``mixed_*`` the same
  with payloads of 0..255 bytes; ``single_*`` one decode call per frame instead of the
  deframer (the per-call overhead of cffi weighs most there).
- COBS alone against the ``cobs`` package (a CPython C extension): ``c_over_cobs_pkg`` on
  1 MiB blocks (throughput), ``c_over_cobs_pkg_frames`` on the frame-sized payloads, where
  one cffi call (~0.1 us floor) costs more than the coding itself; ``*_sparse`` on 1 MiB
  blocks where 3 in 4 bytes are zero (cleared memory, sparse weights).
- SECDED encode + decode of 1 M words through the numpy array path, 1% of words with a
  flipped bit, C against the numpy reference.
"""

from __future__ import annotations

import numpy as np
from cobs import cobs as cobs_pkg

from orbithil.hal import codec
from orbithil.hal.codec import SECDED_39_32, SECDED_72_64, Deframer

from . import BenchResult
from .timing import best_times


def _payloads(rng: np.random.Generator, count: int) -> list[bytes]:
    sizes = rng.integers(0, 256, count)
    return [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in sizes]


def run(*, quick: bool = False) -> BenchResult:
    backends = codec.available_backends()
    if "c" not in backends:
        raise RuntimeError(f"the C codec is {codec.c_status()}; nothing to compare")
    c, py = backends["c"], backends["python"]
    rng = np.random.default_rng(2026)
    n_frames = 300 if quick else 2000
    repeats = 3 if quick else 7
    payloads = _payloads(rng, n_frames)
    payload_mb = sum(map(len, payloads)) / 1e6

    full = [rng.integers(0, 256, 255, dtype=np.uint8).tobytes() for _ in range(n_frames)]
    full_mb = 255 * n_frames / 1e6

    def round_trip(impl, payloads):
        """The HAL's path: one encode per frame, the wire deframed in 4 KiB chunks."""

        def go():
            wire = b"".join(impl.frame_encode(1, i & 0xFF, 0x10, p) for i, p in enumerate(payloads))
            deframer = Deframer(impl.deframe_segments)
            got = 0
            for i in range(0, len(wire), 4096):
                got += len(deframer.feed(wire[i : i + 4096]).frames)
            assert got == len(payloads)

        return go

    def one_by_one(impl, payloads):
        """Each frame encoded and decoded by itself, one call each way."""

        def go():
            for seq, p in enumerate(payloads):
                impl.frame_decode(impl.frame_encode(1, seq & 0xFF, 0x10, p)[1:-1])

        return go

    t = best_times(
        {
            "c": round_trip(c, full),
            "python": round_trip(py, full),
            "c_mixed": round_trip(c, payloads),
            "py_mixed": round_trip(py, payloads),
            "c_single": one_by_one(c, payloads),
            "py_single": one_by_one(py, payloads),
        },
        repeats=repeats,
    )
    metrics: dict[str, float | int | str] = {
        "frame_c_mbps": full_mb / t["c"],
        "frame_python_mbps": full_mb / t["python"],
        "c_over_python": t["python"] / t["c"],
        "frame_c_per_s": n_frames / t["c"],
        "mixed_c_mbps": payload_mb / t["c_mixed"],
        "mixed_python_mbps": payload_mb / t["py_mixed"],
        "mixed_c_over_python": t["py_mixed"] / t["c_mixed"],
        "single_c_over_python": t["py_single"] / t["c_single"],
    }

    # COBS alone, against the cobs package, at frame sizes and in bulk.
    bulk = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    # Zero-heavy data (cleared memory, sparse int8 weights): 3 in 4 bytes are zero.
    sparse = (
        (rng.integers(0, 256, 1 << 20) * (rng.random(1 << 20) < 0.25)).astype(np.uint8).tobytes()
    )
    bulk_blocks = 2 if quick else 8

    def cobs_frames(enc, dec):
        def go():
            for p in payloads:
                dec(enc(p))

        return go

    def cobs_bulk(enc, dec, data=bulk):
        def go():
            for _ in range(bulk_blocks):
                dec(enc(data))

        return go

    t = best_times(
        {
            "c": cobs_frames(c.cobs_encode, c.cobs_decode),
            "pkg": cobs_frames(cobs_pkg.encode, cobs_pkg.decode),
            "c_bulk": cobs_bulk(c.cobs_encode, c.cobs_decode),
            "pkg_bulk": cobs_bulk(cobs_pkg.encode, cobs_pkg.decode),
            "c_sparse": cobs_bulk(c.cobs_encode, c.cobs_decode, sparse),
            "pkg_sparse": cobs_bulk(cobs_pkg.encode, cobs_pkg.decode, sparse),
        },
        repeats=repeats,
    )
    bulk_mb = bulk_blocks * len(bulk) / 1e6
    metrics |= {
        "cobs_bulk_c_mbps": bulk_mb / t["c_bulk"],
        "cobs_bulk_pkg_mbps": bulk_mb / t["pkg_bulk"],
        "c_over_cobs_pkg": t["pkg_bulk"] / t["c_bulk"],
        "cobs_frames_c_mbps": payload_mb / t["c"],
        "cobs_frames_pkg_mbps": payload_mb / t["pkg"],
        "c_over_cobs_pkg_frames": t["pkg"] / t["c"],
        "cobs_sparse_c_mbps": bulk_mb / t["c_sparse"],
        "cobs_sparse_pkg_mbps": bulk_mb / t["pkg_sparse"],
        "c_over_cobs_pkg_sparse": t["pkg_sparse"] / t["c_sparse"],
    }

    # SECDED, numpy array path: encode, flip a bit in 1% of words, decode.
    n_words = 100_000 if quick else 1_000_000
    for code, dtype in ((SECDED_39_32, np.uint32), (SECDED_72_64, np.uint64)):
        words = rng.integers(0, 2**63, n_words, dtype=np.uint64).astype(dtype)
        hit = rng.random(n_words) < 0.01
        flip = np.where(hit, dtype(1) << rng.integers(0, code.k, n_words).astype(dtype), 0)
        flip = flip.astype(dtype)

        def secded(impl, words=words, flip=flip, code=code):
            def go():
                check = impl.secded_encode_array(code, words)
                out, status = impl.secded_decode_array(code, words ^ flip, check)
                return out, status

            return go

        t = best_times({"c": secded(c), "python": secded(py)}, repeats=repeats)
        mb = n_words * np.dtype(dtype).itemsize / 1e6
        tag = f"secded{code.n}"
        metrics |= {
            f"{tag}_c_mbps": mb / t["c"],
            f"{tag}_numpy_mbps": mb / t["python"],
            f"{tag}_c_over_numpy": t["python"] / t["c"],
        }
    metrics["backend_in_use"] = codec.backend()
    return BenchResult(
        metrics={k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()},
        targets={"c_over_python": (">=", 30.0), "c_over_cobs_pkg": (">=", 1.0)},
        params={"frames": n_frames, "repeats": repeats, "secded_words": n_words, "seed": 2026},
    )
