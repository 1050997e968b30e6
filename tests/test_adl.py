"""The Activation Difference Lens on a planted pair: a tiny random model and the same model with a
known bias direction u added to `resid_post[LAYER]`, whose unembedding makes u read as three
planted tokens."""

import copy
import json

import pytest
import torch
from tiny_models import WORDS, tiny_model

from crosscoders.diffing.adl import (
    AdlConfig,
    cosine,
    first_tokens,
    logit_lens_rows,
    position_means,
    read_results,
    run_adl,
)
from interp.errors import InterpError
from interp.hooks import residual_edit
from interp.models import ModelPair

LAYER = 1
PLANTED = ["w10", "w20", "w30"]
BIAS_NORM = 3.0


def planted_pair():
    base = tiny_model("gemma3", seed=0)
    tokenizer = base.tokenizer
    d = base.d_model
    u = torch.randn(d, generator=torch.Generator().manual_seed(7))
    u = u / u.norm()
    embedding = base.model.get_input_embeddings().weight  # tied with the unembedding
    with torch.no_grad():
        for word in PLANTED:
            embedding[tokenizer.convert_tokens_to_ids(word)] = 0.5 * u
    chat = copy.deepcopy(base)
    chat.spec = "tiny-gemma3-planted"
    shift = BIAS_NORM * u
    chat.model.get_decoder().layers[LAYER].register_forward_hook(
        lambda _m, _a, output: (
            (output[0] + shift, *output[1:]) if isinstance(output, tuple) else output + shift
        )
    )
    return ModelPair(base=base, chat=chat), u


def texts(n: int, length: int = 12) -> list[str]:
    generator = torch.Generator().manual_seed(3)
    words = WORDS[3:]
    return [
        " ".join(
            words[i] for i in torch.randint(len(words), (length,), generator=generator).tolist()
        )
        for _ in range(n)
    ]


def test_position_means_recover_the_planted_direction_at_its_layer_only():
    pair, u = planted_pair()
    ids = first_tokens(pair.tokenizer, texts(20), n_tokens=8, max_texts=20)
    means = position_means(pair, ids, positions=5, batch_size=7, progress=False)
    assert means.diff.shape == (pair.n_layers, 5, pair.d_model)
    # before the planted layer the two models are the same model
    assert means.diff[:LAYER].abs().max() == 0
    for position in range(5):
        # at the planted layer the difference is exactly the bias (float32 rounding of the sum)
        assert cosine(means.diff[LAYER, position], u) > 1 - 1e-5
        assert means.diff[LAYER, position].norm().item() == pytest.approx(BIAS_NORM, rel=1e-4)


def test_position_means_match_a_hand_computation():
    pair, _ = planted_pair()
    ids = first_tokens(pair.tokenizer, texts(6), n_tokens=7, max_texts=6)
    means = position_means(pair, ids, positions=4, batch_size=4, progress=False)
    with torch.no_grad():
        hidden = {
            role: torch.stack(
                loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[1:-1]
            )
            for role, loaded in (("base", pair.base), ("chat", pair.chat))
        }  # [layers - 1, texts, 7, d]: hidden_states[l + 1] = resid_post[l] except the last block
    diff = (hidden["chat"] - hidden["base"])[:, :, :4].mean(1)
    torch.testing.assert_close(means.diff[:-1], diff, atol=1e-5, rtol=1e-4)
    norm = hidden["chat"][:, :, 4:].norm(dim=-1).mean((1, 2))
    torch.testing.assert_close(means.chat_norm[:-1], norm, atol=1e-5, rtol=1e-4)


def test_logit_lens_of_the_difference_reads_the_planted_tokens():
    pair, _ = planted_pair()
    ids = first_tokens(pair.tokenizer, texts(10), n_tokens=8, max_texts=10)
    means = position_means(pair, ids, positions=5, progress=False)
    rows = logit_lens_rows(pair.chat.model, pair.tokenizer, means.diff, top=5)
    assert len(rows) == 2 * pair.n_layers * 5
    for row in rows:
        if row["layer"] == LAYER and row["sign"] == "+":
            assert set(row["tokens"][:3]) == set(PLANTED)


def test_residual_edit_adds_the_vector_and_is_removed_afterwards():
    pair, u = planted_pair()
    ids = torch.tensor([[2, 10, 11, 12]])
    model = pair.base.model
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with residual_edit(model, LAYER, lambda h: h + 3.0 * u):
            edited = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
        chat = pair.chat.model(input_ids=ids).logits
    torch.testing.assert_close(edited, chat)  # base + the planted bias is the chat model
    torch.testing.assert_close(after, plain)
    assert (edited - plain).abs().max() > 1e-3


def test_run_adl_writes_every_reading_and_refuses_another_config(tmp_path):
    pair, _ = planted_pair()
    config = AdlConfig(
        n_texts=12,
        layer=str(LAYER),
        batch_size=8,
        top_tokens=5,
        patchscope_scales=[1.0, 4.0],
        steer_strengths=[2.0],
        steer_positions=[1],
        n_prompts=2,
        max_new_tokens=4,
        tuco_alphas=[1.0],
    )
    summary = run_adl(pair, tmp_path / "adl", config, texts=texts(30), progress=False)
    assert summary["n_texts"] == 12 and summary["layer"] == LAYER
    assert summary["relative_norm"][0] == [0.0] * 5
    results = read_results(tmp_path / "adl")
    assert {
        (row["model"], row["position"]) for row in results["steering"] if row["method"] == "adl"
    } == {
        ("chat", None),
        ("base", None),
        ("chat", 1),
        ("base", 1),
    }
    assert len(results["patchscope"]) == 5 * 2
    for row in results["steering"]:
        assert len(row["completions"]) == 2 and len(row["nll"]) == 2
    # TuCo at alpha = 1 is the chat model itself: the same greedy text as the unsteered chat row
    unsteered = next(
        r for r in results["steering"] if r["model"] == "chat" and r["position"] is None
    )
    tuco = next(r for r in results["steering"] if r["method"] == "tuco")
    assert tuco["completions"] == unsteered["completions"]
    before = (tmp_path / "adl" / "steering.json").stat().st_mtime_ns
    run_adl(
        pair, tmp_path / "adl", config, texts=texts(30), progress=False
    )  # resume: nothing to do
    assert (tmp_path / "adl" / "steering.json").stat().st_mtime_ns == before
    config.n_texts = 11
    with pytest.raises(InterpError, match="different config"):
        run_adl(pair, tmp_path / "adl", config, texts=texts(30), progress=False)
    assert json.loads((tmp_path / "adl" / "config.json").read_text())["adl"]["n_texts"] == 12
    # the models' dtype is recorded: the same config in bf16 is refused, naming what was used
    config.n_texts = 12
    in_bf16, _ = planted_pair()
    for loaded in in_bf16:
        loaded.model.to(torch.bfloat16)
    with pytest.raises(InterpError, match=r"model_dtype \(recorded 'fp32', now 'bf16'\)"):
        run_adl(in_bf16, tmp_path / "adl", config, texts=texts(30), progress=False)
    # a config written before the dtype was recorded meant fp32: resumed, nothing to do
    config_path = tmp_path / "adl" / "config.json"
    recorded = json.loads(config_path.read_text())
    assert recorded.pop("model_dtype") == "fp32"
    config_path.write_text(json.dumps(recorded))
    run_adl(pair, tmp_path / "adl", config, texts=texts(30), progress=False)
    assert (tmp_path / "adl" / "steering.json").stat().st_mtime_ns == before


def test_bad_steer_position_is_a_one_line_error():
    with pytest.raises(InterpError, match="outside 0..4"):
        AdlConfig(steer_positions=[7]).validate()
