"""The exploring API (steering/explore.py) on the tiny pair: each answer equals the pieces it is
made of, computed here directly."""

import pandas as pd
import pytest
import torch
from tiny_models import tiny_pair

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.evaluate import splice_metrics
from crosscoders.init import initialize
from crosscoders.io import save_crosscoder
from interp.errors import InterpError
from interp.hooks import residual_stream
from steering.explore import open_run

LAYER, F = 2, 64
TEXT = "the cat sat on the mat and the dog sat on the log"


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    pair = tiny_pair()
    sources = [Source(pair.base.spec, LAYER, "base"), Source(pair.chat.spec, LAYER, "chat")]
    config = CrossCoderConfig(2, pair.d_model, F, activation="relu_l1", sources=sources)
    coder = CrossCoder(config)
    generator = torch.Generator().manual_seed(0)
    initialize(coder, torch.randn(256, 2, pair.d_model, generator=generator), generator)
    save_crosscoder(coder, root / "dict")
    # an analysis folder with a hand-made examples table and latent classes
    (root / "analysis").mkdir()
    ids = pair.tokenizer(TEXT)["input_ids"]
    pd.DataFrame(
        {
            "latent": [5, 5, 7],
            "kind": ["top", "top", "top"],
            "rank": [1, 0, 0],
            "activation": [1.0, 2.0, 3.0],
            "max_index": [1, 2, 3],
            "token_ids": [ids[:4], ids[2:6], ids[1:5]],
        }
    ).to_parquet(root / "analysis" / "examples.parquet")
    classes = ["shared"] * F
    classes[3] = "chat-only"
    pd.DataFrame({"latent": range(F), "latent_class": classes}).to_parquet(
        root / "analysis" / "latents.parquet"
    )
    return open_run(dictionary=root / "dict", analysis=root / "analysis", pair=pair)


def test_encode_is_the_dictionary_on_both_models_residual_streams(explorer):
    pair, coder = explorer.pair, explorer.coder
    encoded = explorer.encode(TEXT)
    ids = pair.tokenizer([TEXT], return_tensors="pt")["input_ids"]
    x = torch.stack(
        [residual_stream(m.model, ids, [LAYER])[0, :, 0] for m in (pair.base, pair.chat)], dim=1
    )
    torch.testing.assert_close(encoded.residuals, x, rtol=0, atol=0)
    torch.testing.assert_close(encoded.latents, coder.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(encoded.reconstruction, coder(x), rtol=0, atol=0)
    assert encoded.tokens == pair.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert encoded.special.tolist() == [i == pair.tokenizer.bos_token_id for i in ids[0].tolist()]
    position = int(encoded.latents[1:].sum(dim=1).argmax()) + 1
    active = encoded.active(position)
    assert list(active.values()) == sorted(active.values(), reverse=True)
    assert set(active) == set(encoded.latents[position].nonzero()[:, 0].tolist())


def test_top_latents_are_the_largest_maxima_over_ordinary_tokens(explorer):
    encoded = explorer.encode(TEXT)
    f = encoded.latents[~encoded.special]
    top = explorer.top_latents(TEXT, n=5)
    expected = f.max(dim=0).values.topk(5)
    assert top["latent"].tolist() == expected.indices.tolist()
    torch.testing.assert_close(torch.tensor(top["max_activation"].tolist()), expected.values)
    assert (top["n_active"] == [(f[:, j] > 0).sum().item() for j in top["latent"]]).all()
    assert set(top["latent_class"]) <= {"shared", "chat-only"}


def test_examples_come_from_the_analysis_in_rank_order_with_the_text(explorer):
    examples = explorer.examples(5)
    assert examples["rank"].tolist() == [0, 1]
    tokenizer = explorer.pair.tokenizer
    ids = tokenizer(TEXT)["input_ids"]
    assert examples["text"][0] == tokenizer.decode(ids[2:6])
    assert examples["token"][0] == tokenizer.decode([ids[4]])
    with pytest.raises(InterpError, match="out of range"):
        explorer.examples(F)


def test_splice_is_splice_metrics(explorer):
    expected = splice_metrics(
        explorer.coder, [explorer.pair.base, explorer.pair.chat], [LAYER, LAYER], [TEXT]
    )
    assert explorer.splice([TEXT]) == expected


def test_steering_at_zero_is_the_model_and_otherwise_moves_it(explorer):
    chat = explorer.pair.chat
    batch = chat.tokenizer(["the cat"], return_tensors="pt")
    plain = chat.model.generate(
        **batch, max_new_tokens=6, do_sample=False, pad_token_id=chat.tokenizer.pad_token_id
    )
    unsteered = chat.tokenizer.decode(
        plain[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert explorer.steer(3, "the cat", strength=0.0, max_new_tokens=6) == unsteered
    steering_map = explorer.steering_map(3, 50.0)
    z = torch.randn(4, explorer.coder.config.d_model)
    direction = explorer.coder.W_dec[1, 3] / explorer.coder.input_scale[1]
    # add: z + lambda * v * d_j (steering/latent_steering.py)
    torch.testing.assert_close(steering_map.edit(0, 2.0)(z), z + 100.0 * direction.detach())
