"""`interp adl`, `interp diff-sae`, `interp change-profile`, `interp evaluate-diffing`: the
diffing methods with known answers and their score (crosscoders.diffing.{adl, difference_sae,
change_profile, evaluate}). This layer only parses and calls."""

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import DeviceOption
from interp.errors import InterpError

DTYPES = ("auto", "float32", "bfloat16")


def floats(text: str, name: str) -> list[float]:
    """`"0.5,1,2"` -> [0.5, 1.0, 2.0]; an empty string -> []."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InterpError(f"{name} {text!r}: expected comma-separated numbers") from None


def ints(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InterpError(f"{name} {text!r}: expected comma-separated integers") from None


def load_pair_of(base: str, chat: str, dtype: str, device: str):
    from interp.models import load_pair

    if dtype not in DTYPES:
        raise InterpError(f"unknown dtype {dtype!r}: expected one of {DTYPES}")
    return load_pair(base, chat, dtype=dtype, device=device)


def adl(
    out: Annotated[
        Path,
        typer.Option("--out", callback=check.output_folder, help="results folder (e.g. RUN/adl)"),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec"),
    n_texts: int = typer.Option(2000, callback=check.positive, help="unrelated texts averaged"),
    positions: int = typer.Option(
        5, callback=check.positive, help="k: the first k positions, each read separately"
    ),
    norm_positions: int = typer.Option(
        5, callback=check.positive, help="positions after k giving the typical norm"
    ),
    layer: str = typer.Option("0.5", help="layer of patchscope and steering (int or fraction)"),
    recipe: str = typer.Option("wiki", help="dataset recipe of the unrelated texts"),
    split: str = typer.Option("train", help="split of that recipe"),
    batch_size: int = typer.Option(32, callback=check.positive, help="texts per forward pass"),
    top_tokens: int = typer.Option(20, callback=check.positive, help="tokens kept per reading"),
    patchscope_scales: str = typer.Option("0.5,1,2", help="multiples of the typical norm"),
    steer_strengths: str = typer.Option("0.5,1,2", help="multiples of the typical norm"),
    steer_positions: str = typer.Option(None, help="positions steered with (default: all k)"),
    steer_models: str = typer.Option("chat,base", help="models steered"),
    n_prompts: int = typer.Option(
        8, callback=check.positive, help="neutral prompts generated from"
    ),
    max_new_tokens: int = typer.Option(
        32, callback=check.positive, help="greedy tokens per generation"
    ),
    tuco_alphas: str = typer.Option("2", help="TuCo amplification alphas ('' for none)"),
    dtype: str = typer.Option(
        "float32", callback=check.model_dtype, help="model dtype: fp32 or bf16 (float32, bfloat16)"
    ),
    seed: int = typer.Option(0, help="shuffle of the unrelated texts"),
    device: DeviceOption = "auto",
    overwrite: bool = typer.Option(False, help="replace the results of another config"),
) -> None:
    """Activation Difference Lens: mean h_chat - h_base at the first k positions of unrelated
    text, per layer; logit lens, patchscope, steering, TuCo amplification."""
    from crosscoders.diffing.adl import AdlConfig, run_adl

    config = AdlConfig(
        n_texts=n_texts,
        positions=positions,
        norm_positions=norm_positions,
        layer=layer,
        recipe=recipe,
        split=split,
        batch_size=batch_size,
        top_tokens=top_tokens,
        patchscope_scales=floats(patchscope_scales, "--patchscope-scales"),
        steer_strengths=floats(steer_strengths, "--steer-strengths"),
        steer_positions=ints(steer_positions, "--steer-positions"),
        steer_models=[m.strip() for m in steer_models.split(",") if m.strip()],
        n_prompts=n_prompts,
        max_new_tokens=max_new_tokens,
        tuco_alphas=floats(tuco_alphas, "--tuco-alphas"),
        seed=seed,
    )
    config.validate()
    pair = load_pair_of(base, chat, dtype, device)
    summary = run_adl(pair, out, config, overwrite=overwrite)
    typer.echo(json.dumps({"out": str(out), "timings_s": summary.get("timings_s", {})}))


def diff_sae(
    run: Annotated[Path, typer.Argument(help="run folder holding cache/ (writes RUN/diff-sae)")],
    layer: int = typer.Option(None, help="cached layer (default: the only one)"),
    dict_size: int = typer.Option(2048, callback=check.positive, help="latents"),
    k: int = typer.Option(
        32, callback=check.positive, help="BatchTopK: latents kept per token on average"
    ),
    steps: int = typer.Option(300, callback=check.positive, help="training steps"),
    batch_size: int = typer.Option(512, callback=check.positive, help="tokens per step"),
    lr: float = typer.Option(5e-4, callback=check.positive, help="Adam learning rate"),
    warmup_steps: int = typer.Option(30, callback=check.non_negative, help="linear warm-up steps"),
    n_latents: int = typer.Option(
        50, callback=check.positive, help="top latents read (logit lens, examples)"
    ),
    n_examples: int = typer.Option(
        20, callback=check.positive, help="max-activating examples per top latent"
    ),
    seed: int = typer.Option(0, help="data order and initialisation"),
    overwrite: bool = typer.Option(False, help="replace a dictionary of another config"),
) -> None:
    """Difference SAE: BatchTopK SAE on h_chat - h_base of RUN/cache, its top latents read
    through the fine-tuned model's logit lens and their max-activating examples."""
    from crosscoders.config import Source, TrainingConfig
    from crosscoders.diffing.difference_sae import (
        analyze_difference_sae,
        cache_difference_stream,
        pair_columns,
        train_difference_sae,
    )
    from interp.cache import ActivationCache
    from interp.models import load_model

    cache = ActivationCache(run / "cache")
    pair_columns(cache, layer)  # a cache without both roles or that layer fails here
    chosen = layer if layer is not None else cache.layers[0]
    base, chat = cache.models
    out = run / "diff-sae"
    training = TrainingConfig(
        n_steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        seed=seed,
        log_every=25,
        checkpoint_every=max(50, steps // 4),
    )
    coder = train_difference_sae(
        cache_difference_stream(cache, batch_size, seed, chosen),
        out / "dictionary",
        cache.d_model,
        dict_size,
        k,
        training,
        Source(model=f"{chat} - {base}", layer=chosen, name="chat-base"),
        overwrite=overwrite,
    )
    loaded = load_model(chat)
    analyze_difference_sae(
        coder, cache, loaded.model, loaded.tokenizer, out, n_latents, n_examples, layer=chosen
    )
    typer.echo(str(out))


def change_profile(
    run: Annotated[Path, typer.Argument(help="run folder (writes RUN/change_profile)")],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec"),
    n_texts: int = typer.Option(
        64, callback=check.positive, help="held-out wiki texts of the pass over every layer"
    ),
    n_chats: int = typer.Option(
        64, callback=check.non_negative, help="held-out chat-tune conversations of that pass"
    ),
    ctx: int = typer.Option(64, callback=check.positive, help="tokens per document"),
    batch_size: int = typer.Option(8, callback=check.positive, help="documents per forward pass"),
    dtype: str = typer.Option(
        "float32", callback=check.model_dtype, help="model dtype: fp32 or bf16 (float32, bfloat16)"
    ),
    device: DeviceOption = "auto",
) -> None:
    """||h_chat - h_base|| / ||h_base|| per layer and token class: every layer from a pass over
    held-out wiki texts and chats, the cached layer from RUN/cache when there is one."""
    from crosscoders.diffing.change_profile import (
        markdown,
        profile_from_cache,
        profile_from_pass,
    )
    from crosscoders.diffing.token_subsets import TemplateTokens
    from interp.cache import ActivationCache
    from interp.datasets import load_conversations, load_texts
    from interp.fileio import atomic_write_json, atomic_write_text

    pair = load_pair_of(base, chat, dtype, device)
    texts = load_texts("wiki", "heldout")[:n_texts]
    chats = load_conversations("heldout")[:n_chats] if n_chats else []
    passed = profile_from_pass(pair, texts, chats, ctx, batch_size)
    payload = {
        "base": base,
        "chat": chat,
        "pass": {
            "n_texts": len(texts),
            "n_chats": len(chats),
            "max_tokens": ctx,
            "rows": passed.rows(),
        },
    }
    text = f"Pass over {len(texts)} held-out wiki texts and {len(chats)} chats, every layer:\n\n"
    text += markdown(passed.rows())
    if (run / "cache" / "manifest.json").is_file():
        cache = ActivationCache(run / "cache")
        cached = profile_from_cache(cache, TemplateTokens.from_tokenizer(pair.tokenizer))
        payload["cache"] = {"n_tokens": cache.n_tokens, "rows": cached.rows()}
        text += f"\nThe cache ({cache.n_tokens} tokens), layer {cache.layers}:\n\n"
        text += markdown(cached.rows())
    out = run / "change_profile"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "profile.json", payload)
    atomic_write_text(out / "profile.md", text)
    typer.echo(str(out))


def evaluate_diffing(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="science profile (data/pipelines/science.toml)")],
    out: Annotated[
        Path | None,
        typer.Option(
            callback=check.output_folder, help="run folder (default: the profile's [run] out)"
        ),
    ] = None,
    organisms: str = typer.Option(None, help="comma-separated organisms (default: all)"),
    score_only: bool = typer.Option(False, help="only score the results already there"),
    max_nll: float = typer.Option(
        5.0, callback=check.positive, help="steered generations above this NLL are incoherent"
    ),
    min_distinct: float = typer.Option(
        0.5,
        callback=check.non_negative,
        help="steered generations below this distinct-trigram ratio are degenerate",
    ),
) -> None:
    """Run every diffing method on every organism of the profile and write one table
    (RUN/diffing.json + RUN/diffing.md)."""
    from crosscoders.diffing.science import evaluate
    from interp.cli.pipeline_cmd import check_steps, invoke_interp

    root = ctx.find_root().command
    chosen = [o.strip() for o in organisms.split(",") if o.strip()] if organisms else None
    json_path, md_path = evaluate(
        config,
        partial(check_steps, root),
        partial(invoke_interp, root),
        out,
        chosen,
        score_only,
        max_nll,
        min_distinct,
    )
    typer.echo(json.dumps({"json": str(json_path), "markdown": str(md_path)}))


def register(app: typer.Typer) -> None:
    app.command("adl")(adl)
    app.command("diff-sae")(diff_sae)
    app.command("change-profile")(change_profile)
    app.command("evaluate-diffing")(evaluate_diffing)
