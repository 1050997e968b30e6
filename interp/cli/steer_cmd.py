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
from interp.errors import InterpError

steer_app = typer.Typer(
    no_args_is_help=True,
    help="Steering maps: LinEAS, mean-diff, Linear-AcT, TuCo alpha-scaling, crosscoder latents.",
)
METHOD_NAMES = "lineas | mean-diff | linear-act | tuco | latents"

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


def _load_models(roles: set[str], base: str, chat: str) -> dict:
    """Load only the models the command needs; two of them are validated as a pair."""
    from interp.models import ModelPair, load_model

    for role in roles:
        if role not in ROLES:
            raise InterpError(f"unknown model role {role!r}: expected one of {ROLES}")
    if roles == set(ROLES):
        pair = ModelPair(base=load_model(base), chat=load_model(chat))
        return {"base": pair.base, "chat": pair.chat}
    (role,) = roles
    return {role: load_model(base if role == "base" else chat)}


def _strengths(text: str) -> dict[str, list[float]]:
    """`lineas=0,0.5,1;mean-diff=0,2` -> {"lineas": [0, 0.5, 1], "mean-diff": [0, 2]}."""
    result: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        method, _, values = part.partition("=")
        try:
            result[method.strip()] = [float(v) for v in values.split(",")]
        except ValueError:
            raise InterpError(
                f"bad strengths {part!r}: expected method=v1,v2,... e.g. lineas=0,0.5,1"
            ) from None
    return result


def _lineas_options(steps: int, lr: float, sparsity: float, batch_size: int, seed: int) -> dict:
    return {
        "steps": steps,
        "lr": lr,
        "sparsity": sparsity,
        "batch_size": batch_size or None,
        "seed": seed,
    }


def _latent_options(crosscoder: str, latents: str, n_latents: int, mode: str, source: str) -> dict:
    """Options of the `latents` method; `source` is a source index or name ("" = automatic)."""
    try:
        ids = [int(part) for part in latents.split(",") if part.strip()]
    except ValueError:
        raise InterpError(f"bad latent ids {latents!r}: expected e.g. 12,345") from None
    return {
        "crosscoder": crosscoder,
        "latents": ids or None,
        "n_latents": n_latents,
        "mode": mode,
        "source": int(source) if source.strip().isdigit() else (source.strip() or None),
    }


def _method_options(method: str, lineas: dict, latents: dict) -> dict:
    return {"lineas": lineas, "latents": latents}.get(method, {})


CROSSCODER_HELP = "latents: crosscoder folder (config.json + weights.safetensors)"
LATENTS_HELP = "latents: comma-separated latent ids (default: chosen by mean activation gap)"
N_LATENTS_HELP = "latents: how many latents to choose automatically"
LATENT_MODE_HELP = "latents: clamp (to the target mean) | add (the decoder directions)"
LATENT_SOURCE_HELP = "latents: crosscoder source index or name (default: the steered model's)"


@steer_app.command("train")
def train(
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
    max_tokens: int = typer.Option(
        64, callback=check.positive, help="truncate texts to this many tokens"
    ),
    steps: int = typer.Option(1000, callback=check.positive, help="LinEAS: optimisation steps"),
    lr: float = typer.Option(
        1e-3, callback=check.positive, help="LinEAS: Adam learning rate (cosine decay)"
    ),
    sparsity: float = typer.Option(
        0.0, callback=check.non_negative, help="LinEAS: sparse group lasso gamma"
    ),
    batch_size: int = typer.Option(
        0, callback=check.non_negative, help="LinEAS: source texts per step (0: all)"
    ),
    seed: int = typer.Option(0, help="LinEAS: seed of the minibatch draws"),
    crosscoder: str = typer.Option("", help=CROSSCODER_HELP),
    latents: str = typer.Option("", help=LATENTS_HELP),
    n_latents: int = typer.Option(8, callback=check.positive, help=N_LATENTS_HELP),
    latent_mode: str = typer.Option("clamp", help=LATENT_MODE_HELP),
    latent_source: str = typer.Option("", help=LATENT_SOURCE_HELP),
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
    force: bool = typer.Option(False, help="overwrite a map trained with another config"),
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
    latent_options = _latent_options(crosscoder, latents, n_latents, latent_mode, latent_source)
    options = _method_options(
        method, _lineas_options(steps, lr, sparsity, batch_size, seed), latent_options
    )
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
        "max_tokens": max_tokens,
        "lineas": _lineas_options(steps, lr, sparsity, batch_size, seed),
        "latents": latent_options,
        "base": base,
        "chat": chat,
    }
    write_config(out, settings, force)
    roles = set(ROLES) if chosen.needs_pair else {model, target_model}
    models = _load_models(roles, base, chat)
    steered, target_loaded = models[model], models[target_model]
    tokenizer = steered.tokenizer

    def batch_of(spec: str):
        if not spec:
            return None
        texts = read_texts(spec, "train")[:n]
        return encode_texts(
            tokenizer, chat_texts(tokenizer, texts) if chat_template else texts, max_tokens
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
) -> None:
    """Greedy responses without and with the map, side by side (one JSON line per prompt). A
    TuCo map loads its other model from the spec it recorded."""
    import steering  # noqa: F401  (registers every map type)
    from steering.evaluate import steered_responses
    from steering.steering_map import load_map

    steering_map = load_map(map_dir)
    loaded = _load_models({model}, base, chat)[model]
    prompts = prompt or DEFAULT_PROMPTS
    plain = steered_responses(loaded, prompts, None, 0.0, max_new_tokens)
    steered = steered_responses(
        loaded, prompts, steering_map, strength, max_new_tokens, inverse=invert
    )
    for text, before, after in zip(prompts, plain, steered, strict=True):
        typer.echo(json.dumps({"prompt": text, "plain": before, "steered": after}))


@steer_app.command("eval")
def evaluate(
    out: Annotated[
        Path,
        typer.Option(callback=check.output_folder, help="run folder, e.g. runs/<name>/steering"),
    ],
    tasks: str = typer.Option("remove-refusal,induce-refusal", help="comma-separated tasks"),
    methods: str = typer.Option(
        "lineas,mean-diff,linear-act", help=f"comma-separated methods: {METHOD_NAMES}"
    ),
    n: int = typer.Option(32, callback=check.positive, help="train texts per side (unpaired)"),
    n_eval: int = typer.Option(
        16, callback=check.positive, help="held-out prompts judged per strength"
    ),
    n_perplexity: int = typer.Option(
        8, callback=check.positive, help="held-out wiki texts for perplexity"
    ),
    max_new_tokens: int = typer.Option(24, callback=check.positive),
    max_tokens: int = typer.Option(
        64, callback=check.positive, help="truncate every input text to this many tokens"
    ),
    strengths: str = typer.Option("", help="e.g. 'lineas=0,0.5,1;mean-diff=0,1,4'"),
    steps: int = typer.Option(1000, callback=check.positive, help="LinEAS: optimisation steps"),
    lr: float = typer.Option(1e-3, callback=check.positive, help="LinEAS: Adam learning rate"),
    sparsity: float = typer.Option(
        0.0, callback=check.non_negative, help="LinEAS: sparse group lasso gamma"
    ),
    batch_size: int = typer.Option(
        0, callback=check.non_negative, help="LinEAS: source texts per step (0: all)"
    ),
    seed: int = typer.Option(0),
    pooling: str = typer.Option("mean", help="mean | last | tokens: samples per text"),
    crosscoder: str = typer.Option("", help=CROSSCODER_HELP),
    latents: str = typer.Option("", help=LATENTS_HELP),
    n_latents: int = typer.Option(8, callback=check.positive, help=N_LATENTS_HELP),
    latent_mode: str = typer.Option("clamp", help=LATENT_MODE_HELP),
    latent_source: str = typer.Option("", help=LATENT_SOURCE_HELP),
    base: str = typer.Option(DEFAULT_PAIR[0], help="base model spec"),
    chat: str = typer.Option(DEFAULT_PAIR[1], help="chat model spec"),
    device: str = typer.Option(
        "cpu", callback=check.device, help="where the models run: cpu, cuda, ..."
    ),
    force: bool = typer.Option(False, help="overwrite a run folder with another config"),
) -> None:
    """Concept rate (refusal judge) vs wiki perplexity for every method and strength."""
    from interp.datasets import load_texts
    from interp.judges import is_explicit_refusal
    from interp.models import load_pair
    from steering.evaluate import EvalConfig, run_evaluation

    config = EvalConfig(
        tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        n=n,
        n_eval=n_eval,
        n_perplexity=n_perplexity,
        max_new_tokens=max_new_tokens,
        max_tokens=max_tokens,
        strengths=_strengths(strengths),
        lineas=_lineas_options(steps, lr, sparsity, batch_size, seed),
        latents=_latent_options(crosscoder, latents, n_latents, latent_mode, latent_source)
        if crosscoder
        else {},
        pooling=pooling,
    )
    pair = load_pair(base, chat, device=device)
    table = run_evaluation(
        pair, config, out, load_texts, is_explicit_refusal, progress=typer.echo, overwrite=force
    )
    typer.echo(table.to_string(index=False))


def register(app: typer.Typer) -> None:
    app.add_typer(steer_app, name="steer")
