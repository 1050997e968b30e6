"""The SAELens export read by SAELens 6 itself (`SAE.load_from_disk` in its own cached venv,
tests/saelens_venv.py): encode and decode agree with ours to 1e-5 on the same activations, for a
BatchTopK SAE and for one source of a BatchTopK crosscoder. Never skipped: if the venv cannot be
built (no PyPI), the test fails and says why."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from saelens_venv import ensure_saelens_venv
from safetensors.torch import save_file
from test_crosscoder_export import D, trained_like

from crosscoders.crosscoder import CrossCoder
from crosscoders.export_saelens import export_saelens

SCRIPT = Path(__file__).parent / "saelens_scripts" / "check_export.py"
ATOL = 1e-5  # float32: values up to ~25 (ulp ~2e-6 there), summed over d = 8 / F = 24 terms


@pytest.fixture(scope="module")
def saelens_python() -> Path:
    try:
        return ensure_saelens_venv()
    except RuntimeError as error:
        pytest.fail(f"could not build the SAELens 6 venv (pip must reach PyPI): {error}")


@torch.no_grad()
def our_outputs(coder: CrossCoder, source: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the exported SAE of `source` must compute, from our coder: its encoder sees x_m alone
    (the other sources zero), its latent j is g_j / c = f_j s_j / c (export_saelens.py), its
    decoder is source m's."""
    padded = torch.zeros(x.shape[0], coder.config.n_sources, D)
    padded[:, source] = x
    f = coder.encode(padded)
    s = coder.decoder_norms().sum(dim=0)
    c = coder.input_scale[source]
    return {
        "x": x,
        "latents": f * s / c,
        "reconstruction": coder.decode(f)[:, source].contiguous(),
    }


@pytest.mark.parametrize("n_sources, source", [(1, 0), (2, 1)], ids=["sae", "crosscoder-chat"])
def test_saelens_loads_our_batchtopk_export_and_computes_our_outputs(
    tmp_path, saelens_python, n_sources, source
):
    coder = trained_like("batchtopk", n_sources=n_sources)
    with torch.no_grad():
        coder.input_scale.fill_(0.7)  # a non-unit scale, folded into the export
    folder = export_saelens(coder, source, tmp_path / "sae", context_size=128)
    x = 5.0 * torch.randn(256, D, generator=torch.Generator().manual_seed(1))
    outputs = our_outputs(coder, source, x)
    assert 0 < (outputs["latents"] > 0).float().sum(dim=1).mean() < coder.config.dict_size
    save_file(outputs, str(tmp_path / "ours.safetensors"))
    result = subprocess.run(
        [
            str(saelens_python),
            str(SCRIPT),
            str(folder),
            str(tmp_path / "ours.safetensors"),
            str(ATOL),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sae_lens"].startswith("6.")
    assert report["sae_class"] == "JumpReLUSAE"
    # loaded as a 6.x config: the nested metadata is kept, not dropped
    assert report["metadata_version"] == "6.0.0"
    assert report["hook_name"] == "blocks.2.hook_resid_post"
    assert report["context_size"] == 128
    assert report["model_name"] == ["tiny-base", "tiny-chat"][source]
    print(json.dumps(report))
    assert report["active_agree"], report
    assert report["encode_max_abs_diff"] <= ATOL, report
    assert report["decode_max_abs_diff"] <= ATOL, report
