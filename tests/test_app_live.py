"""The app's live features on tiny random models: latent activations on typed text, base-vs-chat
token shift on a typed prompt, and generation with and without a steering map. Each is checked
against a direct computation with the pipeline's own functions."""

import json
import re
from pathlib import Path

import pytest
import torch
from app_fixtures import add_tiny_models, build_run_folder, open_page

from crosscoders.diffing.pair_dictionary import PairDictionary
from interp.hooks import residual_stream
from interp.models import load_model
from steering.evaluate import steered_responses
from steering.mean_difference import AdditiveMap

LAYER = 1
DICT_SIZE = 64
TEXT = "w1 w5 w9 user w12 w3"


@pytest.fixture(scope="module")
def live_run(tmp_path_factory) -> Path:
    """A run folder whose run.json names two tiny model folders and whose dictionary is a real
    (random) crosscoder on resid_post[1]."""
    run = build_run_folder(
        tmp_path_factory.mktemp("live") / "run", n_latents=DICT_SIZE, n_example_latents=4
    )
    pair = add_tiny_models(run, DICT_SIZE, LAYER)
    base, chat = run / "models" / "base", run / "models" / "chat"
    (run / "steering" / "config.json").write_text(
        json.dumps({"base": str(base), "chat": str(chat)})
    )
    steering = AdditiveMap([f"model.layers.{LAYER}"], pair.d_model)
    with torch.no_grad():
        steering.vector.normal_(0, 20.0)
    steering.save(run / "steering" / "maps" / "remove-refusal" / "mean-diff")
    return run


def direct_activations(run: Path, text: str) -> torch.Tensor:
    """[tokens, F] latent activations of `text` (special tokens dropped), computed here."""
    from crosscoders.io import load_crosscoder

    base, chat = (load_model(str(run / "models" / side)) for side in ("base", "chat"))
    ids = chat.tokenizer(text, return_tensors="pt").input_ids
    x = torch.stack([residual_stream(m.model, ids, [LAYER])[0, :, 0] for m in (base, chat)], 1)
    coder = PairDictionary.from_coder(load_crosscoder(run / "dictionaries" / "crosscoder"))
    keep = [i for i, t in enumerate(ids[0].tolist()) if t not in chat.tokenizer.all_special_ids]
    return coder.encode(x)[keep]


def test_live_latent_activations_match_a_direct_encode(live_run):
    expected = direct_activations(live_run, TEXT)
    latent = int(expected.max(0).values.argmax())
    assert expected[:, latent].max() > 0
    at = open_page(live_run, "latent", timeout=120, latent=str(latent))
    at.text_area(key="latent_live_text").input(TEXT)
    at.button(key="latent_live_button").click().run()
    assert not at.error, [e.value for e in at.error]
    html = [m.value for m in at.markdown if 'class="tok' in m.value][-1]
    shown = [float(v) for v in re.findall(r'title="([^"]+)"', html)]
    assert shown == pytest.approx(expected[:, latent].tolist(), rel=1e-3, abs=1e-4)
    assert len(shown) == len(TEXT.split())


def test_live_compare_shows_the_token_shift_of_the_chat_response(live_run):
    at = open_page(live_run, "compare", timeout=120)
    at.text_input(key="compare_live_prompt").input("w4 w7 w2")
    at.number_input(key="compare_live_tokens").set_value(5)
    at.button(key="compare_live_button").click().run()
    assert not at.error, [e.value for e in at.error]
    table = [d.value for d in at.dataframe if "rank_under_base" in d.value.columns][-1]
    assert 1 <= len(table) <= 5
    expected = [
        "unshifted" if r == 1 else "marginal" if r <= 3 else "shifted"
        for r in table.rank_under_base
    ]
    assert list(table["shift"]) == expected
    assert (table.kl >= 0).all()


def test_live_steering_generates_with_and_without_the_map(live_run):
    at = open_page(live_run, "steering", timeout=120)
    at.selectbox(key="steering_live_map").set_value("remove-refusal/mean-diff")
    at.text_area(key="steering_live_prompt").input("w3 w4 w5")
    at.number_input(key="steering_live_tokens").set_value(6)
    at.button(key="steering_live_button").click().run()
    assert not at.error, [e.value for e in at.error]
    unsteered, steered = [t.value for t in at.text][-2:]
    chat_folder = str(live_run / "models" / "chat")  # remove-refusal steers the chat model
    assert any(f"`{chat_folder}`" in c.value for c in at.caption)
    chat = load_model(str(live_run / "models" / "chat"))
    assert unsteered == steered_responses(chat, ["w3 w4 w5"], None, 0.0, 6)[0]
    assert steered != unsteered  # a vector of norm ~100 at block 1 changes the greedy tokens


def test_live_features_report_a_dictionary_that_cannot_load(live_run, tmp_path):
    import shutil

    broken = Path(shutil.copytree(live_run, tmp_path / "run"))
    (broken / "dictionaries" / "crosscoder" / "weights.safetensors").unlink()
    at = open_page(broken, "latent", latent="0", timeout=120)
    at.button(key="latent_live_button").click().run()
    assert "cannot load the dictionary" in at.error[0].value
    assert "weights.safetensors" in at.error[0].value
