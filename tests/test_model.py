"""The on-board model: trained on the digits, quantised to int8, and run layer by layer on
numpy, tiled, and resident on a chip, with the same int32 logits bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from orbithil import hal
from orbithil.errors import ConfigError
from orbithil.payload import model as m


@pytest.fixture(scope="module")
def model() -> m.QuantisedModel:
    return m.train()


def test_int8_accuracy_is_within_two_points_of_float(model):
    xs, labels = model.test_split()
    assert len(xs) == 450  # 25% of 1,797, stratified
    assert np.bincount(labels, minlength=10).min() >= 43  # every digit, 25% of each
    float_acc = m.accuracy(model.float_logits(xs), labels)
    int8_acc = m.accuracy(model.logits(xs), labels)
    assert float_acc > 0.9
    assert abs(int8_acc - float_acc) <= 0.02
    assert [w.shape for w in model.weights] == [(64, 68), (10, 68)]
    assert all(w.dtype == np.int8 and np.abs(w).max() <= 127 for w in model.weights)


def test_training_is_deterministic_whatever_the_machines_core_count(model):
    """Trained again with BLAS allowed 1 and 3 threads: the same weights (a multithreaded
    BLAS sums in an order that follows its thread count; a 2-core and a 1-core machine
    trained different models before training was held to one thread)."""
    from threadpoolctl import threadpool_limits

    for threads in (1, 3):
        with threadpool_limits(limits=threads):
            assert m.train().sha256 == model.sha256, f"{threads} BLAS threads"


def test_forward_on_tiles_equals_whole_layers_bit_for_bit(model):
    shapes = []

    def small_matvec(w, x):
        shapes.append(w.shape)
        return m.numpy_matvec(w, x)

    xs, _ = model.test_split(50)
    for x in xs:
        whole = model.forward(x, m.numpy_matvec, tile=None)
        assert np.array_equal(model.forward(x, small_matvec, tile=(8, 12)), whole)
        assert np.array_equal(model.forward(x, small_matvec), whole)  # the MAC's 64x64
    assert max(r for r, _ in shapes) == 64 and (8, 12) in shapes and (2, 8) in shapes
    assert np.array_equal(model.logits(xs), np.stack([model.forward(x) for x in xs]))


def test_tiles_cover_a_matrix_in_blocks_the_mac_takes():
    assert m.tiles(68, 68) == [(0, 64, 0, 64), (0, 64, 64, 68), (64, 68, 0, 64), (64, 68, 64, 68)]
    assert m.tiles(10, 8, 4, 4) == [(0, 4, 0, 4), (0, 4, 4, 8), (4, 8, 0, 4), (4, 8, 4, 8),
                                    (8, 10, 0, 4), (8, 10, 4, 8)]  # fmt: skip
    with pytest.raises(ValueError, match="a multiple of 4"):
        m.tiles(10, 8, 4, 6)


def test_requantise_is_relu_rounding_shift_and_saturation():
    acc = np.array([-1000, 0, 1, 3, 5, 1 << 20], dtype=np.int32)
    assert m.requantise(acc, 1 << 14, 15).tolist() == [0, 0, 1, 2, 3, 127]  # x/2, half up
    assert m.fixed_point(0.75) == (24576, 15)


def test_chip_runner_on_the_model_equals_numpy_and_survives_a_memory_reset(model):
    xs, _ = model.test_split(100)
    reference = model.logits(xs)
    with hal.open("model://") as chip:
        runner = m.ChipRunner(chip, model)
        assert runner.layout.words == 1440 <= chip.identity.mem_words
        assert np.array_equal(runner.logits(xs), reference)
        chip.reset(clear_memory=True)
        assert not np.array_equal(runner.run(xs[0]), reference[0])  # the weights are gone
        runner.reload()
        assert np.array_equal(runner.logits(xs[:20]), reference[:20])
        # The model's own tiling through the chip's run_matvec gives the same integers.
        assert np.array_equal(model.forward(xs[0], chip.run_matvec), reference[0])


def test_chip_runner_refuses_a_layout_beyond_the_chip_memory(model):
    with hal.open("model://") as chip, pytest.raises(ConfigError) as info:
        m.ChipRunner(chip, model, base=1000)
    assert str(info.value) == (
        "the model needs 1440 words of SRAM, at 1000..2439, but model:// has words 0..2047; "
        "use a base from 0 to 608"
    )


def test_save_and_load_round_trip(model, tmp_path):
    path = model.save(tmp_path)
    assert path.parent == tmp_path and model.sha256[:16] in path.name
    loaded = m.load(path)
    assert loaded.sha256 == model.sha256
    for a, b in zip(loaded.weights, model.weights, strict=True):
        assert np.array_equal(a, b) and a.dtype == np.int8
    assert (loaded.multipliers, loaded.shifts) == (model.multipliers, model.shifts)
    assert np.array_equal(loaded.test_x, model.test_x)
    assert np.array_equal(loaded.test_y, model.test_y)
    xs, _ = model.test_split(20)
    assert np.array_equal(loaded.logits(xs), model.logits(xs))
    assert np.allclose(loaded.float_logits(xs), model.float_logits(xs), rtol=0, atol=0)


def test_load_refuses_a_modified_or_damaged_file(model, tmp_path):
    path = model.save(tmp_path / "model.npz")
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["w0"] = arrays["w0"].copy()
    arrays["w0"][3, 5] ^= 1  # one weight bit, the recorded hash kept
    np.savez(tmp_path / "modified.npz", **arrays)
    with pytest.raises(ConfigError, match=r"was modified or damaged: its arrays hash to "):
        m.load(tmp_path / "modified.npz")

    (tmp_path / "truncated.npz").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"is damaged or not an \.npz model file"):
        m.load(tmp_path / "truncated.npz")

    other = tmp_path / f"digits-{'0' * 12}-{'f' * 16}.npz"
    other.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match="not the ffffffffffffffff its name says"):
        m.load(other)

    with pytest.raises(ConfigError, match="no model file"):
        m.load(tmp_path / "missing.npz")


def test_default_model_is_built_once_into_the_cache_and_reused(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITHIL_CACHE_DIR", str(tmp_path))
    trained = []

    def train():
        trained.append(1)
        return model

    monkeypatch.setattr(m, "train", train)
    assert m.default_model().sha256 == model.sha256
    files = list((tmp_path / "model").glob("digits-*.npz"))
    assert [f.name for f in files] == [model.file_name]
    assert m.recipe_hash()[:12] in files[0].name
    assert m.default_model().sha256 == model.sha256
    assert len(trained) == 1  # the second call loaded the file
    files[0].write_bytes(b"not a zip file")
    assert m.default_model().sha256 == model.sha256  # a damaged cache file is rebuilt
    assert len(trained) == 2 and m.load(files[0]).sha256 == model.sha256


def orbithil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_builds_the_model_and_reports_bit_exact_chips(tmp_path):
    out = tmp_path / "digits.npz"
    done = orbithil("model", "build", "--out", str(out), "--chip", "model://", "--limit", "50",
                    "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["test_images"] == 50 and result["model"] == str(out)
    assert result["float_accuracy"] > 0.9
    assert abs(result["int8_numpy_accuracy"] - result["float_accuracy"]) <= 0.02
    [chip] = result["chips"]
    assert chip["url"] == "model://" and chip["bit_exact"] is True
    assert chip["accuracy"] == result["int8_numpy_accuracy"]
    assert m.load(out).sha256 == result["sha256"]


def test_cli_refuses_a_limit_below_one():
    done = orbithil("model", "build", "--limit", "0")
    assert done.returncode == 2
    assert "orbithil: error: --limit 0: give a number of test images >= 1" in done.stderr


@pytest.mark.sim
def test_chip_runner_on_the_simulated_chip_equals_numpy(model):
    xs, _ = model.test_split(20)
    with hal.open("sim://verilator", timeout=5.0) as chip:
        runner = m.ChipRunner(chip, model)
        assert np.array_equal(runner.logits(xs), model.logits(xs))
