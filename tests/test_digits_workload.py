"""The injection workload ``digits``: the on-board model on the chip, as a script of HAL
operations; its last output is the model's logits, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from orbithil import hal
from orbithil.hal import protocol as p
from orbithil.payload.classify import Outcome
from orbithil.payload.model import default_model, plan_layout
from orbithil.payload.workloads import run_on_chip


def logits_of(observation, model) -> np.ndarray:
    """The logits in a run's last output (the last layer's tile outputs, summed)."""
    layout = plan_layout(model)
    last = len(model.weights) - 1
    _, words = p.parse_mem(bytes.fromhex(observation.outputs[-1]))
    return layout.gather(last, words, model.weights[last].shape[0])


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_the_digits_workload_computes_the_models_logits_on_a_chip(seed):
    model = default_model()
    xs, _ = model.test_split()
    index = int(np.random.default_rng(seed).integers(0, len(xs)))
    with hal.open("model://") as chip:
        observation = run_on_chip(chip, "digits", seed)
    assert not observation.hang and observation.naks == 0
    assert np.array_equal(logits_of(observation, model), model.forward(xs[index]))


@pytest.mark.sim
def test_the_digits_workload_runs_in_the_injection_engine():
    from orbithil.sim.inject import Setup, golden, plan, run_plan

    setup = Setup("verilator", 0, "digits", seed=3)
    reference = golden(setup)
    model = default_model()
    xs, _ = model.test_split()
    index = int(np.random.default_rng(3).integers(0, len(xs)))
    assert np.array_equal(logits_of(reference.observation, model), model.forward(xs[index]))
    results = run_plan(setup, plan(setup, 20, seed=4))
    assert len(results) == 20
    assert not any(r.outcome is Outcome.TOOL_ERROR for r in results)
