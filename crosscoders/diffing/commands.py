"""What the diffing commands run (`interp analyze`, `diff-sae`, `adl`, `change-profile`,
`weights`, `horizon`, `amplify`), from their options (crosscoders.diffing.options) and what a
pipeline sets itself (run folder, models, layer): the CLI and a pipeline step call these same
functions. Each returns the summary the command prints. (Imported only when a command runs: it
imports torch.)"""

from pathlib import Path

from crosscoders.diffing.options import (
    AdlOptions,
    AmplifyOptions,
    AnalyzeOptions,
    ChangeProfileOptions,
    DiffSaeOptions,
    HorizonOptions,
    WeightsOptions,
    floats,
    ints,
)
from interp.device import resolve_device
from interp.errors import InterpError
from interp.models import load_pair_in
from interp.options import comma_separated
from interp.run_folder import RunFolder


def models_identity(**specs: str) -> dict[str, str]:
    """Each model's spec and weights identity, recorded beside the results."""
    from interp.builtin_models import weights_identity

    return {role: spec for role, spec in specs.items()} | {
        f"{role}_weights": weights_identity(spec) for role, spec in specs.items()
    }


def analyze(options: AnalyzeOptions, *, run: Path, dict_name: str | None) -> dict:
    """The model-diffing analysis of one dictionary of `run` (crosscoders.diffing.run)."""
    from crosscoders.diffing.run import UNIT_NAMES, AnalysisConfig
    from crosscoders.diffing.run import analyze as run_analysis

    config = AnalysisConfig(
        split=options.split,
        max_tokens=options.tokens,
        batch_size=options.batch_size,
        n_prompts=options.n_prompts,
        max_new_tokens=options.max_new_tokens,
        prompt_recipe=options.prompt_recipe,
        max_logit_latents=options.max_logit_latents,
        seed=options.seed,
    )
    units = tuple(comma_separated(options.units)) if options.units else UNIT_NAMES
    context = run_analysis(
        run,
        dict_name,
        config,
        units=units,
        overwrite=options.overwrite,
        device=resolve_device(options.device),
        model_dtype=options.model_dtype,
    )
    return {"out": str(context.out), "timings_s": context.timings}


def difference_sae(options: DiffSaeOptions, *, run: Path) -> Path:
    """A BatchTopK SAE on h_chat - h_base of RUN/cache, read through the fine-tuned model's
    logit lens and max-activating examples, into RUN/diff-sae."""
    from crosscoders.config import Source, TrainingConfig
    from crosscoders.diffing.difference_sae import (
        analyze_difference_sae,
        cache_difference_stream,
        pair_columns,
        train_difference_sae,
    )
    from interp.cache import ActivationCache
    from interp.models import load_model

    folder = RunFolder(run)
    cache = ActivationCache(folder.cache)
    pair_columns(cache, options.layer)  # a cache without both roles or that layer fails here
    chosen = options.layer if options.layer is not None else cache.layers[0]
    base, chat = cache.models
    out = folder.diff_sae
    training = TrainingConfig(
        n_steps=options.steps,
        batch_size=options.batch_size,
        lr=options.lr,
        warmup_steps=options.warmup_steps,
        seed=options.seed,
        log_every=25,
        checkpoint_every=max(50, options.steps // 4),
    )
    coder = train_difference_sae(
        cache_difference_stream(cache, options.batch_size, options.seed, chosen),
        out / "dictionary",
        cache.d_model,
        options.dict_size,
        options.k,
        training,
        Source(model=f"{chat} - {base}", layer=chosen, name="chat-base"),
        overwrite=options.overwrite,
    )
    loaded = load_model(chat, dtype=options.model_dtype)  # the CPU: auto is float32
    analyze_difference_sae(
        coder,
        cache,
        loaded.model,
        loaded.tokenizer,
        out,
        options.n_latents,
        options.n_examples,
        layer=chosen,
    )
    return out


def adl(options: AdlOptions, *, base: str, chat: str, layer: str, out: Path) -> dict:
    """Activation Difference Lens into `out` (crosscoders.diffing.adl); patchscope and steering
    act at `layer`."""
    from crosscoders.diffing.adl import AdlConfig, run_adl

    config = AdlConfig(
        n_texts=options.n_texts,
        positions=options.positions,
        norm_positions=options.norm_positions,
        layer=layer,
        recipe=options.recipe,
        split=options.split,
        batch_size=options.batch_size,
        top_tokens=options.top_tokens,
        patchscope_scales=floats(options.patchscope_scales, "--patchscope-scales"),
        steer_strengths=floats(options.steer_strengths, "--steer-strengths"),
        steer_positions=ints(options.steer_positions, "--steer-positions"),
        steer_models=comma_separated(options.steer_models),
        n_prompts=options.n_prompts,
        max_new_tokens=options.max_new_tokens,
        tuco_alphas=floats(options.tuco_alphas, "--tuco-alphas"),
        seed=options.seed,
    )
    config.validate()
    pair = load_pair_in(base, chat, options.model_dtype, options.device)
    summary = run_adl(pair, out, config, overwrite=options.overwrite)
    return {"out": str(out), "timings_s": summary.get("timings_s", {})}


def change_profile(options: ChangeProfileOptions, *, run: Path, base: str, chat: str) -> Path:
    """||h_chat - h_base|| / ||h_base|| per layer and token class into RUN/change_profile: every
    layer from a pass over held-out texts and chats, the cached layer from RUN/cache if any."""
    from crosscoders.diffing.change_profile import markdown, profile_from_cache, profile_from_pass
    from crosscoders.diffing.token_subsets import TemplateTokens
    from interp.cache import ActivationCache
    from interp.datasets import load_conversations, load_texts
    from interp.fileio import atomic_write_json, atomic_write_text

    folder = RunFolder(run)
    pair = load_pair_in(base, chat, options.model_dtype, options.device)
    texts = load_texts("wiki", "heldout")[: options.n_texts]
    chats = load_conversations("heldout")[: options.n_chats] if options.n_chats else []
    passed = profile_from_pass(pair, texts, chats, options.ctx, options.batch_size)
    payload = {
        "base": base,
        "chat": chat,
        "pass": {
            "n_texts": len(texts),
            "n_chats": len(chats),
            "max_tokens": options.ctx,
            "rows": passed.rows(),
        },
    }
    text = f"Pass over {len(texts)} held-out wiki texts and {len(chats)} chats, every layer:\n\n"
    text += markdown(passed.rows())
    if (folder.cache / "manifest.json").is_file():
        cache = ActivationCache(folder.cache)
        cached = profile_from_cache(cache, TemplateTokens.from_tokenizer(pair.tokenizer))
        payload["cache"] = {"n_tokens": cache.n_tokens, "rows": cached.rows()}
        text += f"\nThe cache ({cache.n_tokens} tokens), layer {cache.layers}:\n\n"
        text += markdown(cached.rows())
    out = folder.change_profile
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "profile.json", payload)
    atomic_write_text(out / "profile.md", text)
    return out


def weights(options: WeightsOptions, *, base: str, chat: str, out: Path) -> dict:
    """Spectra of every weight change and intruder dimensions into `out`
    (crosscoders.diffing.weights); `options.adapter` reads a LoRA folder unmerged instead of
    `chat`."""
    from crosscoders.diffing.weights import WeightsConfig, read_adapter, run_weights
    from interp.models import load_model

    config = WeightsConfig(
        intruder_k=options.intruder_k, epsilon=options.epsilon, top_r=options.top_r
    )
    config.validate()
    # the models load in float32 (no --model-dtype): the weight changes are differences of
    # nearly equal weights, which bf16's rounding would swamp; no forward pass runs
    if options.adapter:
        adapter = Path(options.adapter)
        read_adapter(adapter)  # a bad folder fails before the model loads
        loaded = load_model(base, device=resolve_device(options.device))
        identity = models_identity(base=base) | {"adapter": str(adapter)}
        summary = run_weights(
            out,
            loaded.model,
            adapter=adapter,
            config=config,
            identity=identity,
            force=options.overwrite,
        )
    else:
        pair = load_pair_in(base, chat, "float32", options.device)
        summary = run_weights(
            out,
            pair.base.model,
            chat=pair.chat.model,
            config=config,
            identity=models_identity(base=base, chat=chat),
            force=options.overwrite,
        )
    for detail in ("unchanged", "by_module", "intruders_by_layer"):
        summary.pop(detail, None)
    return {"out": str(out), **summary}


def horizon(options: HorizonOptions, *, base: str, chat: str, out: Path) -> dict:
    """Entropy and branching factor of both models along both models' generations into `out`
    (crosscoders.diffing.horizon)."""
    from crosscoders.diffing.horizon import HorizonConfig, run_horizon
    from interp.datasets import load_texts

    config = HorizonConfig(
        options.max_new_tokens, options.first_k, options.sample, options.seed, options.batch_size
    )
    config.validate()
    prompts = load_texts(options.recipe, "heldout")[: options.n_prompts]
    if not prompts:
        raise InterpError(f"recipe {options.recipe!r} has no held-out texts: expected prompts")
    pair = load_pair_in(base, chat, options.model_dtype, options.device)
    identity = models_identity(base=base, chat=chat) | {"recipe": options.recipe}
    summary = run_horizon(pair, prompts, out, config, identity=identity, force=options.overwrite)
    return {"out": str(out), **summary}


def amplify(options: AmplifyOptions, *, base: str, chat: str, out: Path) -> dict:
    """Greedy generations from logits_base + alpha (logits_chat - logits_base) into `out`
    (crosscoders.diffing.amplify)."""
    from crosscoders.diffing.amplify import AmplifyConfig, run_amplify

    config = AmplifyConfig(
        floats(options.alphas, "--alphas"), options.n_prompts, options.max_new_tokens
    )
    config.validate()
    pair = load_pair_in(base, chat, options.model_dtype, options.device)
    identity = models_identity(base=base, chat=chat)
    rows = run_amplify(pair, out, config, identity=identity, force=options.overwrite)
    return {
        "out": str(out),
        "alphas": [row["alpha"] for row in rows],
        "seconds": [row["seconds"] for row in rows],
    }
