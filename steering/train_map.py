"""Fit one steering map: what `interp steer train` runs, from its options
(steering.options.SteerTrainOptions, LineasOptions, LatentOptions), and the model and text
loading it shares with `interp steer generate`."""

import json
from dataclasses import asdict
from pathlib import Path

from interp.device import resolve_device
from interp.errors import InterpError
from interp.options import comma_separated
from steering.options import LatentOptions, LineasOptions, SteerTrainOptions

ROLES = ("base", "chat")


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


def load_models(
    roles: set[str], base: str, chat: str, device: str, model_dtype: str = "auto"
) -> dict:
    """Load only the models a command needs, in `model_dtype` (interp.models.model_dtype: auto
    = bf16 on CUDA, float32 on the CPU); two of them are validated as a pair."""
    from interp.models import ModelPair, load_model

    device = resolve_device(device)
    for role in roles:
        if role not in ROLES:
            raise InterpError(f"unknown model role {role!r}: expected one of {ROLES}")
    if roles == set(ROLES):
        pair = ModelPair(
            base=load_model(base, model_dtype, device), chat=load_model(chat, model_dtype, device)
        )
        return {"base": pair.base, "chat": pair.chat}
    (role,) = roles
    return {role: load_model(base if role == "base" else chat, model_dtype, device)}


def method_options(method: str, lineas: LineasOptions, latents: LatentOptions) -> dict:
    """The fit options of `method` (the methods without options here take none)."""
    return {"lineas": lineas.method_options(), "latents": latents.method_options()}.get(method, {})


def train_map(
    options: SteerTrainOptions,
    lineas: LineasOptions,
    latent: LatentOptions,
    *,
    base: str,
    chat: str,
    out: Path,
) -> dict:
    """Fit a steering map moving the steered model's activations on the source texts onto the
    target texts' (TuCo: the model's blocks towards the other model's) and save it in `out`
    (map.safetensors, map.json, config.json, training.json); returns the summary."""
    from interp.fileio import atomic_write_json
    from interp.models import dtype_name, model_dtype
    from steering.activations import encode_texts
    from steering.evaluate import chat_texts, write_config
    from steering.methods import SteeringProblem, get_method
    from steering.sites import resolve_sites

    chosen = get_method(options.method)
    model = options.model
    target_model = options.target_model or model
    fit_options = method_options(options.method, lineas, latent)
    chosen.check_options(fit_options)
    settings = {
        "command": "steer train",
        "method": options.method,
        "source": options.source,
        "target": options.target,
        "n": options.n,
        "model": model,
        "target_model": target_model,
        "site": options.site,
        "layers": options.layers,
        "pooling": options.pooling,
        "chat_template": options.chat_template,
        "max_tokens": options.ctx,
        "lineas": lineas.method_options(),
        "latents": latent.method_options(),
        "base": base,
        "chat": chat,
        "model_dtype": dtype_name(model_dtype(options.model_dtype, resolve_device(options.device))),
    }
    write_config(out, settings, options.overwrite)
    roles = set(ROLES) if chosen.needs_pair else {model, target_model}
    models = load_models(roles, base, chat, options.device, options.model_dtype)
    steered, target_loaded = models[model], models[target_model]
    tokenizer = steered.tokenizer

    def batch_of(spec: str):
        if not spec:
            return None
        texts = read_texts(spec, "train")[: options.n]
        rendered = chat_texts(tokenizer, texts) if options.chat_template else texts
        return encode_texts(tokenizer, rendered, options.ctx)

    layer_specs = comma_separated(options.layers) or chosen.layers
    sites = resolve_sites(steered.model, options.site or chosen.site_kind, layer_specs)
    info = {
        "source": options.source,
        "target": options.target,
        "steered_model": steered.spec,
        "target_model": target_loaded.spec,
        "n": options.n,
    }
    pair = None
    if chosen.needs_pair:
        from interp.models import ModelPair

        pair = ModelPair(base=models["base"], chat=models["chat"])
    problem = SteeringProblem(
        steered.model,
        sites,
        batch_of(options.source),
        batch_of(options.target),
        target_loaded.model,
        options.pooling,
        info,
        model_spec=steered.spec,
        pair=pair,
        steered_role=model,
    )
    steering_map, log = chosen.fit(problem, fit_options)
    steering_map.save(out)
    summary = {
        "map": str(out),
        "method": options.method,
        "sites": len(steering_map.sites),
        "active_sites": len(steering_map.active_sites()),
    }
    if log is not None:
        atomic_write_json(out / "training.json", asdict(log))
        summary |= {"seconds": round(log.seconds, 2), "final_loss": log.steps[-1]["loss"]}
    return summary
