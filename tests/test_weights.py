"""Weight diffing: planted low-rank changes give their rank, spectrum and intruder count; a LoRA
adapter read unmerged gives the spectrum of its merged difference; mismatches are one line."""

import json
import math

import pandas as pd
import pytest
import torch
from tiny_models import tiny_model

from crosscoders.diffing.weights import (
    WeightsConfig,
    effective_rank,
    energy_share,
    intruder_count,
    low_rank_svd,
    numerical_rank,
    run_weights,
)
from interp.errors import InterpError

N = 16


def planted_matrices(delta_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_base = diag(10 * 0.6^i) V^T (left singular vectors: the standard basis; well-separated
    singular values, so the fine-tuned matrix's other directions stay near them) and a
    rank-2 dW = delta_scale (1.0 x1 y1^T + 0.8 x2 y2^T), x1 = all ones / 4, x2 = alternating
    signs / 4: each is at cosine 1/4 from every base left singular vector."""
    generator = torch.Generator().manual_seed(0)
    v, _ = torch.linalg.qr(torch.randn(N, N, generator=generator, dtype=torch.float64))
    w_base = torch.diag(10 * 0.6 ** torch.arange(N, dtype=torch.float64)) @ v.T
    x1 = torch.ones(N, dtype=torch.float64) / 4
    x2 = torch.tensor([(-1.0) ** i for i in range(N)], dtype=torch.float64) / 4
    y, _ = torch.linalg.qr(torch.randn(N, 2, generator=generator, dtype=torch.float64))
    delta = delta_scale * (1.0 * torch.outer(x1, y[:, 0]) + 0.8 * torch.outer(x2, y[:, 1]))
    return w_base, w_base + delta, delta


def test_planted_rank_two_change_has_its_spectrum_and_two_intruders():
    w_base, w_chat, delta = planted_matrices(100.0)
    singular_values = torch.linalg.svdvals(delta)
    assert numerical_rank(singular_values, (N, N)) == 2
    assert torch.allclose(singular_values[:2], torch.tensor([100.0, 80.0], dtype=torch.float64))
    # hand computation: p = (100, 80) / 180, erank = exp(-(5/9 ln 5/9 + 4/9 ln 4/9))
    p1, p2 = 100 / 180, 80 / 180
    expected = math.exp(-(p1 * math.log(p1) + p2 * math.log(p2)))
    rank = numerical_rank(singular_values, (N, N))
    assert effective_rank(singular_values[:rank]) == pytest.approx(expected, rel=1e-9)
    assert energy_share(singular_values, 1) == pytest.approx(10000 / 16400)
    assert energy_share(singular_values, 2) == pytest.approx(1.0)
    count, similarities = intruder_count(w_chat, w_base, k=5, epsilon=0.5)
    assert count == 2
    assert max(similarities[:2]) < 0.4 and min(similarities[2:]) > 0.8


def test_a_small_change_in_the_same_directions_adds_no_intruder():
    w_base, w_chat, _ = planted_matrices(0.01)
    assert intruder_count(w_chat, w_base, k=5, epsilon=0.5)[0] == 0


def test_effective_rank_of_equal_singular_values_is_their_number():
    assert effective_rank(torch.ones(7)) == pytest.approx(7.0)
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)


def test_low_rank_svd_equals_the_dense_svd():
    generator = torch.Generator().manual_seed(1)
    b, a = torch.randn(40, 4, generator=generator), torch.randn(4, 24, generator=generator)
    u, s, v = low_rank_svd(b, a, scale=-2.5)
    dense = -2.5 * (b.double() @ a.double())
    assert torch.allclose(s, torch.linalg.svdvals(dense)[:4], rtol=1e-10)
    assert torch.allclose(u @ torch.diag(s) @ v.T, dense, atol=1e-10)


@pytest.fixture(scope="module")
def adapter_and_merged(tmp_path_factory):
    """A LoRA adapter (r = 4, alpha = 8) with random B on a tiny Gemma 3, saved by peft, and the
    merged model."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("adapter")
    base = tiny_model("gemma3", seed=0).model
    peft_model = get_peft_model(
        tiny_model("gemma3", seed=0).model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]),
    )
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    peft_model.save_pretrained(folder)
    merged = peft_model.merge_and_unload()
    return base, merged, folder


def test_adapter_spectrum_equals_the_merged_difference(adapter_and_merged, tmp_path):
    base, merged, folder = adapter_and_merged
    config = WeightsConfig(intruder_k=4, epsilon=0.5, top_r=4)
    from_adapter = run_weights(tmp_path / "a", base, adapter=folder, config=config)
    from_merged = run_weights(tmp_path / "m", base, chat=merged, config=config)
    adapter_table = pd.read_parquet(tmp_path / "a" / "matrices.parquet").set_index("name")
    merged_table = pd.read_parquet(tmp_path / "m" / "matrices.parquet").set_index("name")
    assert len(adapter_table) == 8  # q_proj and down_proj of 4 layers
    assert sorted(adapter_table.index) == sorted(merged_table.index)
    for name, row in adapter_table.iterrows():
        merged_row = merged_table.loc[name]
        assert row["rank"] == 4 and merged_row["rank"] == 4
        assert list(merged_row["singular_values"][:4]) == pytest.approx(
            list(row["singular_values"]), rel=1e-4
        )
        assert merged_row["effective_rank"] == pytest.approx(row["effective_rank"], rel=1e-3)
        assert merged_row["intruders"] == row["intruders"]
    assert from_adapter["intruders"] == from_merged["intruders"]
    assert from_adapter["n_changed"] == 8
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["intruders_by_layer"]) == {"0", "1", "2", "3"}
    similarities = [s for row in adapter_table["max_similarity"] for s in row]
    assert summary["intruders_by_epsilon"]["0.5"] == summary["intruders"]
    assert summary["intruders_by_epsilon"]["0.9"] == sum(s < 0.9 for s in similarities)
    assert summary["min_max_similarity"] == min(similarities)


def test_mismatches_are_one_line_errors(adapter_and_merged, tmp_path):
    base, _, folder = adapter_and_merged
    other = tiny_model("llama", seed=0).model
    with pytest.raises(InterpError, match="different weight matrices"):
        run_weights(tmp_path / "x", base, chat=other)
    bigger = tiny_model("gemma3", seed=0).model
    bigger.model.layers[0].self_attn.q_proj.weight = torch.nn.Parameter(torch.zeros(8, 32))
    with pytest.raises(InterpError, match="shape"):
        run_weights(tmp_path / "y", base, chat=bigger)
    with pytest.raises(InterpError, match="expected an adapter trained on this base"):
        run_weights(tmp_path / "z", bigger, adapter=folder)
    with pytest.raises(InterpError, match="not a LoRA adapter folder"):
        run_weights(tmp_path / "w", base, adapter=tmp_path)
    run_weights(tmp_path / "v", base, adapter=folder)
    with pytest.raises(InterpError, match="another config"):
        run_weights(tmp_path / "v", base, adapter=folder, config=WeightsConfig(epsilon=0.3))
