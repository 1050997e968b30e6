"""`interp adl`, `interp diff-sae`, `interp change-profile`, `interp evaluate-diffing`: the
diffing methods with known answers and their score (crosscoders.diffing.{adl, difference_sae,
change_profile, evaluate}). This layer only parses and calls."""

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.errors import InterpError

DTYPES = ("float32", "bfloat16")


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


def load_pair_of(base: str, chat: str, dtype: str):
    import torch

    from interp.models import load_pair

    if dtype not in DTYPES:
        raise InterpError(f"unknown dtype {dtype!r}: expected one of {DTYPES}")
    return load_pair(base, chat, dtype=getattr(torch, dtype))


def adl(
    out: Annotated[Path, typer.Option("--out", help="results folder (e.g. RUN/adl)")],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="fine-tuned model spec"),
    n_texts: int = typer.Option(2000, help="unrelated texts averaged"),
    positions: int = typer.Option(5, help="k: the first k positions, each read separately"),
    norm_positions: int = typer.Option(5, help="positions after k giving the typical norm"),
    layer: str = typer.Option("0.5", help="layer of patchscope and steering (int or fraction)"),
    recipe: str = typer.Option("wiki", help="dataset recipe of the unrelated texts"),
    split: str = typer.Option("train", help="split of that recipe"),
    batch_size: int = typer.Option(32, help="texts per forward pass"),
    top_tokens: int = typer.Option(20, help="tokens kept per reading"),
    patchscope_scales: str = typer.Option("0.5,1,2", help="multiples of the typical norm"),
    steer_strengths: str = typer.Option("0.5,1,2", help="multiples of the typical norm"),
    steer_positions: str = typer.Option(None, help="positions steered with (default: all k)"),
    steer_models: str = typer.Option("chat,base", help="models steered"),
    n_prompts: int = typer.Option(8, help="neutral prompts generated from"),
    max_new_tokens: int = typer.Option(32, help="greedy tokens per generation"),
    tuco_alphas: str = typer.Option("2", help="TuCo amplification alphas ('' for none)"),
    dtype: str = typer.Option("float32", help="float32 or bfloat16"),
    seed: int = typer.Option(0, help="shuffle of the unrelated texts"),
    force: bool = typer.Option(False, help="redo the results of another config"),
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
    pair = load_pair_of(base, chat, dtype)
    summary = run_adl(pair, out, config, force=force)
    typer.echo(json.dumps({"out": str(out), "timings_s": summary.get("timings_s", {})}))


def register(app: typer.Typer) -> None:
    app.command("adl")(adl)
