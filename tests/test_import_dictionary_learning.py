"""Crosscoders saved by dictionary_learning / crosscoder_learning (the published Gemma 2 2B
crosscoders' format), built here in that format by hand, imported and run: our forward equals
their forward written out from their code's definition (module doc of the importer)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from crosscoders.config import Source
from crosscoders.import_dictionary_learning import import_dictionary_learning
from interp.errors import InterpError

L, D, F, K = 2, 8, 32, 4


def their_state(batch_topk: bool, normalizer: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {
        "encoder.weight": torch.randn(L, D, F, generator=g) / D**0.5,
        "encoder.bias": 0.3 * torch.randn(F, generator=g),
        "decoder.weight": torch.randn(L, F, D, generator=g) / F**0.5,
        "decoder.bias": torch.randn(L, D, generator=g),
    }
    if batch_topk:
        state.update(code_normalization_id=torch.tensor(1), k=torch.tensor(K, dtype=torch.int))
        state["threshold"] = torch.tensor(0.4)
    if normalizer:
        state["activation_mean"] = torch.randn(L, D, generator=g)
        state["activation_std"] = 1.0 + torch.rand(L, D, generator=g)
        state["target_rms"] = torch.tensor(1.0)
        total_var = (state["activation_std"] ** 2).sum(-1)
        state["activation_global_scale"] = 1.0 / torch.sqrt(total_var + 1e-8)
    return state


def their_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x [B, L, D]: normalize, encode (ReLU of the summed per-layer products + bias; BatchTopK at
    inference keeps f_j where f_j * sum_l ||W_dec[l, j]|| > threshold), decode, denormalize."""
    if "activation_mean" in state:
        g = state["activation_global_scale"][None, :, None]
        x = (x - state["activation_mean"]) * g
    f = torch.relu(torch.einsum("bld,ldf->bf", x, state["encoder.weight"]) + state["encoder.bias"])
    if "threshold" in state:
        s = state["decoder.weight"].norm(dim=2).sum(dim=0)
        f = f * (f * s > state["threshold"])
    out = torch.einsum("bf,lfd->bld", f, state["decoder.weight"]) + state["decoder.bias"]
    if "activation_mean" in state:
        out = out / (g + 1e-8) + state["activation_mean"]
    return out


@pytest.mark.parametrize("batch_topk", [False, True], ids=["relu-l1", "batchtopk"])
@pytest.mark.parametrize("normalizer", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("layout", ["pt-compiled", "hub-folder"])
def test_imported_crosscoder_computes_their_forward(tmp_path, batch_topk, normalizer, layout):
    state = their_state(batch_topk, normalizer)
    if layout == "pt-compiled":  # th.save of a torch.compiled model's state dict, old: no id
        path = tmp_path / "model_final.pt"
        saved = {f"_orig_mod.{k}": v for k, v in state.items() if k != "code_normalization_id"}
        torch.save(saved, path)
    else:
        path = tmp_path / "hub"
        path.mkdir()
        save_file(state, str(path / "model.safetensors"))
        config = {"activation_dim": D, "dict_size": F, "num_layers": L}
        (path / "config.json").write_text(json.dumps(config))
    sources = [Source("base-model", 13, "base"), Source("chat-model", 13, "chat")]
    coder = import_dictionary_learning(path, sources)
    assert coder.config.activation == ("batchtopk" if batch_topk else "relu_l1")
    assert coder.config.sources == sources
    x = 3.0 * torch.randn(64, L, D, generator=torch.Generator().manual_seed(1))
    expected = their_forward(state, x)
    if batch_topk:  # the threshold gate is active: some latents kept, some dropped
        f = coder.encode(x)
        assert 0 < (f > 0).float().sum(dim=1).mean() < F
    torch.testing.assert_close(coder(x), expected, rtol=1e-5, atol=1e-5)


def test_unsupported_saves_are_clear_errors(tmp_path):
    state = their_state(batch_topk=True, normalizer=False)
    state["code_normalization_id"] = torch.tensor(2)  # SAE normalization
    torch.save(state, tmp_path / "ae.pt")
    with pytest.raises(InterpError, match="code normalization id 2"):
        import_dictionary_learning(tmp_path / "ae.pt")
    with pytest.raises(InterpError, match="holds no dictionary_learning crosscoder"):
        import_dictionary_learning(_empty(tmp_path))
    with pytest.raises(InterpError, match="3 sources for a crosscoder of 2 layers"):
        torch.save(their_state(False, False), tmp_path / "ok.pt")
        import_dictionary_learning(tmp_path / "ok.pt", [Source("m", 0)] * 3)


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_interp_dict_import_writes_a_dictionary_folder(tmp_path):
    from typer.testing import CliRunner

    from crosscoders.io import load_crosscoder
    from interp.cli.main import app

    state = their_state(batch_topk=True, normalizer=False)
    torch.save(state, tmp_path / "ae.pt")
    args = ["dict", "import", str(tmp_path / "ae.pt"), "--out", str(tmp_path / "d"),
            "--model", "google/gemma-2-2b", "--model", "google/gemma-2-2b-it",
            "--layer", "13"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    coder = load_crosscoder(tmp_path / "d")
    assert [(s.model, s.layer, s.name) for s in coder.config.sources] == [
        ("google/gemma-2-2b", 13, "base"),
        ("google/gemma-2-2b-it", 13, "chat"),
    ]
    x = torch.randn(16, L, D)
    torch.testing.assert_close(coder(x), their_forward(state, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(InterpError, match="give --model once per crosscoder layer"):
        CliRunner().invoke(app, args[:5], catch_exceptions=False)
