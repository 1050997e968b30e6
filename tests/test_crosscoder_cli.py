"""`interp train crosscoder|sae`, `interp dict eval|export` end to end on a tiny cache of tiny
models saved as folders, and the splice-in metric against a hand-made perfect dictionary."""

import json
import re
from itertools import islice

import pytest
import torch
from cache_support import documents
from tiny_models import save_tiny, tiny_pair
from typer.testing import CliRunner

from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.evaluate import CacheBatches, splice_metrics
from crosscoders.io import load_crosscoder
from crosscoders.streams import cache_stream
from interp.cache import ActivationCache
from interp.cli.main import app
from interp.errors import InterpError
from interp.models import load_model

runner = CliRunner()


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dict-cli")
    pair = tiny_pair()
    save_tiny(pair.base, root / "base")
    save_tiny(pair.chat, root / "chat")
    (root / "docs.txt").write_text("\n".join(documents(200, seed=5)))
    invoke(["cache", "--pair", root / "base", root / "chat", "--layers", "2", "--mix",
            root / "docs.txt", "--tokens", 3000, "--ctx", 32, "--batch-size", 8, "--out",
            root / "cache"])  # fmt: skip
    return root


def test_train_crosscoder_then_eval_and_export(setup):
    out = setup / "cc"
    invoke(["train", "crosscoder", "--cache", setup / "cache", "--out", out, "--dict-size", 64,
            "--k", 4, "--steps", 40, "--batch-size", 64, "--lr", 3e-3, "--warmup-steps", 5,
            "--threshold-start-step", 10, "--log-every", 10, "--device", "cpu"])  # fmt: skip
    coder = load_crosscoder(out)
    assert [(s.model, s.layer, s.name) for s in coder.config.sources] == [
        (str(setup / "base"), 2, "base"), (str(setup / "chat"), 2, "chat"),
    ]  # fmt: skip
    assert coder.get_buffer("threshold") > 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 40 and log[-1]["l0"] == 4
    output = invoke(["dict", "eval", out, "--cache", setup / "cache", "--tokens", 256,
                     "--batch-size", 128, "--texts-file", setup / "docs.txt", "--texts", 8,
                     "--ctx", 16])  # fmt: skip
    result = json.loads((out / "eval.json").read_text())
    assert set(result["reconstruction"]["fve"]) == {"base", "chat"}
    assert set(result["reconstruction"]["fve_typical"]) == {"base", "chat"}
    assert result["reconstruction"]["massive_ratio"] == 5
    n_tokens = result["reconstruction"]["n_tokens"]
    for name, fve in result["reconstruction"]["fve"].items():
        assert f"FVE {name}: {fve:.3f} over all {n_tokens} tokens" in output
    assert 0 < result["reconstruction"]["l0"] < 64
    for name in ("base", "chat"):
        splice = result["splice"][name]
        assert splice["kl_spliced"] >= 0
        recovered = (splice["ce_zero_ablation"] - splice["ce_spliced"]) / (
            splice["ce_zero_ablation"] - splice["ce_clean"]
        )
        assert splice["ce_loss_recovered"] == pytest.approx(recovered)
    invoke(["dict", "export", out, "--source", "chat", "--cache", setup / "cache",
            "--out", setup / "sae-chat"])  # fmt: skip
    cfg = json.loads((setup / "sae-chat" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["model_name"] == str(
        setup / "chat"
    )
    ctx = json.loads((setup / "cache" / "manifest.json").read_text())["config"]["ctx"]
    assert cfg["metadata"]["context_size"] == ctx


def test_train_sae_on_one_model(setup):
    out = setup / "sae"
    invoke(["train", "sae", "--cache", setup / "cache", "--out", out, "--model", "chat",
            "--dict-size", 32, "--k", 4, "--steps", 5, "--batch-size", 64,
            "--device", "cpu"])  # fmt: skip
    coder = load_crosscoder(out)
    assert coder.config.n_sources == 1 and coder.config.sources[0].name == "chat"


def test_bad_cli_input_is_a_clear_error(setup):
    with pytest.raises(InterpError, match="k = 65 is not in 1..dict_size = 64"):
        runner.invoke(app, ["train", "crosscoder", "--cache", str(setup / "cache"), "--out",
                            str(setup / "bad"), "--dict-size", "64", "--k", "65"],
                      catch_exceptions=False)  # fmt: skip
    with pytest.raises(InterpError, match="unknown model 'tuned'"):
        runner.invoke(app, ["train", "sae", "--cache", str(setup / "cache"), "--out",
                            str(setup / "bad"), "--dict-size", "64", "--model", "tuned"],
                      catch_exceptions=False)  # fmt: skip


def test_a_diverging_run_stops_with_one_line_naming_step_batch_and_shards(setup):
    out = setup / "diverged"
    with pytest.raises(InterpError) as stopped:
        runner.invoke(app, ["train", "crosscoder", "--cache", str(setup / "cache"), "--out",
                            str(out), "--dict-size", "64", "--k", "4", "--steps", "20",
                            "--batch-size", "64", "--lr", "1e30", "--warmup-steps", "1",
                            "--checkpoint-every", "1000", "--device", "cpu"],
                      catch_exceptions=False)  # fmt: skip
    message = str(stopped.value)
    assert "\n" not in message, message
    assert re.search(
        rf"the loss is (nan|inf) at step \d+ of 20 \(batch number \d+ of the stream, tokens of "
        rf"cache '{re.escape(str(setup / 'cache'))}', shard-00000.safetensors",
        message,
    ), message
    assert "the batch is finite, so the training diverged: lower --lr" in message
    assert message.endswith("holds no checkpoint yet: fix the cause, then rerun")
    assert not (out / "weights.safetensors").exists()


def test_perfect_reconstruction_recovers_all_ce_and_has_zero_kl(setup):
    """A 'dictionary' that reconstructs exactly (F = d, identity weights, no sparsity) must give
    CE_spliced = CE_clean, KL = 0 and ce_loss_recovered = 1."""
    model = load_model(str(setup / "base"))
    d = model.d_model
    config = CrossCoderConfig(
        1, d, d, activation="relu_l1", apply_b_dec_to_input=False, sources=[Source("m", 2, "base")]
    )
    coder = CrossCoder(config)
    with torch.no_grad():
        # f = ReLU([x, -x]) would need 2d latents; use b_enc to keep pre-activations positive
        # (uncentred encoder: f = ReLU(x W_enc + b_enc))
        coder.W_enc.copy_(torch.eye(d)[None])
        coder.W_dec.copy_(torch.eye(d)[None])
        coder.b_enc.fill_(1000.0)
        coder.b_dec.fill_(-1000.0)
    texts = documents(6, seed=7, max_words=12)
    result = splice_metrics(coder, [model], [2], texts)["base"]
    assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-3)
    assert result["kl_spliced"] == pytest.approx(0.0, abs=1e-4)
    assert result["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-2)
    assert abs(result["ce_zero_ablation"] - result["ce_clean"]) > 1e-3  # the hook does act


def test_cache_batches_reread_the_same_tokens(setup):
    cache = ActivationCache(setup / "cache")
    batches = CacheBatches(cache, [1], batch_size=32, n_batches=3)
    first, second = list(batches), list(batches)
    assert [b.shape for b in first] == [(32, 1, cache.d_model)] * 3
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


def test_cache_stream_restarts_anywhere_and_reshuffles_each_epoch(setup):
    cache = ActivationCache(setup / "cache")
    stream = cache_stream(cache, 64, seed=1, sources=[1])
    per_epoch = cache.n_split_tokens("train") // 64
    first = list(islice(stream(0), per_epoch + 2))
    for start in (3, per_epoch, per_epoch + 1):
        torch.testing.assert_close(next(stream(start)), first[start], rtol=0, atol=0)
    epoch = torch.cat(first[:per_epoch])[:, 0]
    assert epoch.shape == (per_epoch * 64, cache.d_model)
    assert not torch.equal(first[per_epoch], first[0])  # the next epoch has another order
