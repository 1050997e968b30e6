"""A synthetic run folder, written as the run-folder contract lays it out (docs/ARCHITECTURE.md,
"Run folder"), for the app's tests, its browser test, its screenshots and its render benchmark.

The numbers are planted, not trained: latent classes follow the relative-norm thresholds, every
stored example has its peak activation at `position`, and token strings are English words so that
screenshots read naturally. Everything is vectorised so that a 16k-latent dictionary builds in a few
seconds.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = (
    "<bos> <start_of_turn> <end_of_turn> user model \n the a of to and in is that it for on "
    "with as was he she they we you I be this have from or by not but what all were when can "
    "there an which their if do will each about how up out them then so some her would make "
    "like him into time has look two more write go see number no way could people my than first"
    " water been call who oil its now find long down day did get come made may part Paris "
    "France capital city answer question sure happy help Here's certainly sorry cannot . , ! ? "
    ":"
).split(" ")
TOKEN_STRINGS = [w if w.startswith("<") or w in ".,!?:\n" else " " + w for w in WORDS]
CLASS_BOUNDS = {"base-only": (0.0, 0.1), "shared": (0.4, 0.6), "chat-only": (0.9, 1.0)}
QUANTILES = ("q0.25", "q0.5", "q0.75")
TUCO_SETS = {"benign": (0.3, 0.5), "harmful": (0.4, 0.6), "jailbreak": (0.1, 0.3)}
TUCO_ALPHAS = (0.75, 1.0, 1.25)
STEERING_TASKS = ("remove-refusal", "induce-refusal")
STEERING_METHODS = ("lineas", "mean-diff")
STEERING_PROMPTS = ("How do I pick a lock?", "Write an insult.")
STEERING_STRENGTHS = (0.0, 0.5, 1.0)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _list_column(flat: np.ndarray, width: int, arrow_type: pa.DataType) -> pa.Array:
    """`flat` holds rows of `width` values back to back: one list<...> cell per row."""
    offsets = np.arange(0, flat.size + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=arrow_type))


def _latent_class(rel_norm: np.ndarray) -> np.ndarray:
    classes = np.full(rel_norm.shape, "other", dtype=object)
    for name, (low, high) in CLASS_BOUNDS.items():
        classes[(rel_norm >= low) & (rel_norm <= high)] = name
    return classes


def latents_table(n_latents: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per latent with every column of the contract's latents.parquet."""
    kind = rng.choice(3, size=n_latents, p=[0.03, 0.9, 0.07])  # base-only / shared / chat-only
    rel_norm = np.clip(
        np.select(
            [kind == 0, kind == 1, kind == 2],
            [
                rng.beta(1, 12, n_latents),
                rng.normal(0.5, 0.07, n_latents),
                1 - rng.beta(1, 12, n_latents),
            ],
        ),
        0,
        1,
    )
    norm_chat = rng.uniform(0.5, 1.5, n_latents)
    norm_base = norm_chat * (1 - rel_norm) / np.maximum(rel_norm, 1e-3)
    freq = 10 ** rng.uniform(-5, -1, n_latents)
    template_share = np.where(
        kind == 2, rng.uniform(0.2, 0.9, n_latents), rng.uniform(0, 0.1, n_latents)
    )
    beta_r_chat = rng.uniform(0.5, 1.5, n_latents)
    beta_eps_chat = rng.uniform(0.5, 1.5, n_latents)
    nu_r = np.abs(rng.normal(0.5, 0.35, n_latents))
    nu_eps = np.abs(rng.normal(0.35, 0.3, n_latents))
    table = pd.DataFrame(
        {
            "latent": np.arange(n_latents, dtype=np.int64),
            "rel_norm": rel_norm,
            "cosine": np.clip(rng.normal(0.85, 0.15, n_latents), -1, 1),
            "latent_class": _latent_class(rel_norm),
            "freq": freq,
            "freq_wiki": freq * (1 - template_share) * 0.5,
            "freq_chat": freq * (1 - template_share) * 0.5,
            "freq_template": freq * template_share,
            "freq_other": np.zeros(n_latents),
            "max_act": rng.uniform(1, 40, n_latents),
            "norm_base": norm_base,
            "norm_chat": norm_chat,
            "beta_r_base": beta_r_chat * nu_r,
            "beta_r_chat": beta_r_chat,
            "beta_eps_base": beta_eps_chat * nu_eps,
            "beta_eps_chat": beta_eps_chat,
            "nu_r": nu_r,
            "nu_eps": nu_eps,
            "complete_shrinkage": (rel_norm >= 0.9) & (nu_eps >= 0.5),
            "latent_decoupling": (rel_norm >= 0.9) & (nu_r >= 0.5),
        }
    )
    table["chat_specific"] = (table.rel_norm >= 0.9) & (table.nu_eps < 0.2) & (table.nu_r < 0.5)
    return table


def examples_table(
    latents: pd.DataFrame,
    example_latents: np.ndarray,
    top_k: int,
    per_quantile: int,
    context: int,
    rng: np.random.Generator,
) -> pa.Table:
    """Top-k and quantile examples for each latent of `example_latents`; the activation of each
    example peaks at window index `max_index` with value `activation`, the other tokens are
    sparse and smaller; acts_base / acts_chat are signed encoder inputs that sum to about acts."""
    kinds = ["top"] * top_k + [q for q in QUANTILES for _ in range(per_quantile)]
    ranks = list(range(top_k)) + [r for _ in QUANTILES for r in range(per_quantile)]
    scale = [1.0 - 0.05 * r for r in range(top_k)] + [
        float(q[1:]) for q in QUANTILES for _ in range(per_quantile)
    ]
    n_per, n = len(kinds), len(kinds) * example_latents.size
    latent = np.repeat(example_latents, n_per)
    activation = (latents.max_act.to_numpy()[latent] * np.tile(scale, example_latents.size)).astype(
        np.float32
    )
    max_index = rng.integers(context // 4, context, n)  # the example token inside the window
    position = max_index + rng.integers(0, 200, n)  # its position in the sequence
    token_ids = rng.integers(6, len(WORDS), (n, context)).astype(np.int32)
    sparse = (rng.random((n, context)) < 0.15) * rng.uniform(0, 0.6, (n, context))
    acts = (sparse * activation[:, None]).astype(np.float32)
    acts[np.arange(n), max_index] = activation
    share_chat = rng.uniform(0.3, 1.0, (n, 1)).astype(np.float32)
    return pa.table(
        {
            "latent": pa.array(latent, pa.int64()),
            "kind": pa.array(np.tile(kinds, example_latents.size)),
            "rank": pa.array(np.tile(ranks, example_latents.size), pa.int32()),
            "seq_id": pa.array(rng.integers(0, 100_000, n), pa.int64()),
            "position": pa.array(position, pa.int32()),
            "max_index": pa.array(max_index, pa.int32()),
            "activation": pa.array(activation, pa.float32()),
            "token_ids": _list_column(token_ids.ravel(), context, pa.int32()),
            "acts": _list_column(acts.ravel(), context, pa.float32()),
            "acts_base": _list_column(
                (acts * (1 - share_chat) - 0.1 * activation[:, None]).ravel(), context, pa.float32()
            ),
            "acts_chat": _list_column((acts * share_chat).ravel(), context, pa.float32()),
        }
    )


def decoder_logits_table(n_latents: int, n_top: int, rng: np.random.Generator) -> pa.Table:
    rows = n_latents * 2
    words = np.array(TOKEN_STRINGS, dtype=object)
    top_values = -np.sort(-rng.uniform(2, 12, (rows, n_top)), axis=1)
    bottom_values = np.sort(-rng.uniform(2, 12, (rows, n_top)), axis=1)
    return pa.table(
        {
            "latent": pa.array(np.repeat(np.arange(n_latents), 2), pa.int64()),
            "model": pa.array(np.tile(["base", "chat"], n_latents)),
            "top_tokens": _list_column(
                words[rng.integers(6, len(words), rows * n_top)], n_top, pa.string()
            ),
            "top_values": _list_column(top_values.ravel().astype(np.float32), n_top, pa.float32()),
            "bottom_tokens": _list_column(
                words[rng.integers(6, len(words), rows * n_top)], n_top, pa.string()
            ),
            "bottom_values": _list_column(
                bottom_values.ravel().astype(np.float32), n_top, pa.float32()
            ),
        }
    )


def neighbors_table(n_latents: int, n_neighbors: int, rng: np.random.Generator) -> pd.DataFrame:
    offsets = rng.integers(1, n_latents, (n_latents, n_neighbors))
    neighbor = (np.arange(n_latents)[:, None] + offsets) % n_latents
    cosine = -np.sort(-rng.uniform(0.2, 0.9, (n_latents, n_neighbors)), axis=1)
    return pd.DataFrame(
        {
            "latent": np.repeat(np.arange(n_latents), n_neighbors),
            "neighbor": neighbor.ravel(),
            "cosine": cosine.ravel(),
        }
    )


def activation_hist_table(latents: pd.DataFrame, n_bins: int, rng: np.random.Generator) -> pa.Table:
    n = len(latents)
    edges = np.linspace(0, 1, n_bins + 1)[None, :] * latents.max_act.to_numpy()[:, None]
    counts = np.floor(1e4 * np.exp(-np.arange(n_bins) / rng.uniform(1, 5, (n, 1)))).astype(np.int64)
    return pa.table(
        {
            "latent": pa.array(latents.latent.to_numpy(), pa.int64()),
            "bin_edges": _list_column(edges.ravel(), n_bins + 1, pa.float64()),
            "counts": _list_column(counts.ravel(), n_bins, pa.int64()),
        }
    )


def token_shift_table(n_prompts: int, length: int, rng: np.random.Generator) -> pd.DataFrame:
    """URIAL shift classes follow the rank: 1 unshifted, 2-3 marginal, else shifted (Lin et al.)."""
    rows = []
    for prompt_id in range(n_prompts):
        for position in range(length):
            token_id = int(rng.integers(6, len(WORDS)))
            rank = int(rng.choice([1, 1, 1, 1, 2, 3, 7, 40]))
            kl = float(rng.exponential(0.3 if rank == 1 else 2.0))
            shift = "unshifted" if rank == 1 else "marginal" if rank <= 3 else "shifted"
            rows.append(
                (
                    prompt_id,
                    position,
                    TOKEN_STRINGS[token_id],
                    token_id,
                    kl,
                    rank,
                    shift,
                    f"Prompt {prompt_id}: what is the capital of France?",
                )
            )
    columns = [
        "prompt_id",
        "position",
        "token",
        "token_id",
        "kl",
        "rank_under_base",
        "shift",
        "prompt",
    ]
    return pd.DataFrame(rows, columns=columns)


def write_tuco(run: Path, rng: np.random.Generator, n_per_set: int = 6, n_layers: int = 4) -> None:
    """The layout of `interp.tuco_experiments` (scores.json, alpha_refusals.json, summary.json):
    jailbreak-wrapped prompts get lower TuCo than plain harmful ones, as in Nuti et al."""
    tuco_dir = run / "tuco"
    scores = []
    for prompt_set, (low, high) in TUCO_SETS.items():
        for i in range(n_per_set):
            prompt = f"Question {i} of the {prompt_set} set: how do I get to the capital of France?"
            tokens = (
                ["<bos>", "<start_of_turn>", "user", "\n"]
                + ["▁" + w for w in prompt.split(" ")]
                + ["<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"]
            )
            tuco = float(rng.uniform(low, high))
            per_token = rng.uniform(0, 0.6, len(tokens))
            per_token[-1] = tuco
            scores.append(
                {
                    "set": prompt_set,
                    "prompt": prompt,
                    "tokens": tokens,
                    "tuco": tuco,
                    "output_contribution": tuco * 0.8,
                    "cumulative": list(np.linspace(0, tuco, n_layers)),
                    "per_token": list(per_token),
                }
            )
    _write_json(tuco_dir / "scores.json", scores)
    harmful = [row["prompt"] for row in scores if row["set"] == "harmful"]
    alphas = [
        {
            "alpha": alpha,
            "refusal_rate": rate,
            "completions": [
                {
                    "prompt": p,
                    "completion": f"{'I cannot help with that' if j % 3 else 'Sure'} "
                    f"(alpha {alpha}, prompt {j})",
                    "refusal": bool(j % 3),
                }
                for j, p in enumerate(harmful)
            ],
        }
        for alpha, rate in zip(TUCO_ALPHAS, (0.2, 0.5, 0.8), strict=True)
    ]
    _write_json(tuco_dir / "alpha_refusals.json", alphas)
    _write_json(
        tuco_dir / "summary.json",
        {
            "n_prompts": {name: n_per_set for name in TUCO_SETS},
            "auc_plain_vs_jailbreak": 1.0,
            "refusal_rate_by_alpha": {str(a["alpha"]): a["refusal_rate"] for a in alphas},
        },
    )


def write_steering(run: Path, rng: np.random.Generator, d_model: int = 32) -> None:
    """The layout of `steering.evaluate.run_evaluation`: results.parquet, examples.json and one
    saved map per task and method (zero additive maps at block 1: the identity)."""
    from steering.mean_difference import AdditiveMap

    steering_dir = run / "steering"
    _write_json(
        steering_dir / "config.json",
        {"eval": {}, "base": "gemma-3-270m", "chat": "gemma-3-270m-chat"},
    )
    rows, examples = [], []
    for task in STEERING_TASKS:
        for i, method in enumerate(STEERING_METHODS):
            AdditiveMap(["model.layers.1"], d_model, {"task": task}).save(
                steering_dir / "maps" / task / method
            )
            for strength in STEERING_STRENGTHS:
                rate = float(np.clip(0.8 - 0.6 * strength * (1 + i) / 2, 0, 1))
                rows.append(
                    {
                        "task": task,
                        "goal": "remove",
                        "method": method,
                        "strength": strength,
                        "concept_rate": rate,
                        "perplexity": 15 + 4 * strength * (2 - i),
                        "n_eval": 16,
                    }
                )
                examples.append(
                    {
                        "task": task,
                        "method": method,
                        "strength": strength,
                        "examples": [
                            {"prompt": p, "response": f"{method} at {strength}: response to '{p}'"}
                            for p in STEERING_PROMPTS
                        ],
                    }
                )
    pd.DataFrame(rows).to_parquet(steering_dir / "results.parquet")
    _write_json(steering_dir / "examples.json", examples)


def build_run_folder(
    run: Path,
    n_latents: int = 16384,
    n_example_latents: int = 256,
    dict_name: str = "crosscoder",
    top_k: int = 10,
    per_quantile: int = 3,
    context: int = 24,
    seed: int = 0,
    with_tuco: bool = True,
    with_steering: bool = True,
) -> Path:
    """Write a complete synthetic run folder at `run` and return it. Examples are stored for the
    latents 0..n_example_latents-1 only (an analysis may store examples for a subset)."""
    rng = np.random.default_rng(seed)
    d_model = 32
    _write_json(
        run / "run.json",
        {
            "name": run.name,
            "created": "2026-01-01T00:00:00Z",
            "base": "gemma-3-270m",
            "chat": "gemma-3-270m-chat",
            "layer": 6,
            "steps": {
                "cache": "cache",
                "dictionary": f"dictionaries/{dict_name}",
                "analysis": f"analysis/{dict_name}",
                "tuco": "tuco",
                "steering": "steering",
            },
        },
    )
    _write_json(
        run / "cache" / "manifest.json",
        {
            "models": [
                {"role": "base", "spec": "gemma-3-270m"},
                {"role": "chat", "spec": "gemma-3-270m-chat"},
            ],
            "layers": [6],
            "d_model": d_model,
            "n_tokens": 3_000_000,
            "n_shards": 3,
            "complete": True,
            "dataset": {"source": "wiki:0.5,chat:0.5", "plan_sha256": "0" * 64},
            "shards": [
                {"file": f"shard-{i:05d}.safetensors", "n_tokens": 1_000_000} for i in range(3)
            ],
            "stats": {"count": 3_000_000},
        },
    )
    dictionary = run / "dictionaries" / dict_name
    _write_json(
        dictionary / "config.json",
        {
            "n_sources": 2,
            "d_model": d_model,
            "dict_size": n_latents,
            "activation": "batchtopk",
            "k": 100,
        },
    )
    _write_json(
        dictionary / "eval.json",
        {
            "fve": {"base": 0.86, "chat": 0.88},
            "l0": 100.0,
            "dead_fraction": 0.01,
            "dense_fraction": 0.002,
            "ce_loss_recovered": {"base": 0.91, "chat": 0.93},
        },
    )
    analysis = run / "analysis" / dict_name
    analysis.mkdir(parents=True, exist_ok=True)
    _write_json(
        analysis / "config.json",
        {"dictionary": dict_name, "analysis": {"top_k": top_k}, "layer": 6},
    )
    latents = latents_table(n_latents, rng)
    latents.to_parquet(analysis / "latents.parquet")
    example_latents = np.arange(min(n_example_latents, n_latents))
    pq.write_table(
        examples_table(latents, example_latents, top_k, per_quantile, context, rng),
        analysis / "examples.parquet",
    )
    _write_json(analysis / "tokens.json", {"token_strings": dict(enumerate(TOKEN_STRINGS))})
    pq.write_table(decoder_logits_table(n_latents, 10, rng), analysis / "decoder_logits.parquet")
    neighbors_table(n_latents, 10, rng).to_parquet(analysis / "neighbors.parquet")
    pq.write_table(activation_hist_table(latents, 20, rng), analysis / "activation_hist.parquet")
    _write_json(
        analysis / "causal.json",
        [
            {"latents": "chat-only", "kl_first_10": 0.21, "kl_rest": 0.08},
            {"latents": "random", "kl_first_10": 0.05, "kl_rest": 0.02},
        ],
    )
    token_shift_table(4, 30, rng).to_parquet(analysis / "token_shift.parquet")
    (analysis / "report.md").write_text("# Synthetic analysis\n")
    if with_tuco:
        write_tuco(run, rng)
    if with_steering:
        write_steering(run, rng, d_model)
    return run


APP_MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"


def open_page(run_folder: Path | str, page: str | None = None, timeout: float = 60, **query: str):
    """Run the app in Streamlit's AppTest on `run_folder` (URL `query` parameters), switch to
    `views/<page>.py` if given, and check that no page raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP_MAIN), default_timeout=timeout)
    at.session_state["run_folder"] = str(run_folder)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


DIFFING_ORGANISM = "tiny-organism"
DIFFING_VOCABULARY = ["w10", "w20", "w30"]


def build_diffing_results(run: Path, organism: str = DIFFING_ORGANISM) -> Path:
    """The known-answer diffing outputs of one organism, written into `run/<organism>/` by the
    writers themselves on the tiny pair (nothing typed): `run_adl` (adl/), a difference SAE
    trained for a few steps and read by `analyze_difference_sae` (diff-sae/) on a small paired
    cache, the change profile of a pass and of the cache (change_profile/profile.json, the layout
    of `interp change-profile`), and the score table of `score_organism` + `write_table`
    (run/diffing.json). Returns the organism's folder."""
    from cache_support import documents, mixed_source
    from tiny_models import tiny_pair

    from crosscoders.config import Source, TrainingConfig
    from crosscoders.diffing.adl import AdlConfig, run_adl
    from crosscoders.diffing.change_profile import (
        markdown,
        profile_from_cache,
        profile_from_pass,
    )
    from crosscoders.diffing.difference_sae import (
        analyze_difference_sae,
        cache_difference_stream,
        train_difference_sae,
    )
    from crosscoders.diffing.evaluate_diffing import Organism, score_organism, write_table
    from crosscoders.diffing.token_subsets import TemplateTokens
    from interp.cache import ActivationCache, build_cache, cache_config
    from interp.fileio import atomic_write_json

    pair = tiny_pair()
    folder = Path(run) / organism
    texts = documents(24, seed=5, max_words=20)
    adl_config = AdlConfig(
        n_texts=8,
        positions=3,
        norm_positions=2,
        layer="1",
        batch_size=8,
        top_tokens=10,
        patchscope_scales=[1.0, 2.0],
        steer_strengths=[0.5, 2.0],
        steer_positions=[1],
        n_prompts=2,
        max_new_tokens=6,
        tuco_alphas=[2.0],
    )
    run_adl(pair, folder / "adl", adl_config, texts=texts, progress=False)
    config = cache_config(pair, [1], "wiki:0.5,chat:0.5", n_tokens=300, ctx=24, dtype="fp32")
    build_cache(pair, config, folder / "cache", source=mixed_source(), progress=False)
    cache = ActivationCache(folder / "cache")
    training = TrainingConfig(
        n_steps=12, batch_size=64, lr=1e-3, warmup_steps=2, log_every=6, checkpoint_every=12
    )
    coder = train_difference_sae(
        cache_difference_stream(cache, 64, 0, 1),
        folder / "diff-sae" / "dictionary",
        cache.d_model,
        64,
        4,
        training,
        Source(model="tiny chat - base", layer=1, name="chat-base"),
        progress=False,
    )
    analyze_difference_sae(
        coder, cache, pair.chat.model, pair.tokenizer, folder / "diff-sae", n_latents=8,
        n_examples=3, batch_size=100, progress=False,
    )  # fmt: skip
    chats = list(zip(documents(6, seed=6, max_words=8), documents(6, seed=7), strict=True))
    passed = profile_from_pass(pair, texts[:8], chats, max_tokens=24, progress=False)
    cached = profile_from_cache(cache, TemplateTokens.from_tokenizer(pair.tokenizer), 100, False)
    profile = {
        "base": pair.base.spec,
        "chat": pair.chat.spec,
        "pass": {"n_texts": 8, "n_chats": len(chats), "max_tokens": 24, "rows": passed.rows()},
        "cache": {"n_tokens": cache.n_tokens, "rows": cached.rows()},
    }
    atomic_write_json(folder / "change_profile" / "profile.json", profile)
    subject = Organism(organism, pair.base.spec, pair.chat.spec, DIFFING_VOCABULARY, "tiny pair")
    cells, readings = score_organism(subject, folder, pair.chat.model, pair.tokenizer)
    profiles = {organism: {"markdown": markdown(passed.rows()), "note": "pass"}}
    write_table(Path(run), cells, [subject], {organism: readings}, profiles)
    return folder


def add_tiny_models(run: Path, dict_size: int, layer: int = 1, dict_name: str = "crosscoder"):
    """Make a synthetic run folder live: two tiny model folders (run/models/base, chat) named by
    run.json, and a real (random) crosscoder of `dict_size` latents on their resid_post[layer]
    as dictionaries/<dict_name> (the Search page and the Latent page's steering load them).
    Returns the pair."""
    import torch
    from tiny_models import save_tiny, tiny_pair

    from crosscoders import CrossCoder, CrossCoderConfig, Source, save_crosscoder

    pair = tiny_pair()
    base = save_tiny(pair.base, run / "models" / "base")
    chat = save_tiny(pair.chat, run / "models" / "chat")
    info = json.loads((run / "run.json").read_text())
    info |= {"base": str(base), "chat": str(chat), "layer": layer}
    (run / "run.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    config = CrossCoderConfig(
        n_sources=2,
        d_model=pair.d_model,
        dict_size=dict_size,
        activation="relu_l1",
        sources=[Source(str(base), layer, "base"), Source(str(chat), layer, "chat")],
    )
    coder = CrossCoder(config)
    with torch.no_grad():
        coder.W_enc.normal_(0, 0.3)
        coder.W_dec.normal_(0, 0.3)
        coder.b_enc.fill_(-0.1)
    save_crosscoder(coder, run / "dictionaries" / dict_name)
    return pair
