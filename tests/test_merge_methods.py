"""The merge methods on tensors small enough to check by hand (the values in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from lf_wrap.merge.methods import METHODS, lowrank
from lf_wrap.merge.methods.dare import dare_linear, dare_ties, drop_and_rescale
from lf_wrap.merge.methods.linear import linear
from lf_wrap.merge.methods.ties import ties, trim

D1 = torch.tensor([1.0, -2.0, 0.5, 3.0])
D2 = torch.tensor([-1.5, -1.0, 0.2, 0.9])
D3 = torch.tensor([0.4, 2.5, -0.1, -0.2])


def close(a, b):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                          atol=1e-6)


def test_linear_is_the_weighted_sum():
    assert close(linear([D1, D2, D3], [1, 1, 1]), [-0.1, -0.5, 0.6, 3.7])
    assert close(linear([D1, D2, D3], [0.5, 0, 2]), [1.3, 4.0, 0.05, 1.1])


def test_trim_keeps_the_largest_magnitudes():
    # density 0.5 of 4 entries: the 2 largest |values| survive
    assert close(trim(D1, 0.5), [0, -2.0, 0, 3.0])
    assert close(trim(D2, 0.5), [-1.5, -1.0, 0, 0])
    assert close(trim(D3, 0.5), [0.4, 2.5, 0, 0])
    assert close(trim(D1, 1.0), D1)
    assert close(trim(D1, 0.01), [0, 0, 0, 3.0])   # at least one entry is kept


def test_ties_elects_signs_and_takes_the_disjoint_mean():
    # trimmed: [0,-2,0,3], [-1.5,-1,0,0], [0.4,2.5,0,0]
    # summed:  [-1.1, -0.5, 0, 3] -> elected signs - - + +
    # agreeing entries: col0 {-1.5}, col1 {-2, -1}, col2 {} , col3 {3}
    assert close(ties([D1, D2, D3], [1, 1, 1], 0.5), [-1.5, -1.5, 0.0, 3.0])


def test_ties_applies_weights_before_the_election_as_mergekit_does():
    # weighted trimmed: [0,-2,0,3], [-3,-2,0,0], [0.2,1.25,0,0]; signs - - + +
    # col0: -3 / 2 = -1.5 ; col1: (-2 - 2) / (1 + 2) = -4/3 ; col3: 3 / 1
    assert close(ties([D1, D2, D3], [1, 2, 0.5], 0.5), [-1.5, -4 / 3, 0.0, 3.0])


def test_dare_drops_with_a_seeded_bernoulli_and_rescales_by_one_over_density():
    x = torch.arange(1.0, 9.0)
    got = drop_and_rescale(x, 0.25, torch.Generator().manual_seed(7))
    mask = torch.bernoulli(torch.full((8,), 0.25), generator=torch.Generator().manual_seed(7))
    assert close(got, x * mask * 4)
    kept = got != 0
    assert close(got[kept], x[kept] * 4)          # every survivor is x / density
    again = drop_and_rescale(x, 0.25, torch.Generator().manual_seed(7))
    assert torch.equal(got, again)                 # same seed, same merge
    assert torch.equal(drop_and_rescale(x, 1.0, torch.Generator().manual_seed(7)), x)


def test_dare_keeps_the_expected_delta():
    x = torch.full((200_000,), 0.5)
    mean = drop_and_rescale(x, 0.3, torch.Generator().manual_seed(0)).mean().item()
    assert abs(mean - 0.5) < 0.01


def test_dare_linear_and_dare_ties_without_drop():
    gen = torch.Generator().manual_seed(0)
    assert close(dare_linear([D1, D2, D3], [1, 1, 1], 1.0, gen), [-0.1, -0.5, 0.6, 3.7])
    # sums [-0.1,-0.5,0.6,3.7] -> signs - - + + ; agreeing summed, not divided (mergekit dare_ties)
    # col0 {-1.5}, col1 {-2,-1}, col2 {0.5,0.2}, col3 {3,0.9}
    assert close(dare_ties([D1, D2, D3], [1, 1, 1], 1.0, gen), [-1.5, -3.0, 0.7, 3.9])


def test_dare_ties_equals_ties_consensus_on_the_dropped_deltas():
    deltas = [torch.randn(6, 5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    got = dare_ties(deltas, [1.0, 0.5, 2.0], 0.5, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    dropped = [drop_and_rescale(d, 0.5, gen) for d in deltas]
    weighted = [w * d for w, d in zip([1.0, 0.5, 2.0], dropped)]
    elected = torch.where(sum(weighted) >= 0, 1.0, -1.0)
    expected = sum(torch.where(torch.sign(u) == elected, u, torch.zeros_like(u)) for u in weighted)
    assert close(got, expected)


def test_concat_reproduces_the_weighted_sum_of_lora_products():
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(r, 7, generator=g), torch.randn(5, r, generator=g)) for r in (2, 3)]
    factors = [0.5 * 2.0, -1.5 * 0.25]             # w_i * scaling_i
    a, b = lowrank.concat(pairs, factors)
    assert a.shape == (5, 7) and b.shape == (5, 5)
    expected = factors[0] * pairs[0][1] @ pairs[0][0] + factors[1] * pairs[1][1] @ pairs[1][0]
    assert close(b @ a, expected)
    assert lowrank.relative_error(expected, a, b) < 1e-6


def test_truncated_svd_keeps_the_largest_directions_and_reports_the_loss():
    delta = torch.diag(torch.tensor([3.0, 1.0]))
    a, b = lowrank.truncated_svd(delta, 1)
    assert close(b @ a, [[3.0, 0.0], [0.0, 0.0]])
    assert math.isclose(lowrank.relative_error(delta, a, b), 1 / math.sqrt(10), rel_tol=1e-6)
    a, b = lowrank.truncated_svd(delta, 2)
    assert lowrank.relative_error(delta, a, b) < 1e-6


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_runs(name):
    method = METHODS[name]
    deltas = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    merged = method.combine(deltas, [1.0, 1.0, 1.0], 0.5 if method.density else None,
                            torch.Generator().manual_seed(0) if method.seeded else None)
    assert merged.shape == (4, 3) and torch.isfinite(merged).all()
    if method.exact_adapter:
        assert close(merged, sum(deltas))


def test_truncated_svd_pads_a_rank_above_the_matrix_rank_with_zeros():
    delta = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    a, b = lowrank.truncated_svd(delta, 4)
    assert a.shape == (4, 5) and b.shape == (3, 4)
    assert lowrank.relative_error(delta, a, b) < 1e-6
