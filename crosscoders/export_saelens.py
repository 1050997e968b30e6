"""Export one source of a dictionary as a SAELens folder, and read such a folder back.

Format (SAELens spec): `cfg.json` + `sae_weights.safetensors` with W_enc [d_in, d_sae],
b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], and threshold [d_sae] for JumpReLU. SAELens
computes, with apply_b_dec_to_input = false and normalize_activations = "none":
    pre = x W_enc + b_enc
    standard: f = ReLU(pre);  topk: top k of pre, then ReLU;  jumprelu: f = ReLU(pre) * (pre > t)
    x^ = f W_dec + b_dec
Our coder differs in two ways that the export folds into the weights, so that an exported SAE
(n_sources = 1) computes exactly our `forward`:
  - inputs are scaled by c = input_scale[m]: W_enc <- c W_enc, W_dec <- W_dec / c,
    b_dec <- b_dec / c;
  - top-k kinds rank by g_j = f_j s_j: scaling latent j by a_j = s_j / c (W_enc[:, j],
    b_enc[j] <- * a_j, W_dec[j] <- / a_j) makes the exported latent g_j / c, so SAELens' ranking
    on it is ours, BatchTopK's rule g_j > theta becomes a JumpReLU with threshold theta / c for
    every j, and an exported SAE has unit-norm decoder rows (the SAELens convention).
For a crosscoder (n_sources > 1) the export is source m's slice: its encoder only sees x_m, while
the crosscoder's latents read all sources, so it is an approximation of the crosscoder.
"""

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.io import load_crosscoder, save_tensors
from interp.cache.manifest import read_manifest
from interp.command_options import DictExportOptions
from interp.errors import InterpError
from interp.fileio import atomic_write_json, read_json
from interp.layers import hook_name

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"  # the cfg.json layout written here: SAELens 6.x
# our activation -> SAELens architecture
ARCHITECTURES = {
    "relu_l1": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
}


def transformer_lens_hook_name(layer: int) -> str:
    """SAELens names sites by TransformerLens hooks: resid_post[l] = blocks.l.hook_resid_post."""
    return f"blocks.{layer}.hook_resid_post"


@torch.no_grad()
def saelens_tensors(coder: CrossCoder, source: int) -> dict[str, torch.Tensor]:
    """The SAELens weights of one source, with input scale and decoder norms folded in."""
    config = coder.config
    if not 0 <= source < config.n_sources:
        raise InterpError(f"source {source} does not exist: expected 0..{config.n_sources - 1}")
    c = coder.input_scale[source]
    W_enc = coder.W_enc[source] * c  # [d F]
    b_enc = coder.encoder_bias().clone()  # [F]: b_dec folded in if the encoder is centred
    W_dec = coder.W_dec[source] / c  # [F d]
    b_dec = coder.b_dec[source] / c  # [d]
    tensors = {}
    if config.activation in ("topk", "batchtopk"):
        a = coder.decoder_norms().sum(dim=0) / c  # [F]: exported latent j = f_j * a_j = g_j / c
        W_enc, b_enc = W_enc * a, b_enc * a
        W_dec = torch.where(a[:, None] > 0, W_dec / a.clamp_min(1e-30)[:, None], 0.0)
    if config.activation == "batchtopk":
        theta = coder.get_buffer("threshold")
        if theta < 0:
            raise InterpError(
                "this BatchTopK dictionary has no inference threshold yet (theta is learned after "
                f"threshold_start_step = {config.threshold_start_step} steps): train longer"
            )
        tensors["threshold"] = (theta / c).expand(config.dict_size).clone()
    elif config.activation == "jumprelu":
        tensors["threshold"] = coder.get_buffer("jumprelu_threshold").clone()
    tensors.update(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec)
    return {name: tensor.float().contiguous() for name, tensor in tensors.items()}


# the upstream Hugging Face model of each built-in (interp/builtin_models.py): SAELens and
# Neuronpedia resolve these ids; the built-ins themselves are dequantized GGUF files of them
UPSTREAM_HF_IDS = {
    "gemma-3-270m": "google/gemma-3-270m",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def model_provenance(spec: str) -> dict[str, Any]:
    """`model_name` for cfg.json and where the weights came from. A built-in without an adapter
    names its upstream Hugging Face id (its weights: that model's GGUF quantization, dequantized);
    one with an adapter (the chat built-in) keeps its spec, since no hub model holds the merged
    weights, and names its upstream base. Any other spec (a hub id or a folder) is kept as is."""
    from interp.builtin_models import BUILTINS

    builtin = BUILTINS.get(spec)
    if builtin is None:
        return {"model_name": spec}
    upstream = UPSTREAM_HF_IDS.get(builtin.base or spec)
    provenance = {"interp_builtin": spec, "weights": builtin.description, "upstream": upstream}
    if builtin.adapter_dir is not None:
        provenance["adapter"] = builtin.adapter_dir.name
        return {"model_name": spec, "interp_provenance": provenance}
    return {"model_name": upstream or spec, "interp_provenance": provenance}


def saelens_cfg(coder: CrossCoder, source: int, context_size: int) -> dict[str, Any]:
    """SAELens 6.x cfg.json: the SAE's own fields at the top level, everything about the model
    and the data under `metadata`; `metadata.sae_lens_version` >= 6 tells SAELens's loader
    (handle_config_defaulting) that this is the 6.x layout, not a pre-6 config to convert."""
    config = coder.config
    origin = config.sources[source] if config.sources else Source(model="unknown", layer=-1)
    architecture = ARCHITECTURES[config.activation]
    metadata = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        **model_provenance(origin.model),
        "hook_name": transformer_lens_hook_name(origin.layer),
        "hook_head_index": None,
        "context_size": context_size,
        "prepend_bos": True,
        "interp_source": {"index": source, "name": origin.name, "site": hook_name(origin.layer)},
        "interp_activation": config.activation,
    }
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": config.d_model,
        "d_sae": config.dict_size,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if architecture == "topk":
        cfg["k"] = config.k
        cfg["rescale_acts_by_decoder_norm"] = False  # rows are unit norm already
    return cfg


def export_saelens(coder: CrossCoder, source: int, folder: Path, context_size: int) -> Path:
    """Write source `source` of `coder` as a SAELens folder; `context_size` is the token context
    the activations were cached with (the cache's `ctx`)."""
    folder = Path(folder)
    tensors = saelens_tensors(coder, source)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / WEIGHTS_FILE, tensors)
    atomic_write_json(folder / CFG_FILE, saelens_cfg(coder, source, int(context_size)))
    return folder


def source_index(config: CrossCoderConfig, source: str) -> int:
    """`--source`: a source's name (as in config.json: `chat`, or `chat/9` for a crosscoder over
    several layers) or its index."""
    names = [entry.name for entry in config.sources]
    if source in names:
        return names.index(source)
    if source.isdigit() and int(source) < config.n_sources:
        return int(source)
    raise InterpError(
        f"unknown source {source!r}: expected one of {names} or an index 0..{config.n_sources - 1}"
    )


def export_dictionary(options: DictExportOptions, dictionary: Path) -> Path:
    """`interp dict export`: one source of the dictionary folder `dictionary` as a SAELens folder
    in `options.out`; cfg.json's context_size is `options.context_size` or the ctx of the
    dictionary's activation cache `options.cache` (exactly one of them)."""
    if (options.cache is None) == (options.context_size is None):
        raise InterpError(
            "give exactly one of --cache (the dictionary's activation cache, whose ctx is used) "
            "and --context-size"
        )
    context_size = options.context_size
    if options.cache is not None:
        context_size = int(read_manifest(options.cache)["config"]["ctx"])
    assert context_size is not None
    coder = load_crosscoder(dictionary)
    return export_saelens(
        coder, source_index(coder.config, options.source), options.out, context_size
    )


def resid_post_layer(metadata: dict[str, Any], folder: Path) -> int:
    """The block l of `blocks.{l}.hook_resid_post` (SAELens 6.x has only `hook_name`; a pre-6
    config may carry `hook_layer` too, which must then agree)."""
    name = metadata.get("hook_name") or metadata.get("hook_point")
    if name is None:
        raise InterpError(f"{str(folder)!r}: cfg.json names no hook_name: expected one")
    match = re.fullmatch(r"blocks\.(-?\d+)\.hook_resid_post", str(name))
    if match is None:
        raise InterpError(
            f"{str(folder)!r}: hook_name {name!r} is not a residual-stream output: expected "
            "blocks.<layer>.hook_resid_post"
        )
    layer = int(match.group(1))
    if metadata.get("hook_layer") is not None and int(metadata["hook_layer"]) != layer:
        raise InterpError(
            f"{str(folder)!r}: hook_layer {metadata['hook_layer']} disagrees with hook_name "
            f"{name!r}"
        )
    return layer


def import_saelens(folder: Path) -> CrossCoder:
    """A one-source CrossCoder computing what the SAELens folder computes (standard -> relu_l1,
    topk -> topk, jumprelu -> jumprelu)."""
    folder = Path(folder)
    cfg = read_json(folder / CFG_FILE)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    by_architecture = {"standard": "relu_l1", "topk": "topk", "jumprelu": "jumprelu"}
    if cfg.get("architecture") not in by_architecture:
        raise InterpError(
            f"SAELens architecture {cfg.get('architecture')!r} in {str(folder)!r}: expected one of "
            f"{', '.join(by_architecture)}"
        )
    if cfg.get("normalize_activations", "none") != "none":
        raise InterpError(
            f"{str(folder)!r}: normalize_activations = {cfg['normalize_activations']!r} is not "
            "supported: expected 'none'"
        )
    if cfg["architecture"] == "topk":
        norms = tensors["W_dec"].norm(dim=-1)
        if not torch.allclose(norms, norms.mean().expand_as(norms), rtol=1e-4):
            raise InterpError(
                f"{str(folder)!r}: a topk SAE with unequal decoder norms cannot be imported "
                "(our top-k ranks by f_j * ||d_j||, SAELens by f_j)"
            )
    metadata = {**cfg, **cfg.get("metadata", {})}  # 6.x nests these, pre-6 keeps them on top
    provenance = metadata.get("interp_provenance") or {}
    source = Source(
        model=str(provenance.get("interp_builtin", metadata.get("model_name", "unknown"))),
        layer=resid_post_layer(metadata, folder),
        name=str((metadata.get("interp_source") or {}).get("name", "")),
    )
    config = CrossCoderConfig(
        n_sources=1,
        d_model=int(cfg["d_in"]),
        dict_size=int(cfg["d_sae"]),
        activation=by_architecture[cfg["architecture"]],
        apply_b_dec_to_input=False,  # the folded form above; decoder norms as stored
        unit_norm_decoder=False,
        k=int(cfg.get("k", cfg.get("activation_fn_kwargs", {}).get("k", 1))),
        sources=[source],
    )
    coder = CrossCoder(config)
    b_enc = tensors["b_enc"]
    if cfg.get("apply_b_dec_to_input", True):  # SAELens's default when the key is absent
        # SAELens encodes (x - b_dec) W_enc + b_enc = x W_enc + (b_enc - b_dec W_enc)
        b_enc = b_enc - tensors["b_dec"] @ tensors["W_enc"]
    state = {
        "W_enc": tensors["W_enc"][None],
        "b_enc": b_enc,
        "W_dec": tensors["W_dec"][None],
        "b_dec": tensors["b_dec"][None],
        "input_scale": torch.ones(1),
    }
    if config.activation == "jumprelu":
        state["jumprelu_threshold"] = tensors["threshold"]
    coder.load_state_dict(state)
    return coder.eval()
