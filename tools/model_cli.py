"""``orbithil model build``: train the on-board digit classifier, quantise it to int8, write
the model file, and measure it on the held-out test split in float, in int8 on the host
(numpy) and in int8 on chips, saying whether each chip's int32 logits equal numpy's bit
for bit.

The model runs resident on each chip (``payload.model.ChipRunner``): its weights are
written into SRAM once, then every image costs one input write, one MAC job per layer tile
and one read per layer.
"""

from __future__ import annotations

import json
import time

import numpy as np

from orbithil import hal
from orbithil.errors import ConfigError
from orbithil.payload import model as model_mod
from orbithil.settings import cache_dir
from orbithil.tools.console import console as make_console

DEFAULT_CHIPS = ("model://", "sim://verilator")


def _on_chip(url: str, model, xs: np.ndarray, labels: np.ndarray, reference: np.ndarray,
             *, timeout_s: float) -> dict:  # fmt: skip
    """Run the test images on the chip at ``url``; accuracy and bit-exactness."""
    started = time.monotonic()
    with hal.open(url, timeout=timeout_s) as chip:
        runner = model_mod.ChipRunner(chip, model)
        loaded = time.monotonic()
        logits = runner.logits(xs)
        done = time.monotonic()
    differ = np.any(logits != reference, axis=1)
    return {
        "url": url,
        "accuracy": model_mod.accuracy(logits, labels),
        "bit_exact": not bool(differ.any()),
        "images_differing": int(differ.sum()),
        "classes_differing": int(np.sum(np.argmax(logits, axis=1) != np.argmax(reference, axis=1))),
        "memory_words": runner.layout.words,
        "mac_jobs_per_image": len(runner.layout.jobs),
        "mac_cycles_per_image": runner.cycles,
        "open_and_load_s": round(loaded - started, 3),
        "images_per_s": round(len(xs) / max(done - loaded, 1e-9), 2),
    }


def build(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give a number of test images >= 1")
    if not args.timeout > 0:
        raise ConfigError(f"--timeout {args.timeout}: give a number of seconds > 0")
    err = make_console(stderr=True)
    model = model_mod.train()
    path = model.save(args.out if args.out else cache_dir(model_mod.MODEL_DIR))
    xs, labels = model.test_split(args.limit)
    reference = model.logits(xs)
    result = {
        "model": str(path),
        "sha256": model.sha256,
        "test_images": len(xs),
        "layers": [list(w.shape) for w in model.weights],
        "float_accuracy": model_mod.accuracy(model.float_logits(xs), labels),
        "int8_numpy_accuracy": model_mod.accuracy(reference, labels),
        "chips": [],
    }
    for url in args.chip or DEFAULT_CHIPS:
        if not args.json:
            err.print(f"running {len(xs)} test images on {url} (a first simulator build takes "
                      "a minute, then cached)" if url.startswith("sim:")
                      else f"running {len(xs)} test images on {url}")  # fmt: skip
        result["chips"].append(_on_chip(url, model, xs, labels, reference, timeout_s=args.timeout))
    ok = all(chip["bit_exact"] for chip in result["chips"])
    if args.json:
        print(json.dumps(result))
        return 0 if ok else 1
    from rich.table import Table

    out = make_console()
    shape = " -> ".join(str(n) for n in [model.n_inputs, *(w.shape[0] for w in model.weights)])
    out.print(f"model {model.sha256[:16]} ({shape}, int8) written to {path}")
    table = Table(title=f"accuracy on {len(xs)} held-out test images")
    for column in ("run", "accuracy", "int32 logits = numpy", "images/s"):
        table.add_column(column)
    table.add_row("float (numpy)", f"{result['float_accuracy']:.4f}", "", "")
    table.add_row("int8 (numpy)", f"{result['int8_numpy_accuracy']:.4f}", "reference", "")
    for chip in result["chips"]:
        same = (
            "[green]bit for bit[/]"
            if chip["bit_exact"]
            else f"[red]no: {chip['images_differing']} images differ[/]"
        )
        table.add_row(
            f"int8 on {chip['url']}", f"{chip['accuracy']:.4f}", same, f"{chip['images_per_s']}"
        )
    out.print(table)
    return 0 if ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="the on-board model (an int8 digit classifier)")
    sub = p.add_subparsers(title="model commands", metavar="SUBCOMMAND", required=True)
    b = sub.add_parser(
        "build",
        help="train and quantise the model, write it, and measure it on numpy and chips",
        description=__doc__,
    )
    b.add_argument(
        "--out",
        metavar="PATH",
        help="the model file (.npz) to write, or a directory for it "
        "(default: the cache directory, where payload.model.default_model() finds it)",
    )
    b.add_argument(
        "--chip",
        action="append",
        metavar="URL",
        help="run the int8 model on this chip (any hal.open URL); repeat for more "
        f"(default: {' and '.join(DEFAULT_CHIPS)})",
    )
    b.add_argument(
        "--limit", type=int, metavar="N", help="use the first N test images (default: all)"
    )
    b.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds each chip command may take per attempt (default: %(default)s)",
    )
    b.add_argument("--json", action="store_true", help="print the results as one JSON object")
    b.set_defaults(func=build)
