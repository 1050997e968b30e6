"""Training straight from the models (crosscoders.model_stream) on the tiny pair: the stream is
the cache's token plan (same bytes, same order as a cache read), every epoch uses every token
once, a streamed crosscoder equals one trained from a cache of the same tokens in the same order,
and a streamed run killed anywhere resumes to the same weights with the token count exact."""

import json
import os
import signal
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_support import documents, mixed_source
from tiny_models import save_tiny, tiny_pair
from typer.testing import CliRunner

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.io import CONFIG_FILE, WEIGHTS_FILE, load_crosscoder
from crosscoders.model_stream import STREAM_RECORD, model_stream
from crosscoders.streams import cache_stream
from crosscoders.trainer import KILL_AT_ENV, Trainer
from interp.cache import ActivationCache, build_cache, cache_config
from interp.cli.main import app
from interp.errors import InterpError

N_TOKENS, BATCH = 1000, 64  # 15 batches per epoch, 40 tokens of the plan left over


@pytest.fixture(scope="module")
def pair():
    return tiny_pair()


@pytest.fixture(scope="module")
def config(pair):
    # two layers, a wiki + chat mixture, 4 sequences per forward pass
    return cache_config(pair, [1, 3], "wiki:0.5,chat:0.5", N_TOKENS, ctx=32, batch_size=4,
                        dtype="bf16", seed=3, shard_tokens=256)  # fmt: skip


@pytest.fixture(scope="module")
def cache(pair, config, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream") / "cache"
    build_cache(pair, config, folder, source=mixed_source(), progress=False)
    return ActivationCache(folder)


def plan_order_stream(cache: ActivationCache, batch_size: int):
    """The cache read in plan order, endless: epoch after epoch of its full batches."""
    per_epoch = cache.n_tokens // batch_size

    def batches(first: int):
        index = first
        while True:
            low = index % per_epoch * batch_size
            yield cache.gather(np.arange(low, low + batch_size))
            index += 1

    return batches


def test_a_stream_with_the_buffer_off_yields_the_cache_bytes_in_plan_order(pair, config, cache):
    stream = model_stream(pair, config, BATCH, buffer_batches=0, seed=3, source=mixed_source())
    reference = plan_order_stream(cache, BATCH)
    for index in (0, 1, 7, 14, 15, 22):  # 15 = the first batch of the second epoch
        assert torch.equal(next(stream(index)), next(reference(index))), index


def test_a_buffer_holding_the_whole_plan_reads_it_as_the_cache_reader_does(pair, config, cache):
    stream = model_stream(pair, config, BATCH, buffer_batches=16, seed=3, source=mixed_source())
    assert stream.n_windows == 1
    reference = cache_stream(cache, BATCH, seed=3, split="all")
    for index in (0, 3, 14, 15, 29):
        assert torch.equal(next(stream(index)), next(reference(index))), index


def test_each_epoch_uses_every_token_once_and_a_batch_mixes_its_window(pair):
    divisible = cache_config(pair, [2], "wiki:0.5,chat:0.5", 960, ctx=32, batch_size=4, seed=1)
    stream = model_stream(pair, divisible, BATCH, buffer_batches=3, seed=5, source=mixed_source())
    assert (stream.per_epoch, stream.n_windows) == (15, 5)
    for epoch in range(2):
        batches = [stream.token_index(epoch * 15 + i) for i in range(15)]
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(960)), epoch
        for i, index in enumerate(batches):  # batch i reads window i // 3 only
            assert index.min() >= i // 3 * 192 and index.max() < (i // 3 + 1) * 192
    assert not np.array_equal(stream.token_index(0), np.arange(64))  # shuffled, not plan order
    assert not np.array_equal(stream.token_index(0), stream.token_index(15))  # a new epoch
    # the first batch holds tokens of both recipes and of several forward batches
    index = stream.token_index(0)
    sequence_of = np.repeat(np.arange(len(stream.plan.keep)), [m.sum() for m in stream.plan.keep])
    recipes = {stream.plan.recipe_of[s] for s in sequence_of[index]}
    forward_batches = set(np.searchsorted(stream.plan.batch_ends, index, side="right"))
    assert recipes == {0, 1} and len(forward_batches) >= 4


def test_each_rank_streams_its_own_part_of_the_plan_and_uses_it_once_per_epoch(pair):
    divisible = cache_config(pair, [2], "wiki:0.5,chat:0.5", 960, ctx=32, batch_size=4, seed=1)
    parts = [
        model_stream(pair, divisible, BATCH, 3, seed=5, source=mixed_source(), part=r, parts=2)
        for r in range(2)
    ]
    # 480 plan tokens per rank, 32 rows of each 64-token global batch, windows of 3 x 32
    assert [(s.batch_size, s.per_epoch, s.n_windows) for s in parts] == [(32, 15, 5)] * 2
    for epoch in range(2):
        for rank, stream in enumerate(parts):
            used = np.concatenate([stream.token_index(epoch * 15 + i) for i in range(15)])
            assert np.array_equal(np.sort(used), np.arange(rank * 480, (rank + 1) * 480))
    # the ranks' rows are their parts' bytes: buffer off, rank r's batch i is the single
    # 32-row stream's batch 15 r + i
    single = model_stream(pair, divisible, 32, 0, seed=5, source=mixed_source())
    plain = [
        model_stream(pair, divisible, BATCH, 0, seed=5, source=mixed_source(), part=r, parts=2)
        for r in range(2)
    ]
    for rank, stream in enumerate(plain):
        for index in (0, 6, 14):
            assert torch.equal(next(stream(index)), next(single(15 * rank + index)))


def test_an_sae_stream_runs_only_its_model_and_yields_its_column_of_the_crosscoder_stream(
    config,
):
    pair = tiny_pair()  # its own: the base model is made unusable below
    full = model_stream(pair, config, BATCH, 2, seed=3, source=mixed_source())
    expected = {index: next(full(index)) for index in (0, 5)}

    def refuse(*args, **kwargs):
        raise AssertionError("the base model ran for a chat SAE")

    pair.base.model.forward = refuse
    for column in (2, 3):  # chat at layers 1 and 3 (model-major: base/1, base/3, chat/1, chat/3)
        sae = model_stream(pair, config, BATCH, 2, seed=3, source=mixed_source(), sources=[column])
        assert sae.runner.roles == ["chat"]
        for index, batch in expected.items():
            assert torch.equal(next(sae(index)), batch[:, [column]]), (column, index)


def test_a_stream_is_seekable_to_any_batch(pair, config):
    stream = model_stream(pair, config, BATCH, buffer_batches=2, seed=3, source=mixed_source())
    run = list(islice(stream(0), 20))
    fresh = model_stream(pair, config, BATCH, buffer_batches=2, seed=3, source=mixed_source())
    for index in (17, 5, 0, 19):  # out of order: each recomputes its window from the plan
        assert torch.equal(next(fresh(index)), run[index]), index


def test_a_plan_shorter_than_one_batch_is_a_clear_error(pair):
    short = cache_config(pair, [2], "wiki", 50, ctx=32, batch_size=4)
    with pytest.raises(InterpError, match="the stream has 50 tokens: expected at least one"):
        model_stream(pair, short, BATCH, source=mixed_source())


def train(stream, out: Path) -> dict[str, torch.Tensor]:
    coder = CrossCoderConfig(n_sources=4, d_model=32, dict_size=64, k=4, threshold_start_step=5)
    training = TrainingConfig(n_steps=24, batch_size=BATCH, lr=3e-3, warmup_steps=5,
                              init_sample_tokens=256, log_every=4)  # fmt: skip
    return Trainer(coder, training, stream, out, progress=False).train().state_dict()


@pytest.mark.parametrize("buffer_batches", [0, 16])
def test_a_streamed_crosscoder_equals_one_trained_from_a_cache_of_the_same_tokens(
    pair, config, cache, tmp_path, buffer_batches
):
    """Buffer off: the cache read in plan order; a buffer of the whole plan: the trainer's own
    cache stream (the same permutation). Both cross an epoch boundary (24 steps of 15)."""
    stream = model_stream(pair, config, BATCH, buffer_batches, seed=3, source=mixed_source())
    if buffer_batches:
        from_cache = cache_stream(cache, BATCH, seed=3, split="all")
    else:
        from_cache = plan_order_stream(cache, BATCH)
    streamed, cached = train(stream, tmp_path / "streamed"), train(from_cache, tmp_path / "cached")
    for name, tensor in cached.items():
        assert torch.equal(streamed[name], tensor), name


# --- the command line, killed and resumed ---------------------------------------------------------

KILL_AT_BATCH_ENV = "INTERP_TEST_KILL_AT_STREAM_BATCH"
KILL_RANK_ENV = "INTERP_TEST_KILL_RANK"  # under torchrun: only this rank dies (default: any)
# "B" or "B:N": SIGKILL when stream batch B is read for the N-th time (the normalisation warm-up
# reads the first batches before training reads them again)
KILL_SCRIPT = """
import os, signal, sys
from crosscoders.model_stream import ModelStream
batch, seen = ModelStream.batch, {{}}
def killing(self, index):
    seen[index] = seen.get(index, 0) + 1
    target, _, occurrence = os.environ.get({env!r}, "").partition(":")
    rank = os.environ.get("RANK")
    if target == str(index) and seen[index] == int(occurrence or 1) and (
        os.environ.get({rank_env!r}, rank) == rank
    ):
        os.kill(os.getpid(), signal.SIGKILL)
    return batch(self, index)
ModelStream.batch = killing
from interp.cli.main import main
sys.argv = ["interp", *{args!r}]
sys.exit(main())
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-cli")
    pair = tiny_pair()
    save_tiny(pair.base, root / "base")
    save_tiny(pair.chat, root / "chat")
    (root / "docs.txt").write_text("\n".join(documents(200, seed=5)))
    return root


def stream_args(root: Path, out: Path, tokens: int = N_TOKENS) -> list[str]:
    """24 steps over a 15-batch plan (an epoch boundary), checkpoints every 8, windows of 3."""
    return [str(a) for a in [
        "train", "crosscoder", "--base", root / "base", "--chat", root / "chat", "--layers", "1,3",
        "--mix", root / "docs.txt", "--tokens", tokens, "--ctx", 32, "--forward-batch", 4,
        "--buffer-batches", 3, "--out", out, "--dict-size", 64, "--k", 4, "--steps", 24,
        "--batch-size", BATCH, "--lr", 3e-3, "--warmup-steps", 5, "--threshold-start-step", 5,
        "--log-every", 4, "--checkpoint-every", 8, "--device", "cpu",
    ]]  # fmt: skip


def run_cli(args: list[str], kill_at_batch: int | str | None = None, kill_at: str | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, value in ((KILL_AT_BATCH_ENV, kill_at_batch), (KILL_AT_ENV, kill_at)):
        env.pop(name, None)
        if value is not None:
            env[name] = str(value)
    script = KILL_SCRIPT.format(env=KILL_AT_BATCH_ENV, rank_env=KILL_RANK_ENV, args=args)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def uninterrupted(folders):
    out = folders / "uninterrupted"
    finished = run_cli(stream_args(folders, out))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "no cache" in finished.stdout
    return out


def test_a_streamed_run_records_what_it_used_beside_its_weights(folders, uninterrupted):
    record = json.loads((uninterrupted / STREAM_RECORD).read_text())
    assert [m["spec"] for m in record["models"]] == [str(folders / "base"), str(folders / "chat")]
    assert all(len(m["fingerprint"]) == 64 for m in record["models"])
    assert record["layers"] == [1, 3] and record["n_tokens"] == N_TOKENS
    assert record["mix"] == f"{folders / 'docs.txt'}:1" and record["seed"] == 0
    assert record["buffer"] == {"batches": 3, "tokens": 3 * BATCH}
    assert record["dataset"]["mix"][0]["tokens"] == N_TOKENS
    coder = load_crosscoder(uninterrupted)
    normalization = record["normalization"]
    assert normalization["warmup_tokens"] == TrainingConfig(n_steps=1).init_sample_tokens
    assert normalization["input_scale"] == coder.input_scale.tolist()
    assert not any(p.suffix == ".safetensors" and "shard" in p.name for p in folders.rglob("*"))


def test_a_streamed_sae_reads_its_model_and_layer(folders, tmp_path):
    args = stream_args(folders, tmp_path / "sae")
    args[1] = "sae"
    result = CliRunner().invoke(app, [*args, "--model", "chat", "--layer", "3"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "sae" / STREAM_RECORD).read_text())
    assert record["sources"] == [3]  # chat/3 of base/1, base/3, chat/1, chat/3
    (source,) = load_crosscoder(tmp_path / "sae").config.sources
    assert (source.model, source.layer, source.name) == (str(folders / "chat"), 3, "chat/3")


@pytest.mark.slow
def test_the_issues_check_command_runs_on_a_tiny_pair_with_no_cache_anywhere(tmp_path, monkeypatch):
    """`interp train crosscoder --base B --chat C --layers 0.5 --tokens 4000 --dict-size 256 --k 8
    --steps 10 --out DIR` as the issue gives it (default mix of bundled wiki and chat data,
    default batch 2048: a 4000-token plan, one batch per epoch, ten epochs), on 4-block random
    Gemma 3 models with the real tokenizer instead of the built-in pair."""
    from tiny_models import save_tiny_gemma_pair_with_real_tokenizer

    base, chat = save_tiny_gemma_pair_with_real_tokenizer(tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    args = ["train", "crosscoder", "--base", base, "--chat", chat, "--layers", "0.5",
            "--tokens", "4000", "--dict-size", "256", "--k", "8", "--steps", "10",
            "--out", "DIR"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "DIR" / STREAM_RECORD).read_text())
    assert record["n_tokens"] == 4000 and record["layers"] == [2] and record["batch_size"] == 2048
    assert record["mix"] == "wiki:0.5,chat:0.5"
    state = json.loads(
        (tmp_path / "DIR" / "checkpoints" / "step-00000010" / "state.json").read_text()
    )
    assert state["tokens_consumed"] == 10 * 2048
    assert load_crosscoder(tmp_path / "DIR").config.dict_size == 256
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert "manifest.json" not in written and not any(n.startswith("shard-") for n in written)


@pytest.mark.parametrize(
    "kill_at_batch,kill_at",
    [("13:2", None), (3, None), (None, "before-final-checkpoint")],
    ids=["mid-window-after-a-checkpoint", "in-the-normalisation-warm-up", "end-of-training"],
)
def test_a_killed_streamed_run_resumes_to_the_same_weights_with_every_token_counted(
    folders, uninterrupted, tmp_path, kill_at_batch, kill_at
):
    out = tmp_path / "run"
    args = stream_args(folders, out)
    killed = run_cli(args, kill_at_batch=kill_at_batch, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / WEIGHTS_FILE).exists()
    checkpointed = (out / "checkpoints" / "latest.json").exists()
    assert checkpointed == (kill_at_batch != 3)  # batch 3 is read in the warm-up
    # a rerun that resumes from a checkpoint never reads the warm-up's batch 3 again
    rerun = run_cli(args, kill_at_batch=3 if checkpointed else None)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    state = json.loads((out / "checkpoints" / "step-00000024" / "state.json").read_text())
    assert state["tokens_consumed"] == 24 * BATCH
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["tokens"]) for r in log] == [(s, s * BATCH) for s in range(4, 25, 4)]


def test_a_rerun_on_another_stream_is_refused(folders, uninterrupted):
    refused = run_cli(stream_args(folders, uninterrupted, tokens=N_TOKENS + 64))
    assert refused.returncode == 2
    last = refused.stderr.splitlines()[-1]  # above it: the model loading's progress bar
    assert last.startswith("error: ") and "holds a run with a different config" in last
    assert "Traceback" not in refused.stderr
    assert json.loads((uninterrupted / STREAM_RECORD).read_text())["n_tokens"] == N_TOKENS


@pytest.mark.parametrize(
    "extra,missing",
    [([], "one of them"), (["--cache", "somewhere", "--base", "a", "--chat", "b"], "not both")],
)
def test_cache_and_stream_options_are_one_or_the_other(tmp_path, extra, missing):
    result = CliRunner().invoke(
        app, ["train", "crosscoder", "--out", str(tmp_path), "--dict-size", "8", *extra]
    )
    assert isinstance(result.exception, InterpError)
    assert "pass either --cache DIR or the stream options" in str(result.exception)
    assert missing in str(result.exception)


# --- data parallel: each rank streams its own part ------------------------------------------------


def joined_parts(streams):
    """One process's global batches from the ranks' streams: rank 0's rows, then rank 1's, ..."""

    def batches(first: int):
        for rows in zip(*(stream(first) for stream in streams), strict=True):
            yield torch.cat(rows)

    return batches


@pytest.fixture(scope="module")
def two_ranks(folders):
    """`--workers 2` (torchrun, gloo): 2 CPU ranks, each streaming its part of the plan."""
    out = folders / "two-ranks"
    finished = subprocess.run(
        [sys.executable, "-m", "interp.cli.main", *stream_args(folders, out), "--workers", "2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "by 2 ranks, each on its part" in finished.stdout
    return out


def test_two_ranks_streaming_their_parts_train_what_one_process_trains_on_the_joined_parts(
    folders, two_ranks, tmp_path
):
    from crosscoders.model_stream import open_model_stream
    from crosscoders.train_options import StreamSpec

    record = json.loads((two_ranks / STREAM_RECORD).read_text())
    assert record["ranks"] == {"count": 2, "tokens_each": N_TOKENS // 2}
    assert record["batch_size"] == BATCH and record["buffer"] == {"batches": 3, "tokens": 96}
    state = json.loads((two_ranks / "checkpoints" / "step-00000024" / "state.json").read_text())
    assert state["tokens_consumed"] == 24 * BATCH
    saved = json.loads((two_ranks / "training.json").read_text())
    assert saved["data"]["stream"]["ranks"] == 2
    # the same run in one process: the pair and plan of the same options, both parts joined
    spec = StreamSpec(base=str(folders / "base"), chat=str(folders / "chat"), layers="1,3",
                      mix=str(folders / "docs.txt"), tokens=N_TOKENS, ctx=32, forward_batch=4,
                      buffer_batches=3)  # fmt: skip
    pair, config = open_model_stream(spec, BATCH, seed=0, device="cpu", n_steps=24)
    parts = [model_stream(pair, config, BATCH, 3, seed=0, part=r, parts=2) for r in range(2)]
    coder = CrossCoderConfig.from_dict(saved["crosscoder"])
    training = TrainingConfig.from_dict(saved["training"])
    single = Trainer(coder, training, joined_parts(parts), tmp_path, progress=False).train()
    parallel = load_crosscoder(two_ranks)
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(
            parallel.state_dict()[name], tensor, rtol=1e-4, atol=1e-5, msg=name
        )
    normalization = record["normalization"]
    assert normalization["input_scale"] == pytest.approx(single.input_scale.tolist(), rel=1e-6)


def test_a_rerun_with_another_number_of_ranks_is_refused(folders, two_ranks):
    """The ranks part the plan, so one worker would read other batches: refused, not mixed."""
    refused = run_cli(stream_args(folders, two_ranks))
    assert refused.returncode == 2
    last = refused.stderr.splitlines()[-1]
    assert last.startswith("error: ") and "holds a run with a different config" in last
    assert json.loads((two_ranks / STREAM_RECORD).read_text())["ranks"]["count"] == 2


def test_a_killed_rank_of_a_two_rank_streamed_run_resumes_to_the_same_weights(
    folders, two_ranks, tmp_path
):
    """Rank 1 of a torchrun-launched 2-rank streamed run dies (SIGKILL) reading stream batch 13
    in training (after the step-8 checkpoint); torchrun ends the job. Rerun on 2 ranks: every
    rank seeks its part of the plan to the checkpoint, and the dictionary has the uninterrupted
    2-rank run's bytes, with every token counted once."""
    out = tmp_path / "run"
    args = stream_args(folders, out)
    script = tmp_path / "killing_rank.py"
    script.write_text(KILL_SCRIPT.format(env=KILL_AT_BATCH_ENV, rank_env=KILL_RANK_ENV, args=args))
    env = {**os.environ, "OMP_NUM_THREADS": "1", KILL_AT_BATCH_ENV: "13:2", KILL_RANK_ENV: "1"}
    killed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert "Signals.SIGKILL" in killed.stderr or "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert not (out / WEIGHTS_FILE).exists()
    assert (out / "checkpoints" / "step-00000008").is_dir()
    assert not (out / "checkpoints" / "step-00000016").exists()
    # the rerun on 2 ranks dies if either reads the warm-up's batch 3 again: it resumes
    env[KILL_AT_BATCH_ENV] = "3"
    del env[KILL_RANK_ENV]
    rerun = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (out / name).read_bytes() == (two_ranks / name).read_bytes(), name
    state = json.loads((out / "checkpoints" / "step-00000024" / "state.json").read_text())
    assert state["tokens_consumed"] == 24 * BATCH
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["tokens"]) for r in log] == [(s, s * BATCH) for s in range(4, 25, 4)]
    assert json.loads((out / STREAM_RECORD).read_text())["ranks"]["count"] == 2
