"""`interp analyze RUN`: every diffing analysis of one dictionary, into `<run>/analysis/<dict>/`.

Each analysis is a unit with the same small interface (diffing-toolkit style): `has_results(out)`
says whether its files are there, `run(context)` writes them. Units run in order; a unit whose
results exist under the same config is skipped, so an interrupted analysis resumes. The two
cache passes feed both `latents` and `examples` and run only when one of them is missing.

| unit          | files                                                               |
|---------------|---------------------------------------------------------------------|
| latents       | latents.parquet                                                     |
| examples      | examples.parquet, tokens.json, activation_hist.parquet              |
| decoder_views | decoder_logits.parquet, neighbors.parquet                           |
| causal        | causal.json                                                         |
| token_shift   | token_shift.parquet, token_shift_summary.json                       |
| report        | report.md, figures/*.png                                            |
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crosscoders.diffing import causal, report
from crosscoders.diffing.cache_pass import PassResults, run_passes, stream_tokens
from crosscoders.diffing.control_tokens import ControlTokens
from crosscoders.diffing.decoder_views import decoder_logits, logit_latent_order, nearest_latents
from crosscoders.diffing.examples import ExampleSettings
from crosscoders.diffing.latent_scaling import CHAT_ONLY_DELTA
from crosscoders.diffing.latent_table import LATENTS_FILE, latent_table, write_parquet
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.responses import ChatResponse, greedy_responses
from crosscoders.diffing.token_shift import shift_summary, token_shift_table
from crosscoders.diffing.token_subsets import TemplateTokens
from crosscoders.io import load_crosscoder
from interp.cache import ActivationCache
from interp.errors import InterpError
from interp.fileio import atomic_write_json, guard_config, read_json
from interp.models import MODEL_DTYPE_RECORDED_BEFORE, ModelPair, dtype_name
from interp.models import model_dtype as resolve_model_dtype
from interp.run_folder import RunFolder

CONFIG_FILE = "config.json"


@dataclass
class AnalysisConfig:
    split: str = "all"  # cache split streamed by the passes
    max_tokens: int | None = None  # cap on streamed tokens (None = the whole split)
    batch_size: int = 1024
    examples: ExampleSettings = field(default_factory=ExampleSettings)
    n_neighbors: int = 10
    n_logit_tokens: int = 10
    max_logit_latents: int = 2048  # decoder logits for this many latents (priority order)
    prompt_recipe: str = "chat-benign"  # held-out prompts of the causal and token-shift tests
    n_prompts: int = 16
    max_new_tokens: int = 32
    first_k: int = causal.FIRST_K
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AnalysisConfig":
        values = dict(data)
        values["examples"] = ExampleSettings(
            **{**data["examples"], "quantiles": tuple(data["examples"]["quantiles"])}
        )
        return cls(**values)


@dataclass
class AnalysisContext:
    """Everything a unit may need; expensive pieces are loaded on first use."""

    run_dir: Path
    dict_name: str
    config: AnalysisConfig
    pair_loader: Callable[[], ModelPair] | None = None  # default: load the cache's models
    prompts: list[str] | None = None  # overrides the prompt recipe (tests)
    device: str = "cpu"  # where the dictionary, the models and the passes run
    model_dtype: str = "auto"  # the models' dtype (interp.models.model_dtype: auto, bf16, ...)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def out(self) -> Path:
        return self.run.analysis(self.dict_name)

    @property
    def dict_dir(self) -> Path:
        return self.run.dictionary(self.dict_name)

    @cached_property
    def run_info(self) -> dict:
        path = self.run.run_record
        return read_json(path) if path.is_file() else {}

    @cached_property
    def cache(self) -> ActivationCache:
        relative = self.run_info.get("steps", {}).get("cache", "cache")
        return ActivationCache(self.run_dir / relative)

    @cached_property
    def dictionary(self) -> PairDictionary:
        coder = load_crosscoder(self.dict_dir, self.device)
        layer = self.run_info.get("layer")
        if coder.config.sources:
            layer = None  # the dictionary's own provenance wins
        elif layer is None and len(self.cache.layers) == 1:
            layer = self.cache.layers[0]
        return PairDictionary.from_coder(coder, layer)

    @cached_property
    def pair(self) -> ModelPair:
        if self.pair_loader is not None:
            pair = self.pair_loader()
        else:
            from interp.models import load_pair

            base, chat = self.cache.models
            pair = load_pair(base, chat, dtype=self.model_dtype, device=self.device)
        check_pair_matches_cache(pair, self.cache)
        return pair

    @cached_property
    def passes(self) -> PassResults:
        template = TemplateTokens.from_tokenizer(self.pair.tokenizer)
        tokens = stream_tokens(self.cache, self.config.split, self.config.max_tokens, template)
        began = time.perf_counter()
        results = run_passes(
            self.cache,
            self.dictionary,
            tokens,
            self.config.split,
            self.config.batch_size,
            self.config.examples,
            self.config.seed,
        )
        self.timings["cache_passes_s"] = time.perf_counter() - began
        return results

    @cached_property
    def latents(self) -> pd.DataFrame:
        return pd.read_parquet(self.out / LATENTS_FILE)

    @cached_property
    def responses(self) -> list[ChatResponse]:
        if self.prompts is not None:
            prompts = self.prompts
        else:
            from interp.datasets import load_texts

            prompts = load_texts(self.config.prompt_recipe, "heldout")[: self.config.n_prompts]
        prompts = prompts[: self.config.n_prompts]
        return greedy_responses(self.pair.chat, prompts, self.config.max_new_tokens)


MODEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def same_weights(model: torch.nn.Module, fingerprint: str) -> bool:
    """Whether `model` has the weights of `fingerprint`, taken in the dtype it was loaded in or
    cast to another model dtype (a cache made with bf16 models, an analysis in float32: the
    fingerprint hashes the values in the dtype they ran in). A cast cannot recover what a
    narrower load rounded away (fp32 weights, a bf16 model), nor a LoRA adapter merged in bf16
    arithmetic: those only match in the cache's own dtype."""
    from interp.fingerprint import model_fingerprint

    if model_fingerprint(model) == fingerprint:
        return True
    loaded_in = next(model.parameters()).dtype
    return any(
        model_fingerprint(model, as_dtype=dtype) == fingerprint
        for dtype in MODEL_DTYPES
        if dtype != loaded_in
    )


def check_pair_matches_cache(pair: ModelPair, cache: ActivationCache) -> None:
    """The causal and token-shift tests must run the very models the cache (and so the
    dictionary) saw: a spec such as `gemma-3-270m-chat` can load other weights after a re-tune.
    The models' dtype may differ from the cache's (`--model-dtype`): the weights are compared
    in the cache's."""
    cached_in = cache.manifest.get("model_dtype")  # caches before it was recorded: unknown
    for loaded, recorded in zip(pair, cache.manifest["models"], strict=True):
        if "fingerprint" in recorded and not same_weights(loaded.model, recorded["fingerprint"]):
            dtype = dtype_name(loaded.dtype)
            if cached_in is None:
                other_dtype = (
                    "; if the cache ran the models in another dtype (its --model-dtype auto is "
                    "bf16 on CUDA, fp32 on the CPU), pass that --model-dtype"
                )
            elif cached_in != dtype:
                other_dtype = f"; the cache ran the models in {cached_in}: "
                other_dtype += f"--model-dtype {cached_in}"
            else:
                other_dtype = ""
            raise InterpError(
                f"model {loaded.spec!r} ({recorded['role']}) in {dtype} has other weights than "
                f"the ones cache {str(cache.path)!r} was built from (fingerprint "
                f"{recorded['fingerprint'][:12]}): rebuild the cache and the dictionary, or "
                f"restore the model{other_dtype}"
            )


def _files_exist(*names: str) -> Callable[[Path], bool]:
    def has_results(out: Path) -> bool:
        return all((out / name).is_file() for name in names)

    return has_results


# --- units ---------------------------------------------------------------------------------------


def run_latents(context: AnalysisContext) -> None:
    passes = context.passes
    betas = passes.scaling.betas(context.dictionary.W_dec)  # coder units, as the sums
    table = latent_table(context.dictionary, passes.firing, betas)
    write_parquet(table, context.out / LATENTS_FILE)


def run_examples(context: AnalysisContext) -> None:
    passes = context.passes
    write_parquet(passes.examples, context.out / "examples.parquet")
    write_parquet(passes.histograms, context.out / "activation_hist.parquet")
    used = np.unique(np.concatenate([np.zeros(0, dtype=np.int32), *passes.examples["token_ids"]]))
    tokenizer = context.pair.tokenizer
    strings = {str(int(i)): tokenizer.decode([int(i)]) for i in used}
    atomic_write_json(context.out / "tokens.json", {"token_strings": strings})


def run_decoder_views(context: AnalysisContext) -> None:
    config = context.config
    latents = logit_latent_order(context.latents)[: config.max_logit_latents]
    models = {"base": context.pair.base.model, "chat": context.pair.chat.model}
    logits = decoder_logits(
        context.dictionary, models, latents, context.pair.tokenizer, config.n_logit_tokens
    )
    write_parquet(logits, context.out / "decoder_logits.parquet")
    write_parquet(
        nearest_latents(context.dictionary, config.n_neighbors), context.out / "neighbors.parquet"
    )


def run_causal(context: AnalysisContext) -> None:
    table = context.latents
    fired = (table["max_act"] > 0).to_numpy()
    freq_chat = table["freq_chat"].to_numpy()
    # live = fires on chat text (the reference drops latents dead on LMSYS); a stream without chat
    # sequences has NaN chat frequencies: then any firing counts
    live = freq_chat > 0 if np.isfinite(freq_chat).all() else fired
    sets, description = causal.causal_latent_sets(
        table["rel_norm"].to_numpy(),
        table["nu_r"].to_numpy(),
        table["nu_eps"].to_numpy(),
        live,
        CHAT_ONLY_DELTA,
    )
    control = ControlTokens.from_tokenizer(context.pair.tokenizer)
    excluded_ids = set(context.cache.manifest.get("excluded_token_ids", []))
    per_prompt = []
    for response in context.responses:
        excluded = torch.tensor([int(i) in excluded_ids for i in response.input_ids])
        per_prompt.append(
            causal.causal_kl(
                context.pair.base.model,
                context.pair.chat.model,
                context.dictionary,
                response,
                sets,
                control.mask(response.input_ids.tolist()),
                excluded,
                context.config.first_k,
            )
        )
    rows = causal.aggregate_causal(per_prompt, sets)
    for row in rows:
        row.update(description)
    atomic_write_json(context.out / "causal.json", rows)


def run_token_shift(context: AnalysisContext) -> None:
    table = token_shift_table(
        context.pair.base.model, context.pair.chat.model, context.responses, context.pair.tokenizer
    )
    prompts = [response.prompt for response in context.responses]
    table["prompt"] = [prompts[i] for i in table["prompt_id"]]
    write_parquet(table, context.out / "token_shift.parquet")
    atomic_write_json(context.out / "token_shift_summary.json", shift_summary(table))


def run_report(context: AnalysisContext) -> None:
    report.write_report(context.out, context.dict_name, context.dict_dir)


@dataclass(frozen=True)
class Unit:
    name: str
    has_results: Callable[[Path], bool]
    run: Callable[[AnalysisContext], None]


UNITS = (
    Unit("latents", _files_exist(LATENTS_FILE), run_latents),
    Unit(
        "examples",
        _files_exist("examples.parquet", "tokens.json", "activation_hist.parquet"),
        run_examples,
    ),
    Unit(
        "decoder_views",
        _files_exist("decoder_logits.parquet", "neighbors.parquet"),
        run_decoder_views,
    ),
    Unit("causal", _files_exist("causal.json"), run_causal),
    Unit(
        "token_shift",
        _files_exist("token_shift.parquet", "token_shift_summary.json"),
        run_token_shift,
    ),
    Unit("report", _files_exist("report.md"), run_report),
)
UNIT_NAMES = tuple(unit.name for unit in UNITS)


def dictionary_names(run_dir: Path) -> list[str]:
    folder = RunFolder(run_dir).dictionaries_folder
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "weights.safetensors").is_file())


def resolve_dict_name(run_dir: Path, name: str | None) -> str:
    names = dictionary_names(run_dir)
    if name is None:
        if len(names) != 1:
            raise InterpError(
                f"run {str(run_dir)!r} has dictionaries {names}: expected exactly one, or "
                "pass --dict NAME"
            )
        return names[0]
    if name not in names:
        raise InterpError(f"no dictionary {name!r} in {str(run_dir)!r}: expected one of {names}")
    return name


def analyze(
    run_dir: Path,
    dict_name: str | None = None,
    config: AnalysisConfig | None = None,
    units: tuple[str, ...] = UNIT_NAMES,
    overwrite: bool = False,
    pair_loader: Callable[[], ModelPair] | None = None,
    prompts: list[str] | None = None,
    device: str = "cpu",
    model_dtype: str = "auto",
) -> AnalysisContext:
    """Run the analysis units of `units` (in their fixed order); returns the context (timings).
    `device` ("cpu", "cuda", "auto") changes where the work runs, not its results, so it is not
    part of the recorded config. `model_dtype` is the dtype the cache's models load in for the
    decoder views, causal and token-shift units (`auto`: bf16 on CUDA, float32 on the CPU)."""
    run_dir = Path(run_dir)
    name = resolve_dict_name(run_dir, dict_name)
    config = config or AnalysisConfig()
    unknown = sorted(set(units) - set(UNIT_NAMES))
    if unknown:
        raise InterpError(f"unknown analysis units {unknown}: expected some of {list(UNIT_NAMES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    context = AnalysisContext(run_dir, name, config, pair_loader, prompts, device, model_dtype)
    out = context.out
    out.mkdir(parents=True, exist_ok=True)
    recorded = {
        "dictionary": name,
        "analysis": config.to_dict(),
        "cache_config_hash": context.cache.manifest.get("config_hash"),
        "models": context.cache.models,
        "layer": context.dictionary.layer,
        # the causal and token-shift units' results depend on it: a resume in another is refused
        "model_dtype": dtype_name(resolve_model_dtype(model_dtype, device)),
    }
    config_path = out / CONFIG_FILE
    guard_config(
        config_path, recorded, overwrite, "an analysis", recorded_before=MODEL_DTYPE_RECORDED_BEFORE
    )
    atomic_write_json(config_path, recorded)
    for unit in UNITS:
        if unit.name not in units or (unit.has_results(out) and not overwrite):
            continue
        began = time.perf_counter()
        unit.run(context)
        context.timings[f"{unit.name}_s"] = time.perf_counter() - began
    _record_step(context)
    return context


def _record_step(context: AnalysisContext) -> None:
    """Add this analysis to run.json's steps (creating run.json from the cache if missing)."""
    path = context.run.run_record
    info = read_json(path) if path.is_file() else {}
    base, chat = context.cache.models
    info.setdefault("name", context.run_dir.name)
    info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    info.setdefault("base", base)
    info.setdefault("chat", chat)
    info.setdefault("layer", context.dictionary.layer)
    step = f"analysis/{context.dict_name}"
    info.setdefault("steps", {})[step] = step
    atomic_write_json(path, info)
