"""Misclassified: an sdc that changed the workload's answer (the predicted class), and the
table of answers each reliability policy delivers, composed from per-chip outcomes. Pure
functions and the behavioural model; no simulator."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from orbithil import hal
from orbithil.hal import protocol as p
from orbithil.payload.classify import (
    SRAM_TARGET,
    Observation,
    Outcome,
    classify,
    misclassified,
    predicted_class,
    resident_words,
)
from orbithil.payload.model import default_model, plan_layout
from orbithil.payload.workloads import run_on_chip
from orbithil.tools.campaign import report
from orbithil.tools.campaign.stats import AnswerTally, policy_answers


@pytest.fixture(scope="module")
def digits_golden() -> Observation:
    """A golden run of the digits workload (seed 3) on the behavioural model."""
    with hal.open("model://?harden=0") as chip:
        return run_on_chip(chip, "digits", 3, end_state=False)


def with_logits(golden: Observation, change) -> Observation:
    """``golden`` with its last output (the last layer's tile partial products, one
    READ_MEM) changed by ``change(words)``, as an upset in the MAC or SRAM would."""
    addr, words = p.parse_mem(bytes.fromhex(golden.outputs[-1]))
    words = words.copy()
    change(words.view(np.int32))
    answer = bytes.fromhex(golden.outputs[-1])[:3] + words.astype(">u4").tobytes()
    assert p.parse_mem(answer)[0] == addr
    return Observation(outputs=(*golden.outputs[:-1], answer.hex()), end_state="other")


def test_the_predicted_class_is_the_argmax_of_the_models_logits(digits_golden):
    model = default_model()
    xs, _ = model.test_split()
    image = xs[int(np.random.default_rng(3).integers(0, len(xs)))]
    assert predicted_class("digits", digits_golden.outputs) == int(np.argmax(model.forward(image)))
    assert predicted_class("control", digits_golden.outputs) is None  # no answer to give
    assert predicted_class("digits", ("nak",)) is None


def test_an_sdc_that_keeps_the_class_is_not_misclassified(digits_golden):
    winner = predicted_class("digits", digits_golden.outputs)
    loser = (winner + 1) % 10

    def nudge(partials):  # the losing class's first-tile partial moves by one: numbers change
        partials[loser] -= 1

    run = with_logits(digits_golden, nudge)
    assert classify(digits_golden, run) is Outcome.SDC
    assert misclassified(digits_golden, run, "digits") is False


def test_an_sdc_that_changes_the_class_is_misclassified(digits_golden):
    winner = predicted_class("digits", digits_golden.outputs)
    loser = (winner + 1) % 10

    def flip_high_bit(partials):  # bit 30 of a loser's partial product: it now wins
        partials[loser] += 1 << 30

    run = with_logits(digits_golden, flip_high_bit)
    assert classify(digits_golden, run) is Outcome.SDC
    assert predicted_class("digits", run.outputs) == loser
    assert misclassified(digits_golden, run, "digits") is True


def test_only_an_sdc_can_be_misclassified(digits_golden):
    winner = predicted_class("digits", digits_golden.outputs)
    wrong = with_logits(digits_golden, lambda w: w.__setitem__((winner + 1) % 10, 1 << 30))
    detected = Observation(outputs=wrong.outputs, naks=1)  # the chip said something was wrong
    hang = Observation(hang=True)
    assert classify(digits_golden, detected) is Outcome.DETECTED
    assert misclassified(digits_golden, detected, "digits") is False
    assert misclassified(digits_golden, hang, "digits") is False
    assert misclassified(digits_golden, digits_golden, "digits") is False
    # a workload without an answer: the question does not apply
    assert misclassified(digits_golden, wrong, "memory") is None


def test_the_inference_workloads_answer_is_the_argmax_of_its_outputs():
    from orbithil.payload.workloads import reference_inference

    with hal.open("model://") as chip:
        golden = run_on_chip(chip, "inference", 5, end_state=False)
    expected = reference_inference(np.random.default_rng(5))
    assert predicted_class("inference", golden.outputs) == int(np.argmax(expected))


def test_resident_words_are_the_models_weights_and_bias_inputs():
    model = default_model()
    layout = plan_layout(model)
    words = resident_words("digits")
    assert set(range(len(layout.weights))) <= words
    assert layout.act_addr[0] + model.weights[0].shape[1] // 4 - 1 in words  # bias word
    assert layout.act_addr[0] not in words  # the image: rewritten by every inference
    assert layout.out_addr[-1] not in words  # the outputs: rewritten by the MAC
    assert resident_words("control") == frozenset()


# --- the composition --------------------------------------------------------------------
def by_policy(tally: AnswerTally) -> dict:
    return {a.policy: a for a in policy_answers(tally)}


def test_none_delivers_what_the_hit_chip_computed():
    none = by_policy(AnswerTally(n=200, sdc=12, misclassified=5))["none"]
    assert (none.output_changed, none.answer_changed, none.outvoted) == (12, 5, 0)
    assert none.share(none.answer_changed).estimate == pytest.approx(5 / 200)


def test_tmr_and_dmr_outvote_one_chips_misclassification():
    policies = by_policy(AnswerTally(n=200, sdc=12, misclassified=5, sdc_resident=4,
                                     misclassified_resident=2))  # fmt: skip
    for name in ("dmr", "tmr"):
        answer = policies[name]
        assert answer.answer_changed == 0 and answer.output_changed == 0 and answer.by_vote
        assert answer.outvoted == 12  # every silently wrong output disagreed with golden ones


def test_rerun_delivers_the_upsets_that_stay_resident_on_its_chip():
    rerun = by_policy(AnswerTally(n=200, sdc=12, misclassified=5, sdc_resident=4,
                                  misclassified_resident=2))["rerun"]  # fmt: skip
    assert (rerun.output_changed, rerun.answer_changed) == (4, 2)  # both runs read the flip
    assert rerun.outvoted == 8  # transient: the runs differ, a third decides
    assert rerun.lower_bound and not rerun.by_vote


def test_a_tally_must_be_consistent():
    with pytest.raises(ValueError, match="misclassified <= sdc"):
        AnswerTally(n=10, sdc=2, misclassified=3)
    with pytest.raises(ValueError, match="resident"):
        AnswerTally(n=10, sdc=2, misclassified=1, sdc_resident=1, misclassified_resident=2)


def injection(target: str, word: int | None, block: str = "u_mem"):
    return SimpleNamespace(target=target, word=word, block=block)


def test_the_build_table_counts_misclassified_and_resident_upsets(digits_golden):
    winner = predicted_class("digits", digits_golden.outputs)
    loser = (winner + 1) % 10
    flipped = with_logits(digits_golden, lambda w: w.__setitem__(loser, 1 << 30))
    nudged = with_logits(digits_golden, lambda w: w.__setitem__(loser, w[loser] - 1))
    weight, image = 5, plan_layout(default_model()).act_addr[0]
    results = [  # (outcome, injection, misclassified) as sim.inject gives them
        (Outcome.SDC, injection(SRAM_TARGET, weight), True),  # a weight: resident, class flips
        (Outcome.SDC, injection(SRAM_TARGET, image), True),  # the image: gone by the rerun
        (Outcome.SDC, injection("u_mac.acc", None, "u_mac"), False),  # numbers, not the class
        (Outcome.MASKED, injection(SRAM_TARGET, weight), False),
        (Outcome.DETECTED, injection(SRAM_TARGET, 7), False),
        (Outcome.TOOL_ERROR, injection(SRAM_TARGET, 7), None),  # not counted
    ]
    summary = report.BuildSummary.from_results(
        0,
        "verilator",
        "digits",
        [
            SimpleNamespace(outcome=o, injection=i, misclassified=m, observation=None)
            for o, i, m in results
        ],
    )
    assert summary.answers == AnswerTally(
        n=5, sdc=3, misclassified=2, sdc_resident=1, misclassified_resident=1
    )
    # the same from stored observations (the campaign store's path)
    stored = [
        (SRAM_TARGET, weight, flipped),
        (SRAM_TARGET, image, flipped),
        ("u_mac.acc", None, nudged),
    ]
    assert report.answer_tally("digits", digits_golden, 5, stored) == summary.answers
    assert report.answer_tally("control", digits_golden, 5, stored) is None

    rows = {a.policy: a for _, a in report.answers_rows([summary])}
    assert [rows[p].answer_changed for p in ("none", "rerun", "dmr", "tmr")] == [2, 1, 0, 0]
    table = report.answers_json([summary])[0]
    assert table["misclassified"] == 2 and table["policies"]["tmr"]["by_vote"]
    assert table["policies"]["none"]["answer_changed_share"] == pytest.approx(2 / 5)


def test_a_build_without_answers_has_no_table():
    summary = report.BuildSummary.from_results(
        1,
        "verilator",
        "control",
        [
            SimpleNamespace(
                outcome=Outcome.SDC, injection=injection("u_regs.x", None, "u_regs"),
                misclassified=None, observation=None,
            )
        ],
    )  # fmt: skip
    assert summary.answers is None
    assert report.answers_table([summary]) is None and report.answers_json([summary]) == []
    assert Counter(summary.outcomes) == {"sdc": 1}


def test_the_inference_workloads_resident_words_are_its_weights():
    from orbithil.payload.workloads import LAYERS

    assert LAYERS == ((16, 32), (8, 16))  # 16*32/4 + 8*16/4 weight words
    assert resident_words("inference") == frozenset(range(128 + 32))


def test_outputs_without_a_whole_last_layer_have_no_class(digits_golden):
    assert predicted_class("digits", digits_golden.outputs) is not None
    assert predicted_class("digits", ()) is None
    short = bytes.fromhex(digits_golden.outputs[-1])[:-4]  # one word short of the layer
    assert predicted_class("digits", (*digits_golden.outputs[:-1], short.hex())) is None


def test_the_last_layers_read_alone_gives_the_class(digits_golden):
    # the last layer is one READ_MEM: the outputs' last entry alone holds the whole answer
    winner = predicted_class("digits", digits_golden.outputs)
    assert predicted_class("digits", digits_golden.outputs[-1:]) == winner


def test_an_sdc_to_a_lower_class_or_to_no_class_is_misclassified(digits_golden):
    golden = with_logits(digits_golden, lambda w: w.__setitem__(5, 1 << 30))  # answers 5
    run = with_logits(digits_golden, lambda w: w.__setitem__(2, 1 << 30))  # answers 2
    assert (predicted_class("digits", golden.outputs), predicted_class("digits", run.outputs)) == (
        5,
        2,
    )
    assert classify(golden, run) is Outcome.SDC
    assert misclassified(golden, run, "digits") is True
    unreadable = Observation(outputs=(*golden.outputs[:-1], "00"), end_state="other")
    assert classify(golden, unreadable) is Outcome.SDC
    assert misclassified(golden, unreadable, "digits") is True


def test_every_layers_bias_input_is_resident():
    model = default_model()
    layout = plan_layout(model)
    words = resident_words("digits")
    for addr, weights in zip(layout.act_addr, model.weights, strict=True):
        assert addr + weights.shape[1] // 4 - 1 in words  # the last word of its input
