"""The causal test as the reference runs it (Minder et al. eq. 6, Fig. 4): the patch, the control
tokens, the first-k / rest split, the ranking of the halves, the baselines; and the token-shift
ranks, on tiny random models."""

import numpy as np
import torch

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.causal import (
    LatentSet,
    aggregate_causal,
    causal_kl,
    causal_latent_sets,
    latent_patch,
    latent_scaling_rank_sum,
    prediction_masks,
    rank_candidates,
)
from crosscoders.diffing.control_tokens import ControlTokens
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.responses import greedy_responses
from crosscoders.diffing.token_shift import rank_of, shift_class, token_shift_table
from interp.divergence import kl_divergence

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
    # the chat-error condition starts from chat and removes the difference
    h_chat = torch.tensor([[10.0, 20.0]])
    from_chat = latent_patch(h_chat, f, W_dec, torch.tensor([True, True, True]), start="chat")
    assert torch.allclose(from_chat, torch.tensor([[10.0 - 2.0, 20.0 + 3.0]]))


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
    sets = {
        "none": LatentSet(torch.zeros(F, dtype=torch.bool)),
        "all": LatentSet(torch.ones(F, dtype=torch.bool)),
        "chat_error": LatentSet(torch.ones(F, dtype=torch.bool), start="chat"),
    }
    control = ControlTokens.from_tokenizer(pair.tokenizer)
    per_prompt = []
    for response in responses:
        excluded = torch.zeros(response.input_ids.shape[0], dtype=torch.bool)
        mask = control.mask(response.input_ids.tolist())
        per_prompt.append(
            causal_kl(pair.base.model, pair.chat.model, dictionary, response, sets, mask, excluded)
        )
    # one condition per forward pass gives what one batch of all three gives (float32 sums)
    response, mask = responses[0], control.mask(responses[0].input_ids.tolist())
    excluded = torch.zeros(response.input_ids.shape[0], dtype=torch.bool)
    one_by_one = causal_kl(
        pair.base.model,
        pair.chat.model,
        dictionary,
        response,
        sets,
        mask,
        excluded,
        sets_per_forward=1,
    )
    for name, sums in one_by_one.items():
        for key, value in sums.items():
            assert abs(value - per_prompt[0][name][key]) <= 1e-4 * max(abs(value), 1e-3), (
                name,
                key,
            )
    rows = {row["latent_set"]: row for row in aggregate_causal(per_prompt, sets)}
    # exact reconstructions: all = h_base + (h_chat - h_base) = h_chat, KL 0
    assert rows["all"]["kl_rest"] < 1e-6 and rows["all"]["kl_first_k"] < 1e-6
    # the base residual at the layer does change chat's output: the baseline is not trivial
    assert rows["none"]["kl_rest"] > 1e-3 and rows["none"]["kl_first_k"] > 1e-3
    assert abs(rows["all"]["kl_first_k_reduction"] - 1.0) < 1e-3
    # chat_error = h_chat - (h_chat - h_base) = h_base: the same KL as none
    for key in ("kl_first_k", "kl_rest"):
        assert abs(rows["chat_error"][key] - rows["none"][key]) < 1e-4 * rows["none"][key]
    # every response prediction is in exactly one of the two groups
    n_predictions = sum(r.n_response for r in responses)
    assert rows["none"]["n_tokens_first_k"] + rows["none"]["n_tokens_rest"] == n_predictions


def test_control_tokens_from_the_tokenizer_and_its_template():
    """A hand-made conversation in the tiny word tokenizer: template tokens are marked, the same
    words inside a message are not."""
    from tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    control = ControlTokens.from_tokenizer(tokenizer)
    words = (
        "<bos> <start_of_turn> user w1 model w2 <end_of_turn> <start_of_turn> model "
        "user w3 <start_of_turn> w4 <end_of_turn>"
    ).split()
    ids = tokenizer.convert_tokens_to_ids(words)
    expected = [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1]  # a stray special token is control too
    assert control.mask(ids).astype(int).tolist() == expected
    assert control.mask(ids[:2]).astype(int).tolist() == [1, 1]  # shorter than every piece


def test_control_tokens_of_the_real_gemma_template():
    """The Gemma tokenizer and template: `<start_of_turn>` + role + newline and `<end_of_turn>` +
    newline are control tokens (the reference's ctrl template), message text is not, even where it
    holds the role names and newlines."""
    from transformers import AutoTokenizer

    from interp.builtin_models import dequantized_folder, gemma_3_270m_gguf
    from interp.chat_template import GEMMA_CHAT_TEMPLATE, render_chat

    tokenizer = AutoTokenizer.from_pretrained(dequantized_folder(*gemma_3_270m_gguf()))
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    control = ControlTokens.from_tokenizer(tokenizer)
    text = render_chat(tokenizer, "Ask the user\nmodel", "The model\nsays hi")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    mask = control.mask(ids)
    marked = [token for token, is_control in zip(tokens, mask, strict=True) if is_control]
    unmarked = [token for token, is_control in zip(tokens, mask, strict=True) if not is_control]
    assert marked == ["<bos>", "<start_of_turn>", "user", "\n"] + [
        "<end_of_turn>",
        "\n",
        "<start_of_turn>",
        "model",
        "\n",
        "<end_of_turn>",
        "\n",
    ]
    assert "".join(unmarked).replace("\u2581", " ") == "Ask the user\nmodelThe model\nsays hi"


def test_first_k_excludes_control_positions_and_the_rest_takes_the_others():
    """Positions 0..9 hold a prompt ending in the generation prompt (positions 7, 8, 9 control);
    the response is positions 10..19. Predicting positions are 9..18; the first k = 4 of them are
    9, 10, 11, 12, and 9 (the newline of "model\\n") is a control token: first = 10, 11, 12; the
    rest = 9 and 13..18 (the reference's next_ass_toks_mask)."""
    control = np.zeros(20, dtype=bool)
    control[[0, 1, 2, 7, 8, 9]] = True
    first, rest = prediction_masks(10, control, first_k=4)
    predicting = np.arange(9, 19)
    assert predicting[first].tolist() == [10, 11, 12]
    assert predicting[rest].tolist() == [9, 13, 14, 15, 16, 17, 18]
    # a response shorter than k: every non-control prediction is in the first group
    first, rest = prediction_masks(10, control[:13], first_k=10)
    assert np.arange(9, 12)[first].tolist() == [10, 11] and np.arange(9, 12)[rest].tolist() == [9]


def test_latent_scaling_rank_sum_gives_ties_their_average_rank():
    nu_r = np.array([0.3, 0.1, 0.3, 0.0])  # ranks 3.5, 2, 3.5, 1
    nu_eps = np.array([0.0, 0.5, 0.2, 0.9])  # ranks 1, 3, 2, 4
    assert latent_scaling_rank_sum(nu_r, nu_eps).tolist() == [4.5, 5.0, 5.5, 5.0]


def test_candidates_and_halves_on_a_hand_made_table():
    """Nine latents; the filter keeps live chat-only latents with both nu in [-0.1, 2]."""
    relative_norm = np.array([0.95, 0.99, 0.92, 0.97, 0.5, 0.98, 0.91, 0.96, 0.93])
    nu_r = np.array([0.30, 0.10, 0.30, 0.00, 0.00, 2.50, 0.05, 0.20, -0.10])
    nu_eps = np.array([0.00, 0.50, 0.20, 0.90, 0.00, 0.10, np.nan, 0.40, 2.00])
    live = np.array([True, True, True, True, True, True, True, False, True])
    # 4: not chat-only; 5: nu_r > 2; 6: nu_eps undefined; 7: dead; 8: on both bounds (kept)
    candidates, halves = rank_candidates(relative_norm, nu_r, nu_eps, live)
    assert candidates.tolist() == [0, 1, 2, 3, 8]
    # ranks over the candidates 0, 1, 2, 3, 8: nu_r 0.3 0.1 0.3 0.0 -0.1 -> 4.5 3 4.5 2 1;
    # nu_eps 0.0 0.5 0.2 0.9 2.0 -> 1 3 2 4 5; rank sums 5.5 6 6.5 6 6
    assert halves["latent_scaling_best_half"].tolist() == [0, 1]  # 5.5, then 6 (latent order)
    assert halves["latent_scaling_worst_half"].tolist() == [8, 2]  # 6, 6.5: the last two
    # Delta: 1 (0.99) 3 (0.97) 0 (0.95) 8 (0.93) 2 (0.92); the middle one (0) in neither half
    assert halves["rel_norm_best_half"].tolist() == [1, 3]
    assert halves["rel_norm_worst_half"].tolist() == [8, 2]


def test_causal_sets_hold_the_baselines_beside_the_halves():
    relative_norm = np.array([0.95, 0.99, 0.92, 0.97, 0.5, 0.98, 0.91, 0.96, 0.93, 0.2])
    nu_r = np.array([0.3, 0.1, 0.3, 0.0, 0.0, 2.5, 0.05, 0.2, -0.1, 0.0])
    nu_eps = np.array([0.0, 0.5, 0.2, 0.9, 0.0, 0.1, np.nan, 0.4, 2.0, 0.0])
    live = np.array([True] * 7 + [False] + [True] * 2)
    sets, description = causal_latent_sets(relative_norm, nu_r, nu_eps, live, n_seeds=3)
    assert description["n_candidates"] == 5 and description["n_live"] == 9
    assert sets["none"].n_latents == 0 and sets["all"].n_latents == 10
    assert sets["chat_error"].start == "chat" and sets["chat_error"].n_latents == 10
    assert sets["latent_scaling_best_half"].mask.nonzero().flatten().tolist() == [0, 1]
    candidates = {0, 1, 2, 3, 8}
    for seed in range(3):
        drawn = set(sets[f"random_candidates_s{seed}"].mask.nonzero().flatten().tolist())
        assert len(drawn) == 2 and drawn <= candidates  # same size as a half, from the candidates
        drawn = set(sets[f"random_latents_s{seed}"].mask.nonzero().flatten().tolist())
        assert len(drawn) == 2 and 7 not in drawn  # from the live latents
        assert sets[f"random_latents_s{seed}"].group == "random_latents"
    assert description["paper_rule"]
    # no chat-only latent: the top tenth (at least 2) by Delta of the live in-range latents
    sets, description = causal_latent_sets(relative_norm * 0.5, nu_r, nu_eps, live, n_seeds=1)
    assert not description["paper_rule"] and "not the paper's rule" in description["candidate_rule"]
    assert description["n_candidates"] == 2  # in range and live: 0, 1, 2, 3, 4, 8, 9
    assert sets["rel_norm_best_half"].mask.nonzero().flatten().tolist() == [1]  # 0.495
    assert sets["rel_norm_worst_half"].mask.nonzero().flatten().tolist() == [3]  # 0.485
    # no live latent: only the three baselines
    sets, description = causal_latent_sets(relative_norm, nu_r, nu_eps, np.zeros(10, dtype=bool))
    assert list(sets) == ["none", "all", "chat_error"] and description["n_candidates"] == 0


def _sums(first_sum: float, n_first: int, rest_sum: float, n_rest: int) -> dict[str, float]:
    return {
        "kl_first_k_sum": first_sum,
        "n_first_k": n_first,
        "kl_rest_sum": rest_sum,
        "n_rest": n_rest,
    }


def test_aggregate_weights_tokens_and_pools_random_seeds():
    sets = {
        "none": LatentSet(torch.zeros(4, dtype=torch.bool)),
        "half": LatentSet(torch.tensor([True, True, False, False])),
        "random_latents_s0": LatentSet(
            torch.tensor([True, False, True, False]), group="random_latents"
        ),
        "random_latents_s1": LatentSet(
            torch.tensor([False, True, False, True]), group="random_latents"
        ),
    }
    per_prompt = [
        {
            "none": _sums(4.0, 2, 3.0, 3),
            "half": _sums(1.0, 2, 3.0, 3),
            "random_latents_s0": _sums(2.0, 2, 3.0, 3),
            "random_latents_s1": _sums(4.0, 2, 0.0, 3),
        },
        {
            "none": _sums(8.0, 2, 1.0, 1),
            "half": _sums(1.0, 2, 1.0, 1),
            "random_latents_s0": _sums(6.0, 2, 1.0, 1),
            "random_latents_s1": _sums(8.0, 2, 0.0, 1),
        },
    ]
    rows = {row["latent_set"]: row for row in aggregate_causal(per_prompt, sets)}
    assert list(rows) == ["none", "half", "random_latents"]
    assert rows["none"]["kl_first_k"] == 12.0 / 4 and rows["none"]["kl_rest"] == 4.0 / 4
    assert rows["half"]["kl_first_k"] == 2.0 / 4 and rows["half"]["kl_first_k_reduction"] == 2.5 / 3
    assert rows["half"]["n_latents"] == 2 and rows["half"]["n_tokens_rest"] == 4
    pooled = rows["random_latents"]
    assert pooled["kl_first_k_seeds"] == [8.0 / 4, 12.0 / 4] and pooled["kl_first_k"] == 20.0 / 8
    assert pooled["kl_rest_seeds"] == [4.0 / 4, 0.0] and pooled["kl_rest"] == 4.0 / 8
    assert pooled["n_seeds"] == 2 and pooled["n_tokens_first_k"] == 4
    assert pooled["kl_rest_reduction"] == (1.0 - 0.5) / 1.0


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
