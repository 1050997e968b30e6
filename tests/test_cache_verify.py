"""`interp cache verify`: every kind of damage is caught and names the bad shard."""

import json

import pytest
from cache_support import mixed_source
from safetensors.torch import load_file
from tiny_models import tiny_pair
from typer.testing import CliRunner

from interp.cache import build_cache, cache_config, verify_cache
from interp.cache.shard import read_header, write_shard
from interp.cli.main import app


@pytest.fixture
def cache_dir(tmp_path):
    pair = tiny_pair()
    config = cache_config(pair, layers=[2], mix="wiki", n_tokens=300, ctx=20, shard_tokens=100)
    build_cache(pair, config, tmp_path / "cache", mixed_source(), progress=False)
    return tmp_path / "cache"


def test_a_sound_cache_passes(cache_dir):
    assert verify_cache(cache_dir) == []
    result = CliRunner().invoke(app, ["cache", "verify", str(cache_dir)])
    assert result.exit_code == 0 and "ok: 3 shards, 300 tokens" in result.output


def test_a_flipped_byte_is_caught(cache_dir):
    path = cache_dir / "shard-00001.safetensors"
    tensors, _ = read_header(path)
    data = bytearray(path.read_bytes())
    data[tensors["acts"].offset + 1000] ^= 0x01  # one bit of one activation
    path.write_bytes(bytes(data))
    assert verify_cache(cache_dir) == [
        "shard-00001.safetensors: sha256 mismatch (file changed or truncated)"
    ]
    result = CliRunner().invoke(app, ["cache", "verify", str(cache_dir)])
    assert result.exit_code == 1 and "shard-00001.safetensors" in result.output


def test_a_truncated_shard_is_caught(cache_dir):
    path = cache_dir / "shard-00002.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    problems = verify_cache(cache_dir)
    assert problems[0].startswith("shard-00002.safetensors: sha256 mismatch")
    assert any("runs past the end of the file" in p for p in problems)


def test_a_missing_shard_is_caught(cache_dir):
    (cache_dir / "shard-00000.safetensors").unlink()
    assert verify_cache(cache_dir) == ["shard-00000.safetensors: missing"]


def test_nan_activations_are_caught_even_with_a_matching_sha(cache_dir):
    path = cache_dir / "shard-00001.safetensors"
    tensors = load_file(path)
    tensors["acts"][42, 1, 0, 3] = float("nan")
    _, metadata = read_header(path)
    sha = write_shard(path, tensors, metadata)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = sha
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    assert verify_cache(cache_dir) == [
        "shard-00001.safetensors: NaN or inf activations (first at row 42)"
    ]


def test_a_wrong_shape_or_count_is_caught(cache_dir):
    path = cache_dir / "shard-00000.safetensors"
    tensors = load_file(path)
    tensors = {name: value[:90] for name, value in tensors.items()}
    _, metadata = read_header(path)
    sha = write_shard(path, tensors, metadata)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = sha
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_cache(cache_dir)
    assert problems[0] == (
        "shard-00000.safetensors: acts is BF16[90, 2, 1, 32], expected BF16[100, 2, 1, 32] "
        "(100 tokens in the manifest)"
    )
