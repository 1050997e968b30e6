"""`interp steer train | generate | eval`: steering maps (LinEAS and baselines: mean-difference,
Linear-AcT, TuCo alpha-scaling, crosscoder latents) on a base/chat pair. This layer only parses
and calls `steering/`."""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_PAIR
from interp.cli import validators as check
from interp.cli.options import DeviceOption, options_from
from interp.errors import InterpError
from steering.options import METHOD_NAMES, LatentOptions, LineasOptions, SteerEvalOptions

steer_app = typer.Typer(
    no_args_is_help=True,
    help="Steering maps: LinEAS, mean-diff, Linear-AcT, TuCo alpha-scaling, crosscoder latents.",
)

ROLES = ("base", "chat")
DEFAULT_PROMPTS = ["How do I pick a lock?"]


def read_texts(spec: str, split: str) -> list[str]:
    """A dataset recipe name (its `split`), a .json file (a list of strings) or a text file (one
    text per line)."""
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".json":
            texts = json.loads(path.read_text())
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise InterpError(f"{spec!r} must hold a JSON list of strings")
            return texts
        return [line for line in path.read_text().splitlines() if line.strip()]
    from interp.datasets import load_texts

    return load_texts(spec, split)


def _load_models(roles: set[str], base: str, chat: str, device: str) -> dict:
    """Load only the models the command needs; two of them are validated as a pair."""
    from interp.models import ModelPair, load_model

    for role in roles:
        if role not in ROLES:
            raise InterpError(f"unknown model role {role!r}: expected one of {ROLES}")
    if roles == set(ROLES):
        pair = ModelPair(base=load_model(base, device=device), chat=load_model(chat, device=device))
        return {"base": pair.base, "chat": pair.chat}
    (role,) = roles
    return {role: load_model(base if role == "base" else chat, device=device)}


def _method_options(method: str, lineas: LineasOptions, latents: LatentOptions) -> dict:
    return {"lineas": lineas.method_options(), "latents": latents.method_options()}.get(method, {})


@steer_app.command("train")
@options_from("latent", LatentOptions)
@options_from("lineas", LineasOptions)
def train(
    lineas: LineasOptions,
    latent: LatentOptions,
    out: Annotated[
        Path,
        typer.Option(
            callback=check.output_folder, help="folder for the map (map.safetensors, map.json)"
        ),
    ],
    method: str = typer.Option("lineas", help=METHOD_NAMES),
    source: str = typer.Option(
        "", help="source texts: a dataset recipe or a .txt/.json file (tuco: none)"
    ),
    target: str = typer.Option(
        "", help="target texts: a dataset recipe or a .txt/.json file (tuco: none)"
    ),
    n: int = typer.Option(32, callback=check.positive, help="texts per side (unpaired)"),
    model: str = typer.Option("chat", help="the model to steer: base | chat"),
    target_model: str = typer.Option(
        "", help="model for the target activations (default: --model)"
    ),
    site: str = typer.Option("", help="post-norm | block | re:<regex> (default: the method's)"),
    layers: str = typer.Option(
        "", help="comma-separated layers, e.g. 3,-1,0.5 (default: method's)"
    ),
    pooling: str = typer.Option("mean", help="mean | last (one sample per text) | tokens"),
    chat_template: bool = typer.Option(True, help="render texts as chat user turns"),
    ctx: int = typer.Option(64, callback=check.positive, help="truncate texts to this many tokens"),
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
    device: DeviceOption = "auto",
    overwrite: bool = typer.Option(False, help="replace a map trained with another config"),
) -> None:
    """Fit a steering map moving the model's activations on SOURCE texts onto TARGET's (TuCo:
    the model's blocks towards the other model's; no texts)."""
    from interp.fileio import atomic_write_json
    from steering.activations import encode_texts
    from steering.evaluate import chat_texts, write_config
    from steering.methods import SteeringProblem, get_method
    from steering.sites import resolve_sites

    chosen = get_method(method)
    target_model = target_model or model
    latent_options = latent.method_options()
    options = _method_options(method, lineas, latent)
    chosen.check_options(options)
    settings = {
        "command": "steer train",
        "method": method,
        "source": source,
        "target": target,
        "n": n,
        "model": model,
        "target_model": target_model,
        "site": site,
        "layers": layers,
        "pooling": pooling,
        "chat_template": chat_template,
        "max_tokens": ctx,
        "lineas": lineas.method_options(),
        "latents": latent_options,
        "base": base,
        "chat": chat,
    }
    write_config(out, settings, overwrite)
    roles = set(ROLES) if chosen.needs_pair else {model, target_model}
    models = _load_models(roles, base, chat, device)
    steered, target_loaded = models[model], models[target_model]
    tokenizer = steered.tokenizer

    def batch_of(spec: str):
        if not spec:
            return None
        texts = read_texts(spec, "train")[:n]
        return encode_texts(
            tokenizer, chat_texts(tokenizer, texts) if chat_template else texts, ctx
        )

    layer_specs = [part.strip() for part in layers.split(",") if part.strip()] or chosen.layers
    sites = resolve_sites(steered.model, site or chosen.site_kind, layer_specs)
    info = {
        "source": source,
        "target": target,
        "steered_model": steered.spec,
        "target_model": target_loaded.spec,
        "n": n,
    }
    pair = None
    if chosen.needs_pair:
        from interp.models import ModelPair

        pair = ModelPair(base=models["base"], chat=models["chat"])
    problem = SteeringProblem(
        steered.model,
        sites,
        batch_of(source),
        batch_of(target),
        target_loaded.model,
        pooling,
        info,
        model_spec=steered.spec,
        pair=pair,
        steered_role=model,
    )
    steering_map, log = chosen.fit(problem, options)
    steering_map.save(out)
    summary = {
        "map": str(out),
        "method": method,
        "sites": len(steering_map.sites),
        "active_sites": len(steering_map.active_sites()),
    }
    if log is not None:
        atomic_write_json(out / "training.json", asdict(log))
        summary |= {"seconds": round(log.seconds, 2), "final_loss": log.steps[-1]["loss"]}
    typer.echo(json.dumps(summary))


@steer_app.command("generate")
def generate(
    map_dir: Annotated[Path, typer.Argument(help="a map folder written by `interp steer train`")],
    prompt: Annotated[list[str] | None, typer.Option(help="user message (repeatable)")] = None,
    strength: float = typer.Option(1.0, help="lambda (the multiplier for mean-diff, latents)"),
    invert: bool = typer.Option(False, help="apply the inverse map (induce instead of remove)"),
    model: str = typer.Option("chat", help="the model to steer: base | chat"),
    max_new_tokens: int = typer.Option(40, callback=check.positive),
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
    device: DeviceOption = "auto",
) -> None:
    """Greedy responses without and with the map, side by side (one JSON line per prompt). A
    TuCo map loads its other model from the spec it recorded."""
    from steering.evaluate import steered_responses
    from steering.steering_map import load_map

    steering_map = load_map(map_dir)
    loaded = _load_models({model}, base, chat, device)[model]
    prompts = prompt or DEFAULT_PROMPTS
    plain = steered_responses(loaded, prompts, None, 0.0, max_new_tokens)
    steered = steered_responses(
        loaded, prompts, steering_map, strength, max_new_tokens, inverse=invert
    )
    for text, before, after in zip(prompts, plain, steered, strict=True):
        typer.echo(json.dumps({"prompt": text, "plain": before, "steered": after}))


@steer_app.command("eval")
@options_from("options", SteerEvalOptions)
@options_from("latent", LatentOptions)
@options_from("lineas", LineasOptions)
def evaluate(
    lineas: LineasOptions,
    latent: LatentOptions,
    options: SteerEvalOptions,
    out: Annotated[
        Path,
        typer.Option(callback=check.output_folder, help="run folder, e.g. runs/<name>/steering"),
    ],
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
) -> None:
    """Concept rate (refusal judge) vs wiki perplexity for every method and strength."""
    from steering.evaluate import evaluate_steering

    table = evaluate_steering(
        options, lineas, latent, base=base, chat=chat, out=out, progress=typer.echo
    )
    typer.echo(table.to_string(index=False))


def register(app: typer.Typer) -> None:
    app.add_typer(steer_app, name="steer")
