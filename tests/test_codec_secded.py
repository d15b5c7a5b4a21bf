"""Hsiao SECDED (39,32) and (72,64): the matrix, single/double errors, arrays, C == Python."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbithil.hal import codec as codec
from orbithil.hal.codec import SECDED_39_32, SECDED_72_64, SecdedStatus
from orbithil.hal.codec.hmatrix import code_for

CODES = [SECDED_39_32, SECDED_72_64]


@pytest.mark.parametrize("code", CODES, ids=["39_32", "72_64"])
def test_h_matrix_is_a_hsiao_code(code):
    columns = list(code.data_columns) + [1 << j for j in range(code.r)]
    assert len(columns) == code.n
    assert len(set(columns)) == code.n, "columns must be distinct"
    assert all(bin(c).count("1") % 2 == 1 for c in columns), "columns must have odd weight"
    weights = [sum(c >> j & 1 for c in code.data_columns) for j in range(code.r)]
    assert max(weights) - min(weights) <= 1, f"row weights unbalanced: {weights}"


@pytest.mark.parametrize("code", CODES, ids=["39_32", "72_64"])
def test_every_single_and_double_error_on_random_words(code):
    rng = np.random.default_rng(39)
    for word in [0, (1 << code.k) - 1, *(int(w) for w in rng.integers(0, 2**62, 6))]:
        word &= (1 << code.k) - 1
        cw = codec.secded_encode(word, k=code.k)
        assert codec.secded_decode(cw, k=code.k) == (word, SecdedStatus.OK)
        for bit in range(code.n):
            assert codec.secded_decode(cw ^ (1 << bit), k=code.k) == (word, SecdedStatus.CORRECTED)
        for a, b in combinations(range(code.n), 2):
            status = codec.secded_decode(cw ^ (1 << a) ^ (1 << b), k=code.k)[1]
            assert status is SecdedStatus.UNCORRECTABLE, (a, b)


@given(st.data())
def test_scalar_c_equals_python_and_round_trips(data):
    code = data.draw(st.sampled_from(CODES))
    word = data.draw(st.integers(0, (1 << code.k) - 1))
    flips = data.draw(st.lists(st.integers(0, code.n - 1), max_size=3, unique=True))
    results = []
    for impl in codec.available_backends().values():
        cw = impl.secded_encode(code, word)
        for bit in flips:
            cw ^= 1 << bit
        results.append((cw, impl.secded_decode(code, cw)))
    assert results[0] == results[1]
    data_out, status = results[0][1]
    expected = {0: SecdedStatus.OK, 1: SecdedStatus.CORRECTED, 2: SecdedStatus.UNCORRECTABLE}
    if len(flips) < 3:
        assert status is expected[len(flips)]
    if len(flips) < 2:
        assert data_out == word


@pytest.mark.parametrize("code", CODES, ids=["39_32", "72_64"])
def test_arrays_equal_scalars_on_both_backends(code):
    rng = np.random.default_rng(7)
    dtype = np.uint32 if code.k == 32 else np.uint64
    words = rng.integers(0, 2**63, 2000, dtype=np.uint64).astype(dtype)
    flips = rng.integers(0, code.n, (2000, 2))
    nflips = rng.integers(0, 3, 2000)
    data, check = words.copy(), None
    for impl in codec.available_backends().values():
        check = impl.secded_encode_array(code, words)
        data = words.copy()
        bad_check = check.copy()
        for i in range(len(words)):
            for bit in flips[i, : nflips[i]]:
                bit = int(bit)
                if bit < code.k:
                    data[i] ^= dtype(1) << dtype(bit)
                else:
                    bad_check[i] ^= 1 << (bit - code.k)
        out, status = impl.secded_decode_array(code, data, bad_check)
        for i in range(0, 2000, 97):
            cw = int(data[i]) | int(bad_check[i]) << code.k
            assert (int(out[i]), int(status[i])) == impl.secded_decode(code, cw)
        one = nflips == 1
        two = (nflips == 2) & (flips[:, 0] != flips[:, 1])
        assert np.array_equal(out[nflips <= 1], words[nflips <= 1])
        assert np.all(status[one] == SecdedStatus.CORRECTED)
        assert np.all(status[two] == SecdedStatus.UNCORRECTABLE)
    py, c = (codec.available_backends()[n] for n in ("python", "c"))
    assert np.array_equal(py.secded_encode_array(code, words), c.secded_encode_array(code, words))


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda: codec.secded_encode(1 << 32), ValueError, r"data must be in 0\.\.4294967295"),
        (lambda: codec.secded_encode(-1, k=64), ValueError, "data must be in"),
        (lambda: codec.secded_encode(1.5), TypeError, "data must be an int, got float"),
        (lambda: codec.secded_encode(1, k=16), ValueError, "k=16 is not supported; use k=32"),
        (lambda: codec.secded_decode(1 << 39), ValueError, "codeword must be in"),
        (lambda: codec.secded_encode_array([1.0, 2.0]), TypeError, "integer array"),
        (lambda: codec.secded_encode_array([-1]), ValueError, "negative"),
        (lambda: codec.secded_encode_array([1 << 33]), ValueError, "wider than 32 bits"),
        (lambda: codec.secded_decode_array([1, 2], [0]), ValueError, "must match"),
        (
            lambda: codec.secded_decode_array([1], [200]),
            ValueError,
            r"check values must be in 0\.\.127",
        ),
    ],
)
def test_secded_bad_input(call, error, text):
    with pytest.raises(error, match=text):
        call()


def test_code_for_lists_the_supported_widths():
    assert code_for(64) is SECDED_72_64
    with pytest.raises(ValueError, match=r"k=32 .* or k=64"):
        code_for("32")


def test_array_api_accepts_any_fitting_integer_dtype():
    words = np.array([1, 2, 3], dtype=np.int64)
    assert np.array_equal(
        codec.secded_encode_array(words), codec.secded_encode_array(words.astype(np.uint32))
    )
