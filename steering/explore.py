"""Exploring a pair and a dictionary from Python, one entry point: `open_run`.

    ex = open_run("runs/demo")                      # the pair and dictionary of a finished run
    ex = open_run(dictionary="dict/btk", base=..., chat=...)   # or any pair + dictionary folder
    enc = ex.encode("How do I pick a lock?")         # per-token latents read from both models
    ex.top_latents("How do I pick a lock?")          # the strongest latents of a text
    ex.examples(latent)                              # max-activating examples (analysis output)
    ex.splice(["some text"])                         # the reconstruction in the forward: CE / KL
    ex.steer(latent, "Tell me a story", strength=4)  # generate with a latent added or clamped

It reuses the project's pieces: `interp.hooks.residual_stream` for the residual streams (in the
dictionary's source order, each source from its own model and layer), `CrossCoder.encode` for the
latents f_j (the raw activation, the unit of the analysis tables), `crosscoders.evaluate.
splice_metrics` for splicing and `steering.latent_steering.LatentSteeringMap` for steering. It
lives in `steering` because steering is the one package that may import both `crosscoders` and
`interp` (ARCHITECTURE: app -> steering, crosscoders -> interp).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from crosscoders.config import Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.evaluate import splice_metrics
from crosscoders.io import load_crosscoder
from interp.cache import ActivationCache
from interp.cache.token_stream import excluded_token_ids
from interp.errors import InterpError
from interp.generation import complete, decode_completions, encode_prompts
from interp.hooks import residual_stream
from interp.models import LoadedModel, ModelPair, load_pair
from interp.run_folder import RunFolder
from steering.latent_steering import LatentSteeringMap, check_latents
from steering.sites import resolve_sites


@dataclass
class Encoded:
    """One text through the pair and the dictionary, per token (position t of `tokens`)."""

    tokens: list[str]
    token_ids: Tensor  # [seq]
    special: Tensor  # [seq] bool: BOS and other special tokens (never cached, never ranked)
    residuals: Tensor  # [seq, n_sources, d]: resid_post of each source's model and layer
    latents: Tensor  # [seq, F]: f_j, the dictionary's kept latent activations
    reconstruction: Tensor  # [seq, n_sources, d]

    def active(self, position: int) -> dict[int, float]:
        """{latent: f_j} of the latents kept at one position, largest first."""
        row = self.latents[position]
        ids = row.nonzero()[:, 0]
        order = row[ids].argsort(descending=True)
        return {int(ids[i]): float(row[ids[i]]) for i in order}


@dataclass
class Explorer:
    pair: ModelPair
    coder: CrossCoder
    dictionary: Path | None = None
    analysis: Path | None = None  # RUN/analysis/NAME, for `examples` and the latent classes
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    # --- where each dictionary source reads ---------------------------------------------------

    def source_model(self, source: int) -> LoadedModel:
        """The model of dictionary source `source`: by its name (base/chat), else its spec."""
        spec = self.coder.config.sources[source]
        by_name = {"base": self.pair.base, "chat": self.pair.chat}
        if spec.name in by_name:
            return by_name[spec.name]
        for model in self.pair:
            if model.spec == spec.model:
                return model
        raise InterpError(
            f"dictionary source {source} ({spec.model!r}) is neither model of the pair "
            f"({self.pair.base.spec!r}, {self.pair.chat.spec!r})"
        )

    def source_index(self, model: str | int) -> int:
        """A source given by index, name (base/chat) or model spec."""
        sources = self.coder.config.sources
        if isinstance(model, int) and 0 <= model < len(sources):
            return model
        for i, spec in enumerate(sources):
            if model in (spec.name, spec.model):
                return i
        raise InterpError(
            f"source {model!r}: expected an index < {len(sources)} or one of "
            f"{[s.name or s.model for s in sources]}"
        )

    # --- encode --------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, text: str) -> Encoded:
        tokenizer = self.pair.tokenizer
        device = self.coder.W_enc.device
        batch = tokenizer([text], return_tensors="pt").to(device)
        ids = batch["input_ids"]
        x = torch.stack(
            [
                residual_stream(
                    self.source_model(m).model, ids, [spec.layer], batch["attention_mask"]
                )[0, :, 0]
                for m, spec in enumerate(self.coder.config.sources)
            ],
            dim=1,
        ).float()  # [seq S d], source order as in the dictionary
        latents = self.coder.encode(x)
        excluded = torch.tensor(excluded_token_ids(tokenizer, keep_special=False), device=device)
        return Encoded(
            tokens=tokenizer.convert_ids_to_tokens(ids[0].tolist()),
            token_ids=ids[0].cpu(),
            special=torch.isin(ids[0], excluded).cpu(),
            residuals=x.cpu(),
            latents=latents.cpu(),
            reconstruction=self.coder.decode(latents).cpu(),
        )

    def top_latents(self, text: str, n: int = 10) -> pd.DataFrame:
        """The n latents with the largest max f_j over the text's ordinary tokens: latent,
        max_activation, token (where it peaks), position, n_active (tokens kept), and the
        latent's class from the analysis when there is one."""
        encoded = self.encode(text)
        f = encoded.latents.masked_fill(encoded.special[:, None], 0.0)
        peak, where = f.max(dim=0)
        order = peak.argsort(descending=True)[:n]
        order = order[peak[order] > 0]
        table = pd.DataFrame(
            {
                "latent": order.tolist(),
                "max_activation": peak[order].tolist(),
                "token": [encoded.tokens[int(where[j])] for j in order],
                "position": where[order].tolist(),
                "n_active": (f[:, order] > 0).sum(dim=0).tolist(),
            }
        )
        latents = self.table("latents", required=False)
        if latents is not None:
            classes = latents.set_index("latent")["latent_class"]
            table["latent_class"] = table["latent"].map(classes)
        return table

    # --- the analysis outputs -----------------------------------------------------------------

    def table(self, name: str, required: bool = True) -> pd.DataFrame | None:
        """An analysis table (`latents`, `examples`, ...) of RUN/analysis/NAME/<name>.parquet."""
        if name not in self._tables:
            path = None if self.analysis is None else self.analysis / f"{name}.parquet"
            if path is None or not path.is_file():
                if not required:
                    return None
                raise InterpError(
                    f"no analysis table {name!r} (looked for {str(path)!r}): run `interp "
                    "analyze` on this dictionary first, or open_run(..., analysis=FOLDER)"
                )
            self._tables[name] = pd.read_parquet(path)
        return self._tables[name]

    def examples(self, latent: int, kind: str = "top", n: int = 10) -> pd.DataFrame:
        """The latent's max-activating examples (kind "top", or a quantile kind) from the
        analysis, with the window decoded: `text`, and `token` at the maximum."""
        check_latents([latent], self.coder.config.dict_size)
        examples = self.table("examples")
        rows = examples[(examples["latent"] == latent) & (examples["kind"] == kind)]
        rows = rows.sort_values("rank").head(n).copy()
        tokenizer = self.pair.tokenizer
        rows["text"] = [tokenizer.decode(list(ids)) for ids in rows["token_ids"]]
        rows["token"] = [
            tokenizer.decode([int(ids[i])])
            for ids, i in zip(rows["token_ids"], rows["max_index"], strict=True)
        ]
        return rows.reset_index(drop=True)

    # --- splice and steer ---------------------------------------------------------------------

    def splice(self, texts: Sequence[str], max_length: int = 128) -> dict[str, dict[str, float]]:
        """Per source: next-token CE of the clean model, with its residual stream at the source's
        layer replaced by the dictionary's reconstruction, and zero-ablated; the spliced model's
        KL to the clean one; the fraction of CE recovered (crosscoders.evaluate.splice_metrics)."""
        sources = self.coder.config.sources
        models = [self.source_model(m) for m in range(len(sources))]
        return splice_metrics(
            self.coder, models, [s.layer for s in sources], list(texts), max_length
        )

    def steering_map(
        self,
        latent: int | Sequence[int],
        value: float | Sequence[float],
        model: str | int = "chat",
        mode: str = "add",
    ) -> LatentSteeringMap:
        """The latent-steering map of `latent` on `model`'s source: `add` adds value * d_j,
        `clamp` holds f_j at value (steering/latent_steering.py)."""
        latents = [latent] if isinstance(latent, int) else list(latent)
        values = [value] * len(latents) if isinstance(value, int | float) else list(value)
        m = self.source_index(model)
        loaded = self.source_model(m)
        (site,) = resolve_sites(loaded.model, "block", [self.coder.config.sources[m].layer])
        steering_map = LatentSteeringMap.from_crosscoder(
            self.coder, m, site, latents, values, mode=mode, folder=self.dictionary
        )
        return steering_map.to(self.coder.W_enc.device)

    @torch.no_grad()
    def steer(
        self,
        latent: int | Sequence[int],
        prompt: str,
        strength: float = 1.0,
        value: float | Sequence[float] = 1.0,
        model: str | int = "chat",
        mode: str = "add",
        max_new_tokens: int = 32,
    ) -> str:
        """Greedy continuation of `prompt` by `model` steered with the latent(s) at `strength`
        (strength 0: the unsteered model, bit for bit)."""
        loaded = self.source_model(self.source_index(model))
        steering_map = self.steering_map(latent, value, model, mode)
        batch = encode_prompts(loaded.tokenizer, [prompt], chat_template=False)
        with steering_map.apply(loaded.model, strength):
            new_tokens = complete(loaded, **batch, max_new_tokens=max_new_tokens)
        return decode_completions(loaded.tokenizer, new_tokens)[0]


def cache_sources(cache: Path, n_sources: int) -> list[Source]:
    """The sources of a dictionary trained on every column of `cache` (crosscoders.streams:
    models in cache order, then layers), named base/chat when the cache has one layer."""
    reader = ActivationCache(cache)
    columns = [(spec, layer) for spec in reader.models for layer in reader.layers]
    if len(columns) != n_sources:
        raise InterpError(
            f"the cache {str(cache)!r} has {len(columns)} (model, layer) columns, the dictionary "
            f"{n_sources} sources: pass the cache it was trained on"
        )
    names = ["base", "chat"] if len(reader.layers) == 1 else [""] * len(columns)
    return [Source(spec, layer, name) for (spec, layer), name in zip(columns, names, strict=True)]


def open_run(
    run: str | Path | None = None,
    dictionary: str | Path = "batchtopk",
    base: str | None = None,
    chat: str | None = None,
    analysis: str | Path | None = None,
    device: str = "cpu",
    pair: ModelPair | None = None,
    cache: str | Path | None = None,
    model_dtype: str = "auto",
) -> Explorer:
    """Open a finished run (`RUN/run.json` names the pair; `dictionary` is a name under
    RUN/dictionaries, its analysis RUN/analysis/NAME), or, with no run, a pair (`base`, `chat`
    specs, or a loaded `pair`) plus a dictionary folder. A dictionary trained from Python without
    `sources` reads them from the activation cache it was trained on (`cache`, default RUN/cache):
    one source per (model, layer) of the cache, in the cache's order. The specs load in
    `model_dtype` (interp.models.model_dtype: auto = bf16 on CUDA, float32 on the CPU)."""
    layout = RunFolder(run) if run is not None else None
    if layout is not None:
        if not layout.run_record.is_file():
            raise InterpError(
                f"{str(run)!r} is not a run folder: it has no {layout.relative(layout.run_record)}"
            )
        record = json.loads(layout.run_record.read_text())
        base, chat = base or record["base"], chat or record["chat"]
        name = str(dictionary)
        folder = layout.dictionary(name)
        if analysis is None and layout.analysis(name).is_dir():
            analysis = layout.analysis(name)
    else:
        folder = Path(dictionary)
    coder = load_crosscoder(folder, device=device).eval()
    if cache is None and layout is not None and layout.cache.is_dir():
        cache = layout.cache
    if not coder.config.sources and cache is not None:
        coder.config.sources = cache_sources(Path(cache), coder.config.n_sources)
    if not coder.config.sources:
        raise InterpError(
            f"the dictionary {str(folder)!r} records no sources (model, layer): pass the "
            "activation cache it was trained on (cache=...)"
        )
    if pair is None:
        specs = [s for s in (base, chat) if s is not None]
        pair = load_pair(*specs, dtype=model_dtype, device=device)
    return Explorer(pair, coder, folder, None if analysis is None else Path(analysis))
