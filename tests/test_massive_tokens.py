"""FVE with and without massive-norm tokens: a hand-made dictionary that reconstructs typical
tokens to 0.9 x and overshoots one planted huge token, checked against hand computations."""

from statistics import pvariance

import pytest
import torch

from crosscoders.config import CrossCoderConfig
from crosscoders.crosscoder import CrossCoder
from crosscoders.evaluate import reconstruction_metrics
from crosscoders.losses import massive_norm_thresholds, massive_token_mask
from interp.errors import InterpError

TYPICAL = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
HUGE = 100.0  # median norm of the 9 tokens is 5 (lower median): 100 > 5 x 5, nothing else is
KNEE = 50.0


def overshooting_dictionary() -> CrossCoder:
    """One source, d = 1, two ReLU latents: f_0 = ReLU(x) decoded as 0.9, f_1 = ReLU(x - 50)
    decoded as -3, so x^ = 0.9 x for 0 <= x <= 50 and x^ = 0.9 x - 3 (x - 50) above."""
    coder = CrossCoder(CrossCoderConfig(n_sources=1, d_model=1, dict_size=2, activation="relu_l1"))
    with torch.no_grad():
        coder.W_enc.copy_(torch.tensor([[[1.0, 1.0]]]))
        coder.b_enc.copy_(torch.tensor([0.0, -KNEE]))
        coder.W_dec.copy_(torch.tensor([[[0.9], [-3.0]]]))
    return coder


def batches() -> list[torch.Tensor]:
    """The 9 tokens in two batches, the huge one in the first: x [batch, 1, 1]."""
    values = [TYPICAL[0], HUGE, *TYPICAL[1:]]
    return [torch.tensor(values[:4])[:, None, None], torch.tensor(values[4:])[:, None, None]]


def test_fve_without_the_planted_huge_token_matches_hand_value():
    metrics = reconstruction_metrics(overshooting_dictionary(), batches())
    huge_error = HUGE - (0.9 * HUGE - 3 * (HUGE - KNEE))  # 100 - (-60) = 160
    errors = [0.1 * x for x in TYPICAL] + [huge_error]
    xs = [*TYPICAL, HUGE]
    fve_all = 1 - pvariance(errors) / pvariance(xs)  # about -1.78
    assert fve_all < 0
    assert metrics["fve"]["0"] == pytest.approx(fve_all)
    assert metrics["fve_typical"]["0"] == pytest.approx(1 - 0.1**2)  # error 0.1 x: FVE 0.99
    assert metrics["n_tokens"] == 9 and metrics["n_massive_tokens"] == 1
    assert metrics["massive_fraction"] == pytest.approx(1 / 9)
    squared = [e**2 for e in errors]
    assert metrics["massive_error_share"]["0"] == pytest.approx(huge_error**2 / sum(squared))


def test_one_shot_iterator_gives_the_same_metrics_as_a_list():
    coder = overshooting_dictionary()
    streamed = reconstruction_metrics(coder, iter(batches()))
    assert streamed == reconstruction_metrics(coder, batches())


def test_massive_ratio_zero_keeps_every_token():
    metrics = reconstruction_metrics(overshooting_dictionary(), iter(batches()), massive_ratio=0)
    assert metrics["n_massive_tokens"] == 0 and metrics["massive_fraction"] == 0
    assert metrics["fve_typical"] == metrics["fve"]
    assert metrics["massive_error_share"]["0"] == 0


def test_a_ratio_above_the_huge_token_finds_none():
    metrics = reconstruction_metrics(overshooting_dictionary(), batches(), massive_ratio=HUGE / 5)
    assert metrics["n_massive_tokens"] == 0  # 100 is not > 20 x 5
    assert metrics["fve_typical"] == metrics["fve"]


def test_a_ratio_below_one_is_refused():
    with pytest.raises(InterpError, match="massive ratio 0.5"):
        reconstruction_metrics(overshooting_dictionary(), batches(), massive_ratio=0.5)


def test_a_token_is_massive_when_any_source_exceeds_its_own_median_times_ratio():
    norms = torch.tensor(
        [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [2.0, 160.0], [16.0, 20.0], [2.0, 20.0]]
    )  # lower medians: source 0 -> 2, source 1 -> 20; thresholds x 4: 8 and 80
    thresholds = massive_norm_thresholds(norms, 4.0)
    torch.testing.assert_close(thresholds, torch.tensor([8.0, 80.0]))
    mask = massive_token_mask(norms, thresholds)
    assert mask.tolist() == [False, False, False, True, True, False]
