"""TuCo alpha-scaling and crosscoder latents through `interp steer train | generate` and the
evaluation run folder, on tiny models."""

import json

import pytest
from test_steering_cli import invoke
from test_steering_latents import crosscoder
from test_steering_training import word_texts
from tiny_models import save_tiny, tiny_pair
from typer.testing import CliRunner

from crosscoders.io import save_crosscoder
from interp.cli.main import app
from interp.errors import InterpError
from steering.evaluate import EvalConfig, perplexity, run_evaluation
from steering.latent_steering import LatentSteeringMap
from steering.steering_map import load_map
from steering.tuco_scaling import TuCoScalingMap


@pytest.fixture(scope="module")
def pair_folders(tmp_path_factory):
    """The tiny pair saved as HF folders, and a crosscoder whose sources name those folders."""
    folder = tmp_path_factory.mktemp("pair")
    pair = tiny_pair("gemma3")
    base, chat = save_tiny(pair.base, folder / "base"), save_tiny(pair.chat, folder / "chat")
    pair.base.spec, pair.chat.spec = str(base), str(chat)
    coder = save_crosscoder(crosscoder(pair), folder / "crosscoder")
    return str(base), str(chat), str(coder)


def generate(map_dir, base, chat, *options):
    lines = invoke(
        "steer", "generate", str(map_dir), "--prompt", "w1 w2 w3", "--base", base, "--chat", chat,
        "--max-new-tokens", "4", *options,
    ).splitlines()  # fmt: skip
    return json.loads(lines[-1])


def test_train_tuco_without_texts_then_generate_loads_the_other_model(tmp_path, pair_folders):
    base, chat, _ = pair_folders
    out = tmp_path / "tuco"
    summary = json.loads(
        invoke(
            "steer", "train", "--method", "tuco", "--out", str(out), "--base", base, "--chat", chat
        )
    )
    assert summary["sites"] == 4 and summary["active_sites"] == 4
    steering_map = load_map(out)
    assert isinstance(steering_map, TuCoScalingMap)
    assert steering_map.companion["spec"] == base and steering_map.steered["spec"] == chat
    line = generate(out, base, chat, "--strength", "1.0")
    assert set(line) == {"prompt", "plain", "steered"}


def test_train_latents_then_generate_inverse(tmp_path, pair_folders):
    base, chat, coder = pair_folders
    (tmp_path / "source.txt").write_text("\n".join(word_texts(0, 29, 8, seed=0)))
    (tmp_path / "target.txt").write_text("\n".join(word_texts(50, 79, 8, seed=1)))
    out = tmp_path / "latents"
    common = ["--source", str(tmp_path / "source.txt"), "--target", str(tmp_path / "target.txt")]
    common += ["--base", base, "--chat", chat, "--n", "8", "--out", str(out), "--method", "latents"]
    result = CliRunner().invoke(app, ["steer", "train", *common])
    assert result.exit_code != 0 and "needs option(s) ['crosscoder']" in str(result.exception)
    assert not out.exists()  # refused before anything is written
    summary = json.loads(
        invoke("steer", "train", *common, "--crosscoder", coder, "--n-latents", "3")
    )
    assert summary["sites"] == 1
    steering_map = load_map(out)
    assert isinstance(steering_map, LatentSteeringMap) and len(steering_map.latents) == 3
    assert steering_map.crosscoder["source"]["model"] == chat and steering_map.mode == "clamp"
    assert set(generate(out, base, chat, "--invert", "--strength", "2")) == {
        "prompt", "plain", "steered",
    }  # fmt: skip


def test_evaluation_includes_tuco_and_latents(tmp_path):
    pair = tiny_pair("gemma3")
    save_crosscoder(crosscoder(pair), tmp_path / "coder")  # sources named by the in-memory specs
    recipes = {"harmful": (0, 29), "chat-benign": (50, 79), "wiki": (30, 49)}

    def load_texts(recipe: str, split: str) -> list[str]:
        first, last = recipes[recipe]
        return word_texts(first, last, 24, seed=0 if split == "train" else 1)

    with pytest.raises(InterpError, match="crosscoder"):
        EvalConfig(methods=["latents"])
    config = EvalConfig(
        methods=["tuco", "latents"],
        n=8,
        n_eval=4,
        n_perplexity=3,
        max_new_tokens=3,
        strengths={"tuco": [0.0, 1.0], "latents": [0.0, 4.0]},
        latents={"crosscoder": str(tmp_path / "coder"), "n_latents": 2},
    )
    table = run_evaluation(
        pair,
        config,
        tmp_path / "run",
        load_texts,
        judge=lambda response: "w5" in response,
        progress=lambda _: None,
    )
    assert len(table) == 2 * 2 * 2
    maps = tmp_path / "run" / "maps"
    tuco_map = load_map(maps / "induce-refusal" / "tuco")
    assert isinstance(tuco_map, TuCoScalingMap) and tuco_map.steered["role"] == "base"
    latent_map = load_map(maps / "remove-refusal" / "latents")
    assert isinstance(latent_map, LatentSteeringMap)
    assert latent_map.crosscoder["source"]["name"] == "chat"
    assert load_map(maps / "induce-refusal" / "latents").crosscoder["source"]["name"] == "base"
    wiki = load_texts("wiki", "heldout")[: config.n_perplexity]
    unsteered = table[(table.strength == 0) & (table.task == "remove-refusal")]
    assert unsteered.perplexity.iloc[0] == pytest.approx(perplexity(pair.chat, wiki), rel=1e-6)
    # full-strength TuCo on remove-refusal: the chat model's blocks replaced by the base model's
    tuco_full = table[
        (table.method == "tuco") & (table.strength == 1) & (table.task == "remove-refusal")
    ]
    assert tuco_full.perplexity.iloc[0] != pytest.approx(unsteered.perplexity.iloc[0], rel=1e-3)
    assert (table[table.strength > 0].perplexity != unsteered.perplexity.iloc[0]).all()
