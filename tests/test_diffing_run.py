"""The whole analysis on a tiny pair: a real activation cache, a crosscoder with planted base-only
and chat-only latents, `analyze` writing the run-folder layout the app reads."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.cache_pass import pair_sources
from crosscoders.diffing.examples import ExampleSettings
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.run import AnalysisConfig, analyze
from crosscoders.io import save_crosscoder
from interp.cache import ActivationCache, InMemorySource, build_cache, cache_config
from interp.cli.main import app
from interp.errors import InterpError
from interp.fileio import atomic_write_json

LAYER = 1
DICT_SIZE = 48
N_CHAT_ONLY = 6
N_BASE_ONLY = 4


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(f"w{i}" for i in rng.integers(0, 80, n))


def _crosscoder(cache: ActivationCache) -> CrossCoder:
    """Random relu_l1 crosscoder; latents [0, N_CHAT_ONLY) decode only into chat, the next
    N_BASE_ONLY only into base; inputs scaled as the trainer would."""
    d = cache.d_model
    config = CrossCoderConfig(
        n_sources=2,
        d_model=d,
        dict_size=DICT_SIZE,
        activation="relu_l1",
        sources=[Source(cache.models[0], LAYER, "base"), Source(cache.models[1], LAYER, "chat")],
    )
    coder = CrossCoder(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        coder.W_enc.copy_(torch.randn(2, d, DICT_SIZE, generator=generator) / d**0.5)
        coder.b_enc.fill_(-0.3)
        coder.W_dec.copy_(torch.randn(2, DICT_SIZE, d, generator=generator) / d**0.5)
        coder.W_dec[0, :N_CHAT_ONLY] = 0
        coder.W_dec[1, N_CHAT_ONLY : N_CHAT_ONLY + N_BASE_ONLY] = 0
        sources = pair_sources(cache, LAYER)
        coder.input_scale.copy_(cache.normalization_scales()[sources])
    return coder.eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tiny_models import save_tiny, tiny_pair

    from interp.models import load_pair

    models = tmp_path_factory.mktemp("models")
    tiny = tiny_pair()
    # specs are folders, so that `interp analyze` can load the pair named in the cache
    pair = load_pair(
        str(save_tiny(tiny.base, models / "base")), str(save_tiny(tiny.chat, models / "chat"))
    )
    rng = np.random.default_rng(0)
    source = InMemorySource(
        plain={"wiki": [_words(rng, 20) for _ in range(40)]},
        chats={"chat": [(_words(rng, 6), _words(rng, 10)) for _ in range(40)]},
    )
    run = tmp_path_factory.mktemp("run")
    config = cache_config(
        pair, [LAYER], "wiki:0.5,chat:0.5", n_tokens=900, ctx=24, dtype="fp32", shard_tokens=256
    )
    build_cache(pair, config, run / "cache", source=source, progress=False)
    cache = ActivationCache(run / "cache")
    save_crosscoder(_crosscoder(cache), run / "dictionaries" / "tiny")
    atomic_write_json(
        run / "run.json",
        {
            "name": "tiny",
            "base": pair.base.spec,
            "chat": pair.chat.spec,
            "layer": LAYER,
            "steps": {"cache": "cache"},
        },
    )
    settings = ExampleSettings(
        n_top=3,
        quantiles=(0.5,),
        n_per_quantile=1,
        sample_size=8,
        window_before=3,
        window_after=2,
        hist_bins=5,
    )
    analysis = AnalysisConfig(
        batch_size=128, examples=settings, n_prompts=2, max_new_tokens=5, max_logit_latents=20
    )
    analyze(run, "tiny", analysis, pair_loader=lambda: pair, prompts=["w1 w2 w3", "w7 w8"])
    return run


def test_analysis_writes_the_run_folder_contract(run_dir):
    out = run_dir / "analysis" / "tiny"
    for name in [
        "config.json",
        "latents.parquet",
        "examples.parquet",
        "tokens.json",
        "decoder_logits.parquet",
        "neighbors.parquet",
        "activation_hist.parquet",
        "causal.json",
        "token_shift.parquet",
        "report.md",
        "summary.json",
        "figures/rel_norm_hist.png",
        "figures/cosine_hist.png",
        "figures/nu_scatter.png",
    ]:
        assert (out / name).is_file(), name
    latents = pd.read_parquet(out / "latents.parquet")
    assert len(latents) == DICT_SIZE and list(latents["latent"]) == list(range(DICT_SIZE))
    assert (latents["latent_class"][:N_CHAT_ONLY] == "chat-only").all()
    base_only = slice(N_CHAT_ONLY, N_CHAT_ONLY + N_BASE_ONLY)
    assert (latents["latent_class"][base_only] == "base-only").all()
    assert np.allclose(latents["rel_norm"][:N_CHAT_ONLY], 1.0)
    # chat-only latents: base's reconstruction holds none of their direction
    fired = latents["max_act"] > 0
    assert fired[:N_CHAT_ONLY].any()
    chat_only_fired = latents[:N_CHAT_ONLY][fired[:N_CHAT_ONLY]]
    assert np.isfinite(chat_only_fired["beta_r_chat"]).all()
    examples = pd.read_parquet(out / "examples.parquet")
    tokens = json.loads((out / "tokens.json").read_text())["token_strings"]
    for row in examples.itertuples():
        assert len(row.token_ids) == len(row.acts) == len(row.acts_base)
        # the example's own token carries its recorded activation
        assert abs(row.acts[row.max_index] - row.activation) < 1e-4 * max(1.0, row.activation)
        assert all(str(t) in tokens for t in row.token_ids)
    top = examples[examples["kind"] == "top"]
    assert (
        top.groupby("latent")["activation"]
        .max()
        .round(5)
        .equals(latents.set_index("latent").loc[top["latent"].unique(), "max_act"].round(5))
    )
    hist = pd.read_parquet(out / "activation_hist.parquet")
    freq_tokens = latents.set_index("latent")["freq"]
    n_tokens = ActivationCache(run_dir / "cache").n_tokens
    for row in hist.itertuples():
        assert int(row.counts.sum()) == round(freq_tokens[row.latent] * n_tokens)
    causal = {row["latent_set"]: row for row in json.loads((out / "causal.json").read_text())}
    assert causal["none"]["paper_rule"]  # the planted chat-only latents give halves
    assert causal["none"]["n_candidates"] >= 2
    assert set(causal) == {
        "none",
        "all",
        "chat_error",
        "latent_scaling_best_half",
        "latent_scaling_worst_half",
        "rel_norm_best_half",
        "rel_norm_worst_half",
        "random_candidates",
        "random_latents",
    }
    shift = pd.read_parquet(out / "token_shift.parquet")  # one row per response token
    first_k, rest = causal["none"]["n_tokens_first_k"], causal["none"]["n_tokens_rest"]
    assert first_k > 0 and rest > 0 and first_k + rest == len(shift)
    assert set(shift["shift"]) <= {"unshifted", "marginal", "shifted"}
    neighbors = pd.read_parquet(out / "neighbors.parquet")
    assert (neighbors["latent"] != neighbors["neighbor"]).all()
    logits = pd.read_parquet(out / "decoder_logits.parquet")
    assert set(logits["model"]) == {"base", "chat"} and len(logits) == 2 * 20
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["steps"]["analysis/tiny"] == "analysis/tiny"


def test_subset_frequencies_partition_the_stream(run_dir):
    latents = pd.read_parquet(run_dir / "analysis" / "tiny" / "latents.parquet")
    cache = ActivationCache(run_dir / "cache")
    found = cache.tokens(np.arange(cache.n_tokens))
    # the cache holds chat and wiki sequences; frequencies are weighted means of the subsets
    seq_ids = found["seq_ids"].numpy()
    assert len(np.unique(seq_ids)) > 2
    assert latents["freq_wiki"].notna().all() and latents["freq_chat"].notna().all()
    assert latents["freq_template"].notna().all()
    assert (latents["freq"] <= np.maximum(latents["freq_wiki"], latents["freq_chat"]) + 1e-9).all()
    assert (latents["freq"] >= np.minimum(latents["freq_wiki"], latents["freq_chat"]) - 1e-9).all()


def test_latent_scaling_on_real_cache_matches_bruteforce_lstsq(run_dir):
    cache = ActivationCache(run_dir / "cache")
    dictionary = PairDictionary.from_coder(_load(run_dir))
    x = cache.gather(np.arange(cache.n_tokens))[:, pair_sources(cache, LAYER)].double()
    coder = dictionary.coder.double()
    dictionary.coder = coder
    f = dictionary.encode(x)
    # Latent Scaling is read in the coder's units (issue 15): scaled activations, the coder's own
    # reconstruction and decoder vectors
    x = dictionary.scale(x)
    x_hat = dictionary.decode_scaled(f)
    W = dictionary.W_dec
    assert (dictionary.coder.input_scale != 1).all()  # the two unit systems differ here
    latents = pd.read_parquet(run_dir / "analysis" / "tiny" / "latents.parquet")
    checked = 0
    for j in np.flatnonzero(latents["max_act"].to_numpy() > 0)[:16]:
        if latents["norm_chat"][j] == 0:  # base-only latent: no chat regressor, beta undefined
            assert np.isnan(latents["beta_r_base"][j]) and np.isnan(latents["nu_eps"][j])
            continue
        regressor = (f[:, j, None] * W[1, j]).reshape(-1, 1)
        for m, model in enumerate(("base", "chat")):
            targets = {"r": x_hat[:, m], "eps": x[:, m] - (x_hat[:, m] - f[:, j, None] * W[m, j])}
            for kind, target in targets.items():
                want = torch.linalg.lstsq(regressor, target.reshape(-1, 1)).solution[0, 0]
                got = latents[f"beta_{kind}_{model}"][j]
                assert abs(got - float(want)) < 1e-4 * max(1.0, abs(float(want))), (j, model, kind)
                checked += 1
    assert checked >= 4 * 5


def _load(run_dir):
    from crosscoders.io import load_crosscoder

    return load_crosscoder(run_dir / "dictionaries" / "tiny")


def test_analysis_refuses_a_different_config(run_dir):
    with pytest.raises(InterpError, match="different config"):
        analyze(run_dir, "tiny", AnalysisConfig(batch_size=64), pair_loader=lambda: None)
    # the models' dtype (resolved: auto is fp32 on the CPU) is part of the config
    recorded = json.loads((run_dir / "analysis" / "tiny" / "config.json").read_text())
    assert recorded["model_dtype"] == "fp32"
    with pytest.raises(InterpError, match=r"model_dtype \(recorded 'fp32', now 'bf16'\)"):
        analyze(run_dir, "tiny", pair_loader=lambda: None, model_dtype="bf16")


def test_cli_analyze_runs_selected_units(run_dir, tmp_path):
    from typer.testing import CliRunner

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("analysis"))
    args = [
        "analyze",
        str(copy),
        "--tokens",
        "300",
        "--batch-size",
        "64",
        "--units",
        "latents,examples,report",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = copy / "analysis" / "tiny"
    printed = result.output[result.output.rindex('{"out"') :]  # after the progress bars
    assert json.loads(printed)["out"] == str(out)
    assert (out / "latents.parquet").is_file() and (out / "report.md").is_file()
    assert not (out / "causal.json").exists()
    examples = pd.read_parquet(out / "examples.parquet")
    assert len(examples) > 0


def test_comparison_table_lists_each_dictionary(run_dir):
    from crosscoders.diffing.report import write_comparison

    path = write_comparison(run_dir, ["tiny"])
    text = path.read_text()
    summary = json.loads((run_dir / "analysis" / "tiny" / "summary.json").read_text())
    assert "| metric | tiny |" in text
    assert f"| chat-only | {summary['classes']['chat-only']} |" in text
    assert "| fve_typical_base |" in text and "| n_massive_tokens |" in text
    with pytest.raises(InterpError, match="no analysis"):
        write_comparison(run_dir, ["missing"])


def test_analysis_refuses_models_other_than_the_cached_ones(run_dir, tmp_path):
    from tiny_models import tiny_pair

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("analysis"))
    other = tiny_pair("gemma3")
    with torch.no_grad():
        next(other.chat.model.parameters()).add_(1.0)
    with pytest.raises(InterpError, match="other weights"):
        analyze(copy, "tiny", AnalysisConfig(), units=("token_shift",), pair_loader=lambda: other)


def test_cli_analyze_and_dict_eval_load_the_models_in_model_dtype(run_dir, tmp_path, monkeypatch):
    """auto is float32 on the CPU, bf16 bfloat16. The cache ran float32 models whose values a
    bf16 load rounds: that analysis is refused, naming --model-dtype; dict eval splices in bf16."""
    from tiny_models import loaded_dtypes
    from typer.testing import CliRunner

    (tmp_path / "texts.txt").write_text("w1 w2 w3 w4 w5\nw6 w7 w8 w9\n")
    for model_dtype, expected in (("auto", torch.float32), ("bf16", torch.bfloat16)):
        copy = tmp_path / model_dtype
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("analysis"))
        dictionary = copy / "dictionaries" / "tiny"
        analyze_args = ["analyze", str(copy), "--tokens", "300", "--batch-size", "64"]
        analyze_args += ["--units", "latents,decoder_views"]
        eval_args = ["dict", "eval", str(dictionary), "--cache", str(copy / "cache")]
        eval_args += ["--tokens", "256", "--texts-file", str(tmp_path / "texts.txt"), "--ctx", "8"]
        dtypes = loaded_dtypes(monkeypatch)
        analysis = CliRunner().invoke(app, [*analyze_args, "--model-dtype", model_dtype])
        evaluation = CliRunner().invoke(app, [*eval_args, "--model-dtype", model_dtype])
        assert evaluation.exit_code == 0, evaluation.output
        splice = json.loads((dictionary / "eval.json").read_text())["splice"]
        assert all(np.isfinite(list(metrics.values())).all() for metrics in splice.values())
        assert dtypes == [expected] * 4  # the analysis's pair, then the dictionary's two models
        if model_dtype == "auto":
            assert analysis.exit_code == 0, analysis.output
            assert (copy / "analysis" / "tiny" / "decoder_logits.parquet").is_file()
        else:
            message = str(analysis.exception)
            assert "in bf16 has other weights" in message
            assert "the cache ran the models in fp32: --model-dtype fp32" in message


def test_same_weights_compares_in_the_cache_models_dtype(tmp_path):
    """A model loaded in float32 matches the fingerprint of its bf16 load (the cast rounds as the
    bf16 load did); a bf16 load cannot match float32 values it rounded; other weights never."""
    from tiny_models import save_tiny, tiny_model

    from crosscoders.diffing.run import same_weights
    from interp.fingerprint import model_fingerprint
    from interp.models import load_model

    folder = save_tiny(tiny_model(), tmp_path / "model")
    wide, narrow = load_model(str(folder), "fp32").model, load_model(str(folder), "bf16").model
    assert same_weights(wide, model_fingerprint(narrow))
    assert same_weights(narrow, model_fingerprint(narrow))
    assert not same_weights(narrow, model_fingerprint(wide))
    with torch.no_grad():
        next(wide.parameters()).add_(1.0)
    assert not same_weights(wide, model_fingerprint(narrow))
