"""The causal patch (Minder et al. eq. 6) and the token-shift ranks, on tiny random models."""

import numpy as np
import torch

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.causal import (
    aggregate_causal,
    causal_kl,
    kl_divergence,
    latent_patch,
    latent_sets_for_causal_test,
)
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.responses import greedy_responses
from crosscoders.diffing.token_shift import rank_of, shift_class, token_shift_table

LAYER = 1


def exact_crosscoder(d: int, input_scale: tuple[float, float]) -> CrossCoder:
    """A hand-built crosscoder that reconstructs both models exactly: for each model m and axis i,
    one latent reads +x_m[i] and one reads -x_m[i] (ReLU(x) - ReLU(-x) = x), each decoding only
    into its own model. Sources are stored [chat, base] to exercise the reordering."""
    config = CrossCoderConfig(
        n_sources=2,
        d_model=d,
        dict_size=4 * d,
        activation="relu_l1",
        sources=[Source("tiny-chat", LAYER, "chat"), Source("tiny-base", LAYER, "base")],
    )
    coder = CrossCoder(config)
    eye = torch.eye(d)
    with torch.no_grad():
        for source in range(2):
            block = slice(2 * d * source, 2 * d * (source + 1))
            signed = torch.cat([eye, -eye], dim=1)  # [d 2d]
            coder.W_enc[source, :, block] = signed
            coder.W_dec[source, block, :] = signed.T
        coder.input_scale.copy_(torch.tensor(input_scale))
    return coder.eval()


def test_latent_patch_matches_hand_computation():
    h_base = torch.tensor([[1.0, 2.0]])
    f = torch.tensor([[2.0, 3.0, 5.0]])
    W_dec = torch.zeros(2, 3, 2)
    W_dec[1, 0] = torch.tensor([1.0, 0.0])  # latent 0: chat-only along x
    W_dec[0, 1] = torch.tensor([0.0, 1.0])  # latent 1: base-only along y
    W_dec[:, 2] = torch.tensor([1.0, 1.0])  # latent 2: shared, no difference
    patched = latent_patch(h_base, f, W_dec, torch.tensor([True, True, True]))
    assert torch.allclose(patched, torch.tensor([[1.0 + 2.0, 2.0 - 3.0]]))
    only_first = latent_patch(h_base, f, W_dec, torch.tensor([True, False, False]))
    assert torch.allclose(only_first, torch.tensor([[3.0, 2.0]]))


def test_kl_divergence_matches_hand_computation():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.25, 0.75]])
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert torch.allclose(kl_divergence(p.log(), q.log()), torch.tensor([expected]).float())
    assert kl_divergence(p.log(), p.log()).abs().item() < 1e-7


def test_causal_patch_with_all_latents_of_exact_crosscoder_reproduces_chat(pair):
    dictionary = PairDictionary.from_coder(exact_crosscoder(pair.d_model, (2.0, 0.5)))
    assert dictionary.order == [1, 0] and dictionary.layer == LAYER
    responses = greedy_responses(pair.chat, ["w1 w2 w3", "w4 w5"], max_new_tokens=6)
    F = dictionary.dict_size
    sets = {"none": torch.zeros(F, dtype=torch.bool), "all": torch.ones(F, dtype=torch.bool)}
    per_prompt = []
    for response in responses:
        excluded = torch.zeros(response.input_ids.shape[0], dtype=torch.bool)
        per_prompt.append(
            causal_kl(pair.base.model, pair.chat.model, dictionary, response, sets, excluded)
        )
    rows = {row["latent_set"]: row for row in aggregate_causal(per_prompt)}
    assert rows["all"]["kl_all"] < 1e-6 and rows["all"]["kl_first_k"] < 1e-6
    # the base residual at the layer does change chat's output: the baseline is not trivial
    assert rows["none"]["kl_all"] > 1e-3
    assert abs(rows["all"]["kl_all_reduction"] - 1.0) < 1e-3
    assert rows["none"]["n_tokens_all"] == sum(r.n_response for r in responses)


def test_latent_sets_halves_by_norm_and_nu():
    relative_norm = np.array([0.95, 0.99, 0.92, 0.97, 0.5, 0.1])
    nu_eps = np.array([0.5, 0.05, 0.1, np.nan, 0.0, 0.0])
    fired = np.array([True, True, True, True, True, False])
    sets, description = latent_sets_for_causal_test(relative_norm, nu_eps, fired, 0.9)
    assert description["n_candidates"] == 4
    assert sets["rel_norm_top_half"].nonzero().flatten().tolist() == [1, 3]
    assert sets["rel_norm_bottom_half"].nonzero().flatten().tolist() == [0, 2]
    assert sets["nu_eps_low_half"].nonzero().flatten().tolist() == [1]
    assert sets["nu_eps_high_half"].nonzero().flatten().tolist() == [0, 2]
    assert int(sets["none"].sum()) == 0 and int(sets["all"].sum()) == 6


def test_rank_and_shift_classes():
    logits = torch.tensor([[0.1, 3.0, 2.0, 2.5], [5.0, 1.0, 1.0, 0.0]])
    ranks = rank_of(logits, torch.tensor([2, 0]))
    assert ranks.tolist() == [3, 1]
    classes = [shift_class(rank) for rank in (1, 2, 3, 4)]
    assert classes == ["unshifted", "marginal", "marginal", "shifted"]


def test_token_shift_of_a_model_against_itself_is_unshifted(pair):
    responses = greedy_responses(pair.chat, ["w1 w2 w3"], max_new_tokens=5)
    same = token_shift_table(pair.chat.model, pair.chat.model, responses, pair.tokenizer)
    assert (same["shift"] == "unshifted").all() and same["kl"].abs().max() < 1e-6
    response_ids = responses[0].input_ids[responses[0].response_start :].numpy()
    assert (same["token_id"].to_numpy() == response_ids).all()
    diff = token_shift_table(pair.base.model, pair.chat.model, responses, pair.tokenizer)
    assert len(diff) == responses[0].n_response and (diff["kl"] > 0).all()
