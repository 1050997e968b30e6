"""Damaged caches, one test per kind of damage: `interp cache verify` names each damaged shard and
what to do, and exits 1; training on a damaged cache stops with one line naming the shard and the
damage, and writes no dictionary."""

import json

import pytest
from cache_support import DAMAGE_KINDS, damage_shard, mixed_source
from safetensors.torch import load_file
from tiny_models import tiny_pair
from typer.testing import CliRunner

from interp.cache import build_cache, cache_config, verify_cache
from interp.cache.shard import read_header, write_shard
from interp.cli.main import app
from interp.errors import InterpError

REBUILD = "rerun the `interp cache` command that wrote the cache (same options) to rebuild it"


@pytest.fixture
def cache_dir(tmp_path):
    pair = tiny_pair()
    config = cache_config(pair, layers=[2], mix="wiki", n_tokens=300, ctx=20, shard_tokens=100)
    build_cache(pair, config, tmp_path / "cache", mixed_source(), progress=False)
    return tmp_path / "cache"


def verify_cli(cache_dir):
    return CliRunner().invoke(app, ["cache", "verify", str(cache_dir)])


def train_cli(cache_dir, out):
    return CliRunner().invoke(app, [
        "train", "crosscoder", "--cache", str(cache_dir), "--out", str(out), "--dict-size", "32",
        "--k", "4", "--steps", "10", "--batch-size", "64", "--warmup-steps", "2",
        "--device", "cpu",
    ])  # fmt: skip


def test_a_sound_cache_passes_and_trains(cache_dir, tmp_path):
    assert verify_cache(cache_dir) == []
    result = verify_cli(cache_dir)
    assert result.exit_code == 0 and "ok: 3 shards, 300 tokens" in result.output
    result = train_cli(cache_dir, tmp_path / "dict")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dict" / "weights.safetensors").is_file()


def expected_damage(cache_dir, kind):
    """The exact words `interp cache verify` prints for shard 1 damaged by `kind`."""
    record = json.loads((cache_dir / "manifest.json").read_text())["shards"][1]
    return {
        "truncated": f"truncated ({record['n_bytes'] - 100} of {record['n_bytes']} bytes)",
        "flipped payload byte": f"contents changed (sha256 {{found}}..., the manifest records "
        f"{record['sha256'][:12]}...)",
        "flipped header byte": "unreadable safetensors header (malformed header (KeyError: "
        "'shape'))",
        "NaN activations": "NaN or inf activations (first at row 42)",
        "deleted": "missing",
    }[kind]


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_cache_verify_names_the_damaged_shard_and_what_to_do_and_exits_1(cache_dir, kind):
    expected = expected_damage(cache_dir, kind)
    name = damage_shard(cache_dir, kind)
    problems = verify_cache(cache_dir)
    if kind == "flipped payload byte":
        expected = expected.format(found=problems[0].split("sha256 ")[1][:12])
    assert problems == [f"{name}: {expected}: {REBUILD}"]
    result = verify_cli(cache_dir)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"FAIL {problems[0]}"]
    assert result.stdout == ""


def test_cache_verify_of_a_cache_without_its_manifest_exits_1(cache_dir):
    (cache_dir / "manifest.json").unlink()
    problems = verify_cache(cache_dir)
    assert problems == [
        f"cache {str(cache_dir)!r} is damaged: it holds shards but no manifest.json; rerun the "
        "`interp cache` command that wrote it with --overwrite to rebuild it, or delete the folder"
    ]
    result = verify_cli(cache_dir)
    assert result.exit_code == 1 and result.stderr.splitlines() == [f"FAIL {problems[0]}"]


def test_cache_verify_of_a_folder_that_is_no_cache_is_a_usage_error(tmp_path):
    with pytest.raises(InterpError, match="is not an activation cache: it has no manifest.json"):
        verify_cache(tmp_path)


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_training_on_a_damaged_shard_stops_with_one_line_naming_it(cache_dir, tmp_path, kind):
    name = damage_shard(cache_dir, kind)
    result = train_cli(cache_dir, tmp_path / "dict")
    assert isinstance(result.exception, InterpError), result.output
    message = str(result.exception)
    assert "\n" not in message
    assert message.startswith(f"cache {str(cache_dir)!r}: {name} is damaged, {DAMAGE_KINDS[kind]}")
    assert message.endswith(REBUILD)
    assert not (tmp_path / "dict" / "weights.safetensors").exists()


def test_training_on_a_cache_without_its_manifest_stops_with_one_line(cache_dir, tmp_path):
    (cache_dir / "manifest.json").unlink()
    result = train_cli(cache_dir, tmp_path / "dict")
    assert isinstance(result.exception, InterpError), result.output
    assert str(result.exception) == (
        f"cache {str(cache_dir)!r} is damaged: it holds shards but no manifest.json; rerun the "
        "`interp cache` command that wrote it with --overwrite to rebuild it, or delete the folder"
    )
    assert not (tmp_path / "dict").exists()


def test_a_wrong_shape_or_count_is_caught(cache_dir):
    path = cache_dir / "shard-00000.safetensors"
    tensors = load_file(path)
    tensors = {name: value[:90] for name, value in tensors.items()}
    _, metadata = read_header(path)
    sha = write_shard(path, tensors, metadata)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = sha
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    assert verify_cache(cache_dir) == [
        "shard-00000.safetensors: acts is BF16[90, 2, 1, 32], expected BF16[100, 2, 1, 32] "
        f"(100 tokens in the manifest): {REBUILD}"
    ]
