"""SAELens export checked against the format's spec (written out here, SAELens not imported):
file names, tensor names and shapes, cfg fields, and the spec's forward pass reproducing ours.
SAELens's own loader reads the export in tests/test_saelens_real.py."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.export_saelens import export_saelens, import_saelens
from crosscoders.init import initialize
from interp.errors import InterpError

D, F, K = 8, 24, 3
SPEC_KEYS = {"W_enc": (D, F), "b_enc": (F,), "W_dec": (F, D), "b_dec": (D,)}


def trained_like(activation: str, n_sources: int = 1) -> CrossCoder:
    """A coder with uneven decoder norms, nonzero biases, non-unit input scale and a theta."""
    sources = [Source("tiny-base", 2, "base"), Source("tiny-chat", 2, "chat")][:n_sources]
    config = CrossCoderConfig(n_sources, D, F, activation=activation, k=K, sources=sources)
    coder = CrossCoder(config)
    generator = torch.Generator().manual_seed(0)
    initialize(coder, 5.0 * torch.randn(512, n_sources, D, generator=generator), generator)
    with torch.no_grad():
        coder.W_dec.mul_(0.5 + torch.rand(n_sources, F, 1, generator=generator))
        coder.b_enc.normal_(0.0, 0.3, generator=generator)
        if activation == "batchtopk":
            coder.get_buffer("threshold").fill_(0.8)
    return coder.eval()


def saelens_forward(folder, x: torch.Tensor) -> torch.Tensor:
    """The SAELens inference pass from its spec (apply_b_dec_to_input false, no normalisation)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    pre = x @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "standard":
        f = torch.relu(pre)
    elif cfg["architecture"] == "topk":
        top = pre.topk(cfg["k"], dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:  # jumprelu
        f = torch.relu(pre) * (pre > w["threshold"])
    return f @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize(
    "activation, architecture",
    [
        ("relu_l1", "standard"),
        ("topk", "topk"),
        ("batchtopk", "jumprelu"),
    ],
)
def test_exported_sae_follows_the_spec_and_computes_our_forward(tmp_path, activation, architecture):
    coder = trained_like(activation)
    folder = export_saelens(coder, 0, tmp_path / "sae", context_size=128)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == architecture
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (D, F, "float32")
    assert cfg["apply_b_dec_to_input"] is False and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["model_name"] == "tiny-base"
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    assert cfg["metadata"]["context_size"] == 128
    assert cfg["metadata"]["sae_lens_version"] == "6.0.0"
    # the 6.x layout: model and data fields only under metadata
    assert not {"model_name", "hook_name", "hook_layer", "context_size"} & set(cfg)
    weights = load_file(str(folder / "sae_weights.safetensors"))
    expected = dict(SPEC_KEYS, **({"threshold": (F,)} if architecture == "jumprelu" else {}))
    assert {name: tuple(t.shape) for name, t in weights.items()} == expected
    assert all(t.dtype == torch.float32 for t in weights.values())
    if architecture != "standard":  # decoder norms folded into the latents
        torch.testing.assert_close(weights["W_dec"].norm(dim=-1), torch.ones(F))
    x = 5.0 * torch.randn(64, D)
    torch.testing.assert_close(
        saelens_forward(folder, x), coder(x[:, None])[:, 0], rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("activation", ["relu_l1", "topk", "batchtopk"])
def test_export_import_round_trip_reproduces_the_dictionary(tmp_path, activation):
    coder = trained_like(activation)
    imported = import_saelens(export_saelens(coder, 0, tmp_path / "sae", context_size=128))
    assert imported.config.sources[0] == coder.config.sources[0]
    x = 5.0 * torch.randn(64, 1, D)
    torch.testing.assert_close(imported(x), coder(x), rtol=1e-4, atol=1e-4)
    again = import_saelens(export_saelens(imported, 0, tmp_path / "again", context_size=128))
    for name, tensor in imported.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor)


def test_crosscoder_source_export_is_that_sources_slice(tmp_path):
    coder = trained_like("relu_l1", n_sources=2)
    folder = export_saelens(coder, 1, tmp_path / "chat", context_size=128)
    cfg = json.loads((folder / "cfg.json").read_text())
    weights = load_file(str(folder / "sae_weights.safetensors"))
    c = coder.input_scale[1]
    assert cfg["metadata"]["model_name"] == "tiny-chat"
    torch.testing.assert_close(weights["W_enc"], coder.W_enc[1].detach() * c)
    torch.testing.assert_close(weights["W_dec"], coder.W_dec[1].detach() / c)
    torch.testing.assert_close(weights["b_dec"], coder.b_dec[1].detach() / c)


def test_export_errors_are_clear(tmp_path):
    with pytest.raises(InterpError, match="source 1 does not exist"):
        export_saelens(trained_like("relu_l1"), 1, tmp_path / "x", context_size=128)
    untrained = CrossCoder(CrossCoderConfig(1, D, F, k=K))
    with pytest.raises(InterpError, match="no inference threshold"):
        export_saelens(untrained, 0, tmp_path / "y", context_size=128)


def test_builtin_models_get_a_resolvable_model_name_and_their_provenance(tmp_path):
    coder = trained_like("relu_l1", n_sources=2)
    coder.config.sources = [
        Source("gemma-3-270m", 9, "base"),
        Source("gemma-3-270m-chat", 9, "chat"),
    ]
    base = json.loads((export_saelens(coder, 0, tmp_path / "b", 128) / "cfg.json").read_text())
    chat = json.loads((export_saelens(coder, 1, tmp_path / "c", 128) / "cfg.json").read_text())
    assert base["metadata"]["model_name"] == "google/gemma-3-270m"
    assert "Q4_K_M, dequantized" in base["metadata"]["interp_provenance"]["weights"]
    # no hub model holds the merged chat weights: the spec stays, upstream base and adapter named
    assert chat["metadata"]["model_name"] == "gemma-3-270m-chat"
    assert chat["metadata"]["interp_provenance"]["upstream"] == "google/gemma-3-270m"
    assert chat["metadata"]["interp_provenance"]["adapter"] == "chat-tune"
    # importing gives back the project's spec, not the hub id
    assert import_saelens(tmp_path / "b").config.sources[0] == Source("gemma-3-270m", 9, "base")


def saelens6_folder(tmp_path, cfg_extra: dict, metadata: dict) -> tuple:
    """A SAELens 6.x-style folder written by hand: a standard SAE, weights from a seed."""
    generator = torch.Generator().manual_seed(3)
    tensors = {
        "W_enc": torch.randn(D, F, generator=generator),
        "b_enc": torch.randn(F, generator=generator),
        "W_dec": torch.randn(F, D, generator=generator),
        "b_dec": torch.randn(D, generator=generator),
    }
    folder = tmp_path / "saelens6"
    folder.mkdir()
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    cfg = {"architecture": "standard", "d_in": D, "d_sae": F, "metadata": metadata, **cfg_extra}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder, tensors


def test_import_reads_the_6x_hook_name_and_folds_apply_b_dec_to_input(tmp_path):
    metadata = {
        "sae_lens_version": "6.5.0",
        "model_name": "m",
        "hook_name": "blocks.3.hook_resid_post",
    }
    # no apply_b_dec_to_input key: SAELens's default, true
    folder, w = saelens6_folder(tmp_path, {}, metadata)
    imported = import_saelens(folder)
    assert imported.config.sources[0].layer == 3  # not the last block (-1)
    x = 5.0 * torch.randn(32, D)
    # SAELens standard SAE with apply_b_dec_to_input: ReLU((x - b_dec) W_enc + b_enc) W_dec + b_dec
    expected = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) @ w["W_dec"] + w["b_dec"]
    torch.testing.assert_close(imported(x[:, None])[:, 0], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"hook_name": "blocks.3.hook_mlp_out"}, "not a residual-stream output"),
        ({}, "names no hook_name"),
        ({"hook_name": "blocks.3.hook_resid_post", "hook_layer": 5}, "disagrees"),
    ],
)
def test_import_refuses_hooks_it_cannot_place(tmp_path, metadata, message):
    folder, _ = saelens6_folder(tmp_path, {"apply_b_dec_to_input": False}, metadata)
    with pytest.raises(InterpError, match=message):
        import_saelens(folder)
