"""interp.fileio: whole-or-nothing writes and one writer per folder."""

import json
import subprocess
import sys

import pytest

from interp.errors import InterpError
from interp.fileio import atomic_output, atomic_write_json, guard_config, replace_dir, writer_lock


def test_atomic_write_leaves_no_temp_and_replaces_whole(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_replace_dir_moves_a_built_folder(tmp_path):
    staging = tmp_path / "staging"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "f").write_text("payload")
    replace_dir(staging, tmp_path / "final")
    assert (tmp_path / "final" / "sub" / "f").read_text() == "payload"
    assert not staging.exists()


def test_a_second_writer_of_a_folder_is_refused_in_one_line(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from interp.fileio import writer_lock\n"
            f"with writer_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InterpError, match="another process is writing"):
            with writer_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with writer_lock(tmp_path):  # a killed holder leaves no stale lock
        pass


def test_guard_config_refuses_a_different_config_naming_the_keys(tmp_path):
    path = tmp_path / "run" / "config.json"
    assert guard_config(path, {"a": 1}, overwrite=False) is False  # nothing there yet
    atomic_write_json(path, {"a": 1, "b": (1, 2), "c": "x"})
    assert guard_config(path, {"a": 1, "b": (1, 2), "c": "x"}, overwrite=False) is False
    with pytest.raises(InterpError) as refused:
        guard_config(path, {"a": 2, "b": (1, 2), "d": 0}, overwrite=False, what="a run")
    message = str(refused.value)
    assert "holds a run with a different config" in message
    assert "differing: a (recorded 1, now 2), c, d" in message and "--overwrite" in message
    assert "\n" not in message
    assert guard_config(path, {"a": 2}, overwrite=True) is True  # the caller clears the results
    assert json.loads(path.read_text()) == {"a": 1, "b": [1, 2], "c": "x"}  # nothing written


def test_guard_config_reads_a_key_an_older_config_lacks_as_what_it_meant(tmp_path):
    path = tmp_path / "run" / "config.json"
    atomic_write_json(path, {"a": 1})  # written before `model_dtype` was recorded
    before = {"model_dtype": "fp32"}
    wanted = {"a": 1, "model_dtype": "fp32"}
    assert guard_config(path, wanted, overwrite=False, recorded_before=before) is False
    with pytest.raises(InterpError, match=r"model_dtype \(recorded 'fp32', now 'bf16'\)"):
        guard_config(path, {**wanted, "model_dtype": "bf16"}, False, recorded_before=before)
    with pytest.raises(InterpError, match="differing: model_dtype"):  # without: a new key differs
        guard_config(path, wanted, overwrite=False)


def test_atomic_output_removes_the_temp_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "table.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]
