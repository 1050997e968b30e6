"""Read a crosscoder saved by dictionary_learning / crosscoder_learning (the format of Minder et
al.'s published Gemma 2 2B crosscoders) into our `CrossCoder`.

Their save format (science-of-finetuning/dictionary_learning, dictionary.py: `CrossCoder`,
`BatchTopKCrossCoder`, `from_pretrained`): a state dict, either `th.save`d (`*.pt`, keys maybe
prefixed `_orig_mod.` when saved under torch.compile) or a Hub-mixin folder (`model.safetensors`
and `config.json` of init kwargs), holding

    encoder.weight [L, d, F]   encoder.bias [F]   decoder.weight [L, F, d]   decoder.bias [L, d]
    code_normalization_id      (absent in old saves: CROSSCODER)
    k, threshold               (BatchTopKCrossCoder)
    activation_mean, activation_std [L, d], target_rms, activation_global_scale [L]  (optional)

Their forward, with the CROSSCODER code normalization s_j = sum_l ||W_dec[l, j]||:
    f = ReLU(sum_l x_l W_enc[l] + b_enc)   (BatchTopK at inference: keep f_j where f_j s_j > theta)
    x^_l = f W_dec[l] + b_dec[l]
which is ours (crosscoder.py) term by term: W_enc, b_enc, W_dec, b_dec map one to one,
relu_l1 for the ReLU crosscoder (the code normalization only weighs its L1 loss), batchtopk with
our theta for the BatchTopK one. An activation normalizer (keep_relative_variance: x'_l =
(x_l - mu_l) g_l, x_l = x'_l / g_l + mu_l) folds into ours: input_scale_l = g_l,
b_enc <- b_enc - sum_l mu_l g_l W_enc[l], b_dec[l] <- b_dec[l] + mu_l g_l.
"""

from pathlib import Path

import torch
from safetensors.torch import load_file

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.export_saelens import CFG_FILE, import_saelens
from crosscoders.io import save_crosscoder
from interp.command_options import DictImportOptions
from interp.errors import InterpError
from interp.fileio import read_json

CROSSCODER_CODE_NORMALIZATION = 1  # CodeNormalization.CROSSCODER.value (enum auto(), first)
STATE_FILES = ("model.safetensors", "model_final.pt", "ae.pt")


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and the Hub-mixin config (empty for a bare `.pt`) of a file or folder."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in STATE_FILES if (path / name).is_file()]
        if not found:
            raise InterpError(
                f"{str(path)!r} holds no dictionary_learning crosscoder: expected one of "
                f"{', '.join(STATE_FILES)}"
            )
        config = read_json(path / "config.json") if (path / "config.json").is_file() else {}
        path = found[0]
    elif path.is_file():
        config = {}
    else:
        raise InterpError(f"{str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # saved under torch.compile: keys are prefixed `_orig_mod.`
    state = {key.removeprefix("_orig_mod."): value for key, value in state.items()}
    if "encoder.weight" not in state:
        raise InterpError(
            f"{str(path)!r} is not a dictionary_learning crosscoder state dict (no encoder.weight)"
        )
    return state, config


@torch.no_grad()
def import_dictionary_learning(path: Path, sources: list[Source] | None = None) -> CrossCoder:
    """Our CrossCoder computing what the saved crosscoder computes; `sources` (one per layer of
    its input, e.g. base then chat) records where its activations come from."""
    state, config = read_state(path)
    W_enc, W_dec = state["encoder.weight"].float(), state["decoder.weight"].float()
    L, d, F = W_enc.shape
    if tuple(W_dec.shape) != (L, F, d) or tuple(state["decoder.bias"].shape) != (L, d):
        raise InterpError(
            f"{str(path)!r}: decoder shapes {tuple(W_dec.shape)}, "
            f"{tuple(state['decoder.bias'].shape)} do not fit the encoder's [L={L}, d={d}, F={F}]"
        )
    norm_id = int(state.get("code_normalization_id", torch.tensor(1)))
    batch_topk = "threshold" in state
    if batch_topk and norm_id != CROSSCODER_CODE_NORMALIZATION:
        raise InterpError(
            f"{str(path)!r}: a BatchTopK crosscoder with code normalization id {norm_id} ranks by "
            "another latent weight than ours: expected the CROSSCODER normalization (id 1)"
        )
    if batch_topk and state["threshold"].numel() != 1:
        raise InterpError(f"{str(path)!r}: per-layer (decoupled) thresholds are not supported")
    if sources is not None and len(sources) != L:
        raise InterpError(f"{len(sources)} sources for a crosscoder of {L} layers: expected {L}")
    coder = CrossCoder(
        CrossCoderConfig(
            n_sources=L,
            d_model=d,
            dict_size=F,
            activation="batchtopk" if batch_topk else "relu_l1",
            k=int(state["k"]) if "k" in state else 100,
            apply_b_dec_to_input=False,
            unit_norm_decoder=False,
            sources=list(sources or []),
        )
    )
    b_enc, b_dec = state["encoder.bias"].float(), state["decoder.bias"].float()
    scale = torch.ones(L)
    mean = state.get("activation_mean")
    if mean is not None and not torch.isnan(mean).any():
        if config.get("keep_relative_variance", True) is False:
            raise InterpError(
                f"{str(path)!r}: a per-neuron activation normalizer (keep_relative_variance = "
                "false) is not supported"
            )
        scale = state["activation_global_scale"].float().reshape(L)
        shift = mean.float() * scale[:, None]  # mu_l g_l  [L d]
        b_enc = b_enc - torch.einsum("ld,ldf->f", shift, W_enc)
        b_dec = b_dec + shift
    coder.W_enc.copy_(W_enc)
    coder.b_enc.copy_(b_enc)
    coder.W_dec.copy_(W_dec)
    coder.b_dec.copy_(b_dec)
    coder.input_scale.copy_(scale)
    if batch_topk:
        coder.get_buffer("threshold").copy_(state["threshold"].float().reshape(()))
    return coder.eval()


def import_dictionary(options: DictImportOptions, path: Path) -> CrossCoder:
    """`interp dict import`: a SAELens folder (cfg.json + sae_weights.safetensors) or a crosscoder
    saved by dictionary_learning / crosscoder_learning at `path`, saved as our dictionary folder
    in `options.out` (a dictionary_learning save records no models or layer: `options.model`,
    one per crosscoder layer, base first, and `options.layer` name them)."""
    if (path / CFG_FILE).is_file():
        coder = import_saelens(path)
    else:
        if not options.model or options.layer is None:
            raise InterpError(
                "a dictionary_learning save records no models or layer: give --model once per "
                "crosscoder layer (base first) and --layer"
            )
        names = ["base", "chat"] if len(options.model) == 2 else [""] * len(options.model)
        sources = [
            Source(spec, options.layer, name)
            for spec, name in zip(options.model, names, strict=True)
        ]
        coder = import_dictionary_learning(path, sources)
    save_crosscoder(coder, options.out)
    return coder
