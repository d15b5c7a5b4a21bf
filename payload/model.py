"""The on-board model: a small digit classifier trained on real data and run on the chip's
int8 MAC layer by layer, with results equal to numpy's bit for bit.

Training. scikit-learn's bundled digits (``load_digits``: 1,797 images of 8x8 pixels,
0..16, no download) split 75/25, stratified, with a fixed seed; an ``MLPClassifier``
64 -> 64 (ReLU) -> 10 with a fixed seed learns it in float in about a second.

Quantisation (integer-only at run time, so the host math is exactly reproducible):

- input: ``x = pixel * INPUT_GAIN`` (0..112, int8), standing for ``pixel / 16``;
- weights: one symmetric scale per layer, ``w_q = round(w / s_w)`` in -127..127;
- biases: every layer's input ends with one word of constant inputs ``BIAS_INPUTS``
  (127, 127, 127, 1), so a layer is ``rows x (inputs + 4)`` (cols stay a multiple of 4) and
  its bias is four more int8 weights ``q``: ``bias = 127 (q0 + q1 + q2) + q3`` accumulator
  units, exact to one unit;
- the MAC accumulates in int32; between layers the host applies ReLU, a fixed-point
  multiplier and a right shift with rounding, ``(max(acc, 0) * M + 2**(shift-1)) >> shift``
  (int64), and saturates to 0..127 (``requantise``); ``M / 2**shift`` is the ratio of the
  accumulator's scale to the next activation's scale (calibrated as the largest hidden
  activation on the training split, mapped to 127), ``M`` a 15-bit integer;
- the last layer's int32 accumulators are the logits; their argmax is the class.

Running. ``QuantisedModel.forward(x, matvec)`` runs the layers with the caller's
``matvec(w_int8, act_int8) -> int32`` (``numpy_matvec`` or a chip's ``run_matvec``), tiling
every layer into blocks the MAC takes (rows 1..64, cols 4..64, cols % 4 == 0) and summing
the int32 partial products. ``ChipRunner`` keeps the model resident in the chip's SRAM
(the layout is in its docstring) and per inference writes only the input.

Persistence. ``save``/``load`` an ``.npz`` of the arrays with their sha256 inside and in
the default file name; ``default_model()`` builds the model once into the cache directory,
keyed by a hash of the training recipe. The file is generated, never committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from orbithil.errors import ConfigError
from orbithil.hal import protocol as p
from orbithil.hal.icd import MAX_MATRIX_DIM
from orbithil.settings import cache_dir

log = logging.getLogger(__name__)
_TRAINING = threading.Lock()  # ``train``: one at a time (the BLAS thread limit is process-wide)

FORMAT_VERSION = 1
INPUT_GAIN = 7  # pixel 0..16 -> int8 0..112
PIXEL_MAX = 16
BIAS_INPUTS = np.array([127, 127, 127, 1], dtype=np.int8)  # the constant input word
_BIAS_COARSE = 127  # the value of BIAS_INPUTS[0:3]
_BIAS_RANGE = 3 * 127 * _BIAS_COARSE  # |bias| in accumulator units the four weights reach
WEIGHT_MAX = 127  # symmetric int8
ACT_MAX = 127  # hidden activations after ReLU: 0..127
MULTIPLIER_BITS = 15
MAC_TILE = (MAX_MATRIX_DIM, MAX_MATRIX_DIM)  # the MAC's largest matrix: rows, cols
MODEL_DIR = "model"  # under the cache directory

# Everything that decides the trained and quantised model; its hash names the cached file.
RECIPE: dict = {
    "format": FORMAT_VERSION,
    "dataset": "sklearn.datasets.load_digits",
    "test_size": 0.25,
    "split_seed": 0,
    "hidden": [64],
    "activation": "relu",
    "solver": "adam",
    "alpha": 1e-2,
    "max_iter": 500,
    "train_seed": 0,
    # one BLAS thread: the sums of a multithreaded BLAS come out in an order that depends
    # on the thread count, so machines with 1, 2 or 8 cores trained different weights
    "blas_threads": 1,
    "input_gain": INPUT_GAIN,
    "bias_inputs": BIAS_INPUTS.tolist(),
    "multiplier_bits": MULTIPLIER_BITS,
    "calibration": "max",
}

Matvec = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --- pure integer kernels ----------------------------------------------------------------
def numpy_matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``w @ x`` of int8 operands with int32 accumulation: the MAC's arithmetic in numpy."""
    return w.astype(np.int32) @ x.astype(np.int32)


def tiles(
    rows: int, cols: int, max_rows: int = MAC_TILE[0], max_cols: int = MAC_TILE[1]
) -> list[tuple[int, int, int, int]]:
    """Blocks ``(r0, r1, c0, c1)`` covering a ``rows x cols`` matrix, each at most
    ``max_rows x max_cols``; column blocks keep a multiple of 4 (``cols`` must be one)."""
    if max_rows < 1 or max_cols < 4 or max_cols % 4:
        raise ValueError(f"tile {max_rows}x{max_cols}: rows >= 1, cols >= 4 and a multiple of 4")
    if rows < 1 or cols < 4 or cols % 4:
        raise ValueError(f"matrix {rows}x{cols}: rows >= 1, cols >= 4 and a multiple of 4")
    return [
        (r0, min(r0 + max_rows, rows), c0, min(c0 + max_cols, cols))
        for r0 in range(0, rows, max_rows)
        for c0 in range(0, cols, max_cols)
    ]


def tiled(matvec: Matvec, max_rows: int = MAC_TILE[0], max_cols: int = MAC_TILE[1]) -> Matvec:
    """A matvec for any size that calls ``matvec`` on blocks of at most ``max_rows x
    max_cols`` and sums the int32 partial products (wrapping as the MAC's int32 does)."""

    def run(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        rows, cols = w.shape
        y = np.zeros(rows, dtype=np.int32)
        for r0, r1, c0, c1 in tiles(rows, cols, max_rows, max_cols):
            part = np.asarray(matvec(w[r0:r1, c0:c1], x[c0:c1]))
            y[r0:r1] += part.astype(np.int32)
        return y

    return run


def quantise_input(pixels: np.ndarray) -> np.ndarray:
    """Digit pixels (0..16) as the model's int8 input (``pixel * INPUT_GAIN``)."""
    pixels = np.asarray(pixels)
    if pixels.size and (pixels.min() < 0 or pixels.max() > PIXEL_MAX):
        raise ValueError(f"pixels must be 0..{PIXEL_MAX}")
    return (np.rint(pixels).astype(np.int16) * INPUT_GAIN).astype(np.int8)


def requantise(acc: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """int32 accumulators -> int8 activations: ReLU, ``* multiplier``, rounding right
    ``shift``, saturation to 0..127. Integer-only (int64), so every host computes the same."""
    y = np.maximum(np.asarray(acc, dtype=np.int64), 0) * np.int64(multiplier)
    y = (y + (np.int64(1) << (shift - 1))) >> shift
    return np.minimum(y, ACT_MAX).astype(np.int8)


def fixed_point(real: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """``(multiplier, shift)`` with ``multiplier / 2**shift ~ real``, the multiplier in
    ``[2**(bits-1), 2**bits)``."""
    if not real > 0:
        raise ValueError(f"a requantisation ratio must be > 0, got {real}")
    shift = bits - 1 - int(np.floor(np.log2(real)))
    multiplier = round(real * 2.0**shift)
    if multiplier == 1 << bits:  # rounded up to the next power of two
        multiplier, shift = multiplier >> 1, shift - 1
    if not 1 <= shift <= 62:
        raise ValueError(f"ratio {real} needs a shift of {shift}; 1..62 are possible")
    return multiplier, shift


def with_bias_inputs(act: np.ndarray) -> np.ndarray:
    """A layer's input: the activations followed by the constant word ``BIAS_INPUTS``."""
    return np.concatenate([np.asarray(act, dtype=np.int8), BIAS_INPUTS])


def _quantise_layer(w: np.ndarray, b: np.ndarray, in_scale: float) -> tuple[np.ndarray, float]:
    """Float ``(w, b)`` of a layer whose input has scale ``in_scale`` -> int8 weights with
    the bias in four columns, and the scale of its int32 accumulators."""
    rows, cols = w.shape
    if cols % 4:
        raise ValueError(f"layer inputs must be a multiple of 4, got {cols}")
    scale = max(
        float(np.abs(w).max()) / WEIGHT_MAX, float(np.abs(b).max()) / (in_scale * _BIAS_RANGE)
    )
    acc_scale = scale * in_scale
    out = np.zeros((rows, cols + len(BIAS_INPUTS)), dtype=np.int8)
    out[:, :cols] = np.clip(np.rint(w / scale), -WEIGHT_MAX, WEIGHT_MAX)
    for r, bias in enumerate(np.rint(b / acc_scale).astype(np.int64)):
        coarse = round(int(bias) / _BIAS_COARSE)  # bias = 127 * coarse + fine, |fine| <= 63
        fine = int(bias) - _BIAS_COARSE * coarse
        parts = [coarse // 3 + (k < coarse % 3) for k in range(3)]
        out[r, cols:] = [*parts, fine]
    return out, acc_scale


def full_recipe() -> dict:
    """``RECIPE`` with the scikit-learn version, which may change the trained weights."""
    import sklearn

    return {**RECIPE, "sklearn": sklearn.__version__}


def recipe_hash(recipe: dict | None = None) -> str:
    """sha256 of a training recipe (default: ``full_recipe()``): the cached model's key."""
    recipe = full_recipe() if recipe is None else recipe
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def arrays_hash(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The share of rows whose largest logit is at the label."""
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


# --- the model ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QuantisedModel:
    """The int8 model with its float original and its held-out test split.

    ``weights[i]`` is layer i, ``rows x (inputs + 4)`` int8 (the last 4 columns are the
    bias, see the module docstring); ``multipliers[i]``/``shifts[i]`` requantise layer i's
    output into layer i+1's input. ``test_x`` is int8 (``quantise_input``), ``test_y`` the
    labels."""

    weights: tuple[np.ndarray, ...]
    multipliers: tuple[int, ...]
    shifts: tuple[int, ...]
    float_layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    test_x: np.ndarray
    test_y: np.ndarray
    recipe: dict = field(default_factory=full_recipe)

    def __post_init__(self) -> None:
        _check_structure(self)

    @property
    def n_inputs(self) -> int:
        return self.weights[0].shape[1] - len(BIAS_INPUTS)

    @property
    def n_classes(self) -> int:
        return self.weights[-1].shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the model (and its metadata as a JSON string), as saved."""
        out: dict[str, np.ndarray] = {
            "multipliers": np.array(self.multipliers, dtype=np.int64),
            "shifts": np.array(self.shifts, dtype=np.int64),
            "test_x": self.test_x,
            "test_y": self.test_y,
            "meta": np.array(
                json.dumps(
                    {"format": FORMAT_VERSION, "layers": len(self.weights), "recipe": self.recipe},
                    sort_keys=True,
                )
            ),
        }
        for i, w in enumerate(self.weights):
            out[f"w{i}"] = w
        for i, (fw, fb) in enumerate(self.float_layers):
            out[f"float_w{i}"], out[f"float_b{i}"] = fw, fb
        return out

    @cached_property
    def sha256(self) -> str:
        """The content hash of ``arrays()``."""
        return arrays_hash(self.arrays())

    @property
    def file_name(self) -> str:
        """The default file name: the recipe's hash, then the content's."""
        return f"digits-{recipe_hash(self.recipe)[:12]}-{self.sha256[:16]}.npz"

    # --- inference ---
    def forward(
        self,
        x_int8: np.ndarray,
        matvec: Matvec = numpy_matvec,
        *,
        tile: tuple[int, int] | None = MAC_TILE,
    ) -> np.ndarray:
        """The int32 logits of one int8 input (``n_inputs`` values), every layer's product
        from ``matvec(w_int8, act_int8) -> int32``, on blocks of at most ``tile`` (the MAC's
        64x64 by default; None: whole layers); the host requantises between layers."""
        run = matvec if tile is None else tiled(matvec, *tile)

        def layer(w: np.ndarray, act: np.ndarray) -> np.ndarray:
            y = np.asarray(run(w, with_bias_inputs(act)), dtype=np.int32)
            if y.shape != (w.shape[0],):
                raise ValueError(f"matvec returned shape {y.shape} for a {w.shape} layer")
            return y

        act = _check_input(x_int8, self.n_inputs)
        for w, multiplier, shift in zip(
            self.weights[:-1], self.multipliers, self.shifts, strict=True
        ):
            act = requantise(layer(w, act), multiplier, shift)
        return layer(self.weights[-1], act)

    def logits(
        self,
        xs: np.ndarray,
        matvec: Matvec = numpy_matvec,
        *,
        tile: tuple[int, int] | None = MAC_TILE,
    ) -> np.ndarray:
        """``forward`` of each row of ``xs``: ``(N, n_classes)`` int32. With
        ``numpy_matvec`` the whole batch is one product per layer (the same integers:
        int32 sums of int8 products are exact, in any order and tiling)."""
        if matvec is numpy_matvec and len(xs):
            act = np.stack([_check_input(x, self.n_inputs) for x in xs])
            for i, w in enumerate(self.weights):
                bias = np.broadcast_to(BIAS_INPUTS, (len(act), len(BIAS_INPUTS)))
                y = np.concatenate([act, bias], axis=1).astype(np.int32) @ w.T.astype(np.int32)
                if i == len(self.weights) - 1:
                    return y.reshape(len(act), self.n_classes)
                act = requantise(y, self.multipliers[i], self.shifts[i])
        out = np.empty((len(xs), self.n_classes), dtype=np.int32)
        for n, x in enumerate(xs):
            out[n] = self.forward(x, matvec, tile=tile)
        return out

    def float_logits(self, xs: np.ndarray) -> np.ndarray:
        """The float model's logits of int8 inputs (``(N, n_inputs)``), as trained."""
        act = np.asarray(xs, dtype=np.float64) / (PIXEL_MAX * INPUT_GAIN)
        for i, (w, b) in enumerate(self.float_layers):
            act = act @ w.T + b
            if i < len(self.float_layers) - 1:
                act = np.maximum(act, 0.0)
        return act

    def test_split(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The held-out ``(x_int8, labels)``, the first ``limit`` of them if given."""
        if limit is not None and limit < 1:
            raise ConfigError(f"limit {limit}: use a number of test images >= 1")
        return self.test_x[:limit], self.test_y[:limit]

    # --- persistence ---
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the model as ``.npz``: to ``path``, into it if it is a directory, or into
        the cache directory; the default name carries the content hash. Returns the path."""
        target = Path(cache_dir(MODEL_DIR) if path is None else path)
        if target.is_dir():
            target = target / self.file_name
        arrays = {**self.arrays(), "sha256": np.array(self.sha256)}
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Written next to the target and renamed: a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as exc:
            raise ConfigError(
                f"cannot write the model file {target} ({exc.strerror}); give a path in "
                "a writable directory"
            ) from None
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("model %s written to %s", self.sha256[:16], target)
        return target


def _check_input(x: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"the model takes {n} int8 inputs, got shape {x.shape}")
    if x.dtype.kind not in "ui" or (x.size and (x.min() < -128 or x.max() > 127)):
        raise ValueError("inputs must be int8 values (-128..127); see quantise_input")
    return x.astype(np.int8)


def _check_structure(model: QuantisedModel) -> None:
    """Shapes and types that make a runnable model; ValueError naming what is off."""
    n = len(model.weights)
    if n < 1 or len(model.multipliers) != n - 1 or len(model.shifts) != n - 1:
        raise ValueError(
            f"{n} layers need {n - 1} multipliers and shifts, got "
            f"{len(model.multipliers)} and {len(model.shifts)}"
        )
    previous = None
    for i, w in enumerate(model.weights):
        if w.dtype != np.int8 or w.ndim != 2:
            raise ValueError(f"layer {i}: weights must be a 2-D int8 array, got {w.dtype}")
        inputs = w.shape[1] - len(BIAS_INPUTS)
        if inputs < 4 or inputs % 4 or (previous is not None and inputs != previous):
            raise ValueError(f"layer {i}: {w.shape[1]} columns do not follow the layer before")
        previous = w.shape[0]
    for m, s in zip(model.multipliers, model.shifts, strict=True):
        if not (0 < m < 1 << 31 and 1 <= s <= 62):
            raise ValueError(f"requantisation ({m}, {s}) out of range")
    tx, ty = model.test_x, model.test_y
    if tx.dtype != np.int8 or tx.ndim != 2 or tx.shape[1] != model.n_inputs:
        raise ValueError(f"test inputs must be int8 (N, inputs), got {tx.dtype} {tx.shape}")
    if ty.shape != (tx.shape[0],):
        raise ValueError(f"{ty.shape} labels for {tx.shape[0]} test inputs")
    if len(model.float_layers) != n:
        raise ValueError(f"{len(model.float_layers)} float layers for {n} int8 layers")


# --- training ----------------------------------------------------------------------------
def train(recipe: dict | None = None) -> QuantisedModel:
    """Train the float model on the digits and quantise it (deterministic, a second or two)."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    recipe = full_recipe() if recipe is None else dict(recipe)
    if recipe.get("format") != FORMAT_VERSION:
        raise ConfigError(f"recipe format {recipe.get('format')!r}; use {FORMAT_VERSION}")
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=recipe["test_size"],
        stratify=digits.target,
        random_state=recipe["split_seed"],
    )
    q_train, q_test = quantise_input(x_train), quantise_input(x_test)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(recipe["hidden"]),
        activation=recipe["activation"],
        solver=recipe["solver"],
        alpha=recipe["alpha"],
        max_iter=recipe["max_iter"],
        random_state=recipe["train_seed"],
    )
    # threadpool_limits is process-wide: one training at a time, or one thread's exit
    # would put the BLAS thread count back under the other's fit
    with _TRAINING, warnings.catch_warnings(), threadpool_limits(limits=recipe.get("blas_threads")):
        warnings.simplefilter("ignore", ConvergenceWarning)  # logged below instead
        clf.fit(q_train / (PIXEL_MAX * INPUT_GAIN), y_train)
    if clf.n_iter_ >= recipe["max_iter"]:
        log.warning("training stopped at max_iter=%d before converging", recipe["max_iter"])
    float_layers = tuple(
        (np.asarray(w, dtype=np.float64).T.copy(), np.asarray(b, dtype=np.float64))
        for w, b in zip(clf.coefs_, clf.intercepts_, strict=True)
    )

    weights, multipliers, shifts = [], [], []
    in_scale = 1.0 / (PIXEL_MAX * INPUT_GAIN)
    act = q_train  # the training split through the integer layers, for calibration
    for i, (fw, fb) in enumerate(float_layers):
        w_q, acc_scale = _quantise_layer(fw, fb, in_scale)
        weights.append(w_q)
        if i == len(float_layers) - 1:
            break
        biased = np.concatenate([act, np.broadcast_to(BIAS_INPUTS, (len(act), 4))], axis=1)
        acc = biased.astype(np.int32) @ w_q.T.astype(np.int32)
        peak = float(np.maximum(acc, 0).max()) * acc_scale
        in_scale = peak / ACT_MAX  # the next layer's input scale: the largest value -> 127
        multiplier, shift = fixed_point(acc_scale / in_scale, recipe["multiplier_bits"])
        multipliers.append(multiplier)
        shifts.append(shift)
        act = requantise(acc, multiplier, shift)
    model = QuantisedModel(
        weights=tuple(weights),
        multipliers=tuple(multipliers),
        shifts=tuple(shifts),
        float_layers=float_layers,
        test_x=q_test,
        test_y=np.asarray(y_test, dtype=np.int64),
        recipe=recipe,
    )
    log.info(
        "trained %s in %d iterations: float accuracy %.4f, int8 %.4f on %d test images",
        "x".join(str(w.shape[0]) for w in weights),
        clf.n_iter_,
        accuracy(model.float_logits(q_test), y_test),
        accuracy(model.logits(q_test), y_test),
        len(y_test),
    )
    return model


# --- files -------------------------------------------------------------------------------
_NAME = re.compile(r"^digits-[0-9a-f]{12}-(?P<content>[0-9a-f]{16})\.npz$")


def load(path: str | os.PathLike) -> QuantisedModel:
    """A model saved by ``save``; ConfigError if the file is damaged, modified or not a
    model file (its content hash is checked)."""
    path = Path(path)
    rebuild = f"rebuild it with `orbithil model build --out {path}`"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ConfigError(f"no model file {path}; build one with `orbithil model build`") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ConfigError(
            f"model file {path} is damaged or not an .npz model file ({exc}); {rebuild}"
        ) from None
    stored = str(arrays.pop("sha256", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", stored):
        raise ConfigError(f"model file {path} records no content hash (sha256); {rebuild}")
    actual = arrays_hash(arrays)
    if actual != stored:
        raise ConfigError(
            f"model file {path} was modified or damaged: its arrays hash to {actual[:16]}, "
            f"it records {stored[:16]}; {rebuild}"
        )
    named = _NAME.match(path.name)
    if named and not stored.startswith(named["content"]):
        raise ConfigError(
            f"model file {path} holds model {stored[:16]}, not the {named['content']} its "
            f"name says; {rebuild}"
        )
    try:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r}, this orbithil reads {FORMAT_VERSION}")
        layers = int(meta["layers"])
        model = QuantisedModel(
            weights=tuple(arrays[f"w{i}"] for i in range(layers)),
            multipliers=tuple(int(m) for m in arrays["multipliers"]),
            shifts=tuple(int(s) for s in arrays["shifts"]),
            float_layers=tuple(
                (arrays[f"float_w{i}"], arrays[f"float_b{i}"]) for i in range(layers)
            ),
            test_x=arrays["test_x"],
            test_y=arrays["test_y"],
            recipe=meta["recipe"],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"model file {path} is not a usable model ({exc}); {rebuild}") from None
    log.debug("loaded model %s from %s", stored[:16], path)
    return model


def default_model() -> QuantisedModel:
    """The model of ``RECIPE``: loaded from the cache directory, or trained once and saved
    there (a damaged cached file is replaced)."""
    directory = cache_dir(MODEL_DIR)
    key = recipe_hash()[:12]
    for path in sorted(directory.glob(f"digits-{key}-*.npz")):
        try:
            model = load(path)
        except ConfigError as exc:
            log.warning("%s; training it again", exc)
            path.unlink(missing_ok=True)
            continue
        if recipe_hash(model.recipe)[:12] == key:
            return model
        log.warning("%s was made by another recipe; training it again", path)
        path.unlink(missing_ok=True)
    log.info("no cached model for recipe %s in %s: training it", key, directory)
    model = train()
    model.save(directory)
    return model


# --- the model resident on a chip --------------------------------------------------------
@dataclass(frozen=True)
class TileJob:
    """One MAC job: rows ``r0:r1`` and cols ``c0:c1`` of layer ``layer``."""

    layer: int
    r0: int
    r1: int
    c0: int
    c1: int
    w_addr: int
    x_addr: int
    y_addr: int


@dataclass(frozen=True)
class MemoryLayout:
    """Where the model sits in SRAM (word addresses); see ``plan_layout``."""

    base: int
    end: int  # one past the last word used
    weights: np.ndarray  # the words at base..: every tile of every layer, packed
    act_addr: tuple[int, ...]  # layer i's input vector (its last word: BIAS_INPUTS)
    out_addr: tuple[int, ...]  # layer i's partial products, one block per tile
    out_words: tuple[int, ...]
    jobs: tuple[TileJob, ...]

    @property
    def words(self) -> int:
        return self.end - self.base

    def layer_jobs(self, layer: int) -> list[TileJob]:
        return [job for job in self.jobs if job.layer == layer]

    def gather(self, layer: int, words: np.ndarray, rows: int) -> np.ndarray:
        """Layer ``layer``'s int32 outputs (``rows`` of them) from its output block as read
        back (``out_words[layer]`` words): the tiles' partial products summed."""
        parts = p.unpack_int32(words)
        y = np.zeros(rows, dtype=np.int32)
        for job in self.layer_jobs(layer):
            offset = job.y_addr - self.out_addr[layer]
            y[job.r0 : job.r1] += parts[offset : offset + job.r1 - job.r0]
        return y


def plan_layout(
    model: QuantisedModel, *, base: int = 0, tile: tuple[int, int] = MAC_TILE
) -> MemoryLayout:
    """The SRAM layout of ``model`` from word ``base``, in this order:

    1. weights: for each layer, for each tile (row blocks, then column blocks), the tile's
       int8 weights row-major, ``cols/4`` words per row (the RUN_JOB operand format);
    2. activations: for each layer, its input, ``cols/4`` words; the last word holds the
       constant ``BIAS_INPUTS`` and is written with the weights, the others per inference
       (by the host: the image, or the requantised output of the layer before);
    3. outputs: for each layer, one int32 word per row per tile (the partial products the
       host sums).

    A tile's input is a slice of its layer's input vector, so no operand is copied."""
    max_rows, max_cols = tile
    if not (1 <= max_rows <= MAX_MATRIX_DIM and 4 <= max_cols <= MAX_MATRIX_DIM):
        raise ValueError(f"tile {tile}: the MAC takes rows 1..64 and cols 4..64")
    blocks = [tiles(*w.shape, max_rows, max_cols) for w in model.weights]
    packed, addr = [], base
    w_addrs: list[list[int]] = []
    for w, layer_tiles in zip(model.weights, blocks, strict=True):
        w_addrs.append([])
        for r0, r1, c0, c1 in layer_tiles:
            words = p.pack_int8(w[r0:r1, c0:c1])
            w_addrs[-1].append(addr)
            packed.append(words)
            addr += len(words)
    act_addr = []
    for w in model.weights:
        act_addr.append(addr)
        addr += w.shape[1] // 4
    out_addr, out_words, jobs = [], [], []
    for i, layer_tiles in enumerate(blocks):
        out_addr.append(addr)
        for t, (r0, r1, c0, c1) in enumerate(layer_tiles):
            jobs.append(TileJob(i, r0, r1, c0, c1, w_addrs[i][t], act_addr[i] + c0 // 4, addr))
            addr += r1 - r0
        out_words.append(addr - out_addr[-1])
    return MemoryLayout(
        base=base,
        end=addr,
        weights=np.concatenate(packed).astype(np.uint32),
        act_addr=tuple(act_addr),
        out_addr=tuple(out_addr),
        out_words=tuple(out_words),
        jobs=tuple(jobs),
    )


class ChipRunner:
    """The model resident on a chip: its weights are written into SRAM once (``reload``
    writes them again, e.g. after ``chip.reset(clear_memory=True)``); each inference
    writes only its input, runs one ``RUN_JOB`` per layer tile and reads the outputs, the
    host requantising between layers. Results equal ``model.forward`` bit for bit.

    Layout: ``plan_layout`` (weights from ``base``, then the activation buffers, then the
    output blocks; 1,440 words for the digits model). ConfigError if it does not fit in
    the chip's ``identity.mem_words``."""

    def __init__(
        self, chip, model: QuantisedModel, *, base: int = 0, tile: tuple[int, int] = MAC_TILE
    ) -> None:
        self.chip = chip
        self.model = model
        self.layout = plan_layout(model, base=base, tile=tile)
        mem_words, need = chip.identity.mem_words, self.layout.words
        if base < 0 or self.layout.end > mem_words:
            name = getattr(chip, "url", "") or "the chip"
            raise ConfigError(
                f"the model needs {need} words of SRAM, at {base}..{self.layout.end - 1}, but "
                f"{name} has words 0..{mem_words - 1}; "
                + (
                    f"use a base from 0 to {mem_words - need}"
                    if need <= mem_words
                    else "use a smaller model or a chip with more memory"
                )
            )
        self.cycles = 0  # MAC cycles of the last inference, as the chip counted them
        self.reload()

    def reload(self) -> None:
        """Write the weights and the constant bias inputs into SRAM (again)."""
        self.chip.write_mem(self.layout.base, self.layout.weights)
        bias_word = p.pack_int8(BIAS_INPUTS)
        for addr, w in zip(self.layout.act_addr, self.model.weights, strict=True):
            self.chip.write_mem(addr + w.shape[1] // 4 - 1, bias_word)
        log.info(
            "model %s resident on %s at words %d..%d",
            self.model.sha256[:16],
            getattr(self.chip, "url", "") or "the chip",
            self.layout.base,
            self.layout.end - 1,
        )

    def run(self, x_int8: np.ndarray) -> np.ndarray:
        """The int32 logits of one int8 input, computed on the chip."""
        model = self.model
        act = _check_input(x_int8, model.n_inputs)
        self.cycles = 0
        for i, (multiplier, shift) in enumerate(zip(model.multipliers, model.shifts, strict=True)):
            act = requantise(self._layer(i, act), multiplier, shift)
        return self._layer(len(model.weights) - 1, act)

    def stage(self, i: int, act: np.ndarray) -> np.ndarray:
        """Layer ``i`` alone (a pipeline stage): its int8 input in; out the next layer's
        int8 input, requantised, or for the last layer the int32 logits. ``cycles`` counts
        this layer's MAC cycles."""
        n_layers = len(self.model.weights)
        if not 0 <= i < n_layers:
            raise ValueError(f"layer {i}: the model has layers 0..{n_layers - 1}")
        act = _check_input(act, self.model.weights[i].shape[1] - len(BIAS_INPUTS))
        self.cycles = 0
        out = self._layer(i, act)
        if i == n_layers - 1:
            return out
        return requantise(out, self.model.multipliers[i], self.model.shifts[i])

    def _layer(self, i: int, act: np.ndarray) -> np.ndarray:
        """Layer i on the chip: write its input, run its tiles, sum their partial products."""
        layout, chip = self.layout, self.chip
        chip.write_mem(layout.act_addr[i], p.pack_int8(act))  # the bias word stays resident
        for job in layout.layer_jobs(i):
            self.cycles += chip.run_job(
                job.w_addr, job.x_addr, job.y_addr, job.r1 - job.r0, job.c1 - job.c0
            )
        words = chip.read_mem(layout.out_addr[i], layout.out_words[i])
        return layout.gather(i, words, self.model.weights[i].shape[0])

    def logits(self, xs: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """``run`` of each input: ``(N, n_classes)`` int32."""
        out = np.empty((len(xs), self.model.n_classes), dtype=np.int32)
        for n, x in enumerate(xs):
            out[n] = self.run(x)
        return out


class PoolExecutor:
    """The model as the pool's executor (``payload.pool.Executor``): one ``ChipRunner`` per
    chip, made again by ``prepare`` after every reset (the weights went with the SRAM);
    ``run`` returns one input's logits and the MAC cycles they took. ``base``: where the
    weights start in each chip's SRAM; None puts them at the top of each chip's memory
    (chips of a pool may differ in size), leaving the low words free."""

    def __init__(self, model: QuantisedModel, *, base: int | None = 0) -> None:
        self.model = model
        self.base = base
        self._runners: dict[int, ChipRunner] = {}

    def prepare(self, chip) -> None:
        base = self.base
        if base is None:
            base = chip.identity.mem_words - plan_layout(self.model).words
        self._runners[id(chip)] = ChipRunner(chip, self.model, base=base)

    def run(self, chip, item: np.ndarray) -> tuple[np.ndarray, int]:
        runner = self._runners[id(chip)]
        logits = runner.run(item)
        return logits, runner.cycles

    @property
    def stages(self) -> int:
        """Pipeline stages (``payload.pool.Pool(pipeline=True)``): one per layer."""
        return len(self.model.weights)

    def run_stage(self, chip, stage: int, item: np.ndarray) -> tuple[np.ndarray, int]:
        runner = self._runners[id(chip)]
        out = runner.stage(stage, item)
        return out, runner.cycles
