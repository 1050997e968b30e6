"""The app's only reader of run folders (layout: docs/ARCHITECTURE.md, "Run folder").

Every file is read once and cached, keyed by its path, size and modification time, so that a step
re-run while the app is open is picked up on the next interaction. Parquet tables are held once by
`st.cache_resource` (shared, read-only: `st.cache_data` would copy a 16k-row table with list
columns on every access, seconds per page run), and what one latent needs is sliced out and kept
by `st.cache_data`; the examples table gets a per-latent row index. JSON goes through
`st.cache_data`. A missing piece raises `MissingPiece`, whose message names the file and the
command that writes it; pages show it with `show_missing`.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from interp.errors import InterpError
from interp.run_folder import RUN_FOLDER_ENV, STEP_FOLDERS
from interp.run_folder import RunFolder as RunLayout

RUN_FOLDER_KEY = "run_folder"  # session-state key of the sidebar's run-folder input
DICTIONARY_KEY = "dictionary"  # session-state key of the sidebar's dictionary choice

ANALYZE = "`interp analyze RUN`"
TUCO = "`interp tuco experiments`"
STEER = "`interp steer eval`"
LATENT_COLUMNS = (
    "latent",
    "rel_norm",
    "cosine",
    "latent_class",
    "freq",
    "max_act",
    "nu_r",
    "nu_eps",
)


T = TypeVar("T")


class MissingPiece(InterpError):
    """A file or column the page needs is not in the run folder."""


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@st.cache_resource(show_spinner=False, max_entries=32)
def _read_parquet(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    """Shared, never copied: callers filter or sort into new frames and never modify it."""
    return pd.read_parquet(path)


@st.cache_data(show_spinner=False, max_entries=256)
def _rows_of_latent(path: str, stamp: tuple[int, int], latent: int) -> pd.DataFrame:
    table = _read_parquet(path, stamp)
    return table[table["latent"] == latent].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=64)
def _read_json(path: str, stamp: tuple[int, int]) -> Any:
    return json.loads(Path(path).read_text())


@st.cache_data(show_spinner=False, max_entries=8)
def _read_token_strings(path: str, stamp: tuple[int, int]) -> dict[int, str]:
    """tokens.json's {"token_strings": {id: string}}, with integer ids (JSON keys are strings)."""
    return {int(k): v for k, v in json.loads(Path(path).read_text())["token_strings"].items()}


@dataclass(frozen=True)
class ExampleIndex:
    """The examples table and, for each latent, the row numbers of its examples."""

    table: pa.Table
    rows: dict[int, np.ndarray]


@st.cache_resource(show_spinner=False, max_entries=4)
def _example_index(path: str, stamp: tuple[int, int]) -> ExampleIndex:
    table = pq.read_table(path)
    latents = table.column("latent").to_numpy()
    order = np.argsort(latents, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(latents[order]) != 0])
    groups = np.split(order, starts[1:])
    return ExampleIndex(table, {int(latents[g[0]]): g for g in groups if g.size})


@st.cache_data(show_spinner=False, max_entries=256)
def _examples_of_latent(path: str, stamp: tuple[int, int], latent: int) -> pd.DataFrame:
    index = _example_index(path, stamp)
    rows = index.rows.get(latent, np.empty(0, dtype=np.int64))
    return index.table.take(pa.array(rows)).to_pandas()


@dataclass(frozen=True)
class RunFolder(RunLayout):
    """The run-folder layout (interp.run_folder) with the app's cached readers. A file is given
    by its layout path (`run.analysis(d) / "latents.parquet"`) or relative to the root."""

    def file(self, where: str | Path, writer: str) -> Path:
        path = self.root / where
        if not path.is_file():
            raise MissingPiece(
                f"{self.relative(path)} is missing from run folder {self.root}: {writer} writes it"
            )
        return path

    def has(self, where: str | Path) -> bool:
        return (self.root / where).is_file()

    def json(self, where: str | Path, writer: str) -> Any:
        path = self.file(where, writer)
        try:
            return _read_json(str(path), _stamp(path))
        except json.JSONDecodeError as error:
            raise MissingPiece(
                f"{self.relative(path)} in {self.root} is not valid JSON ({error})"
            ) from None

    def parquet(
        self, where: str | Path, writer: str, columns: tuple[str, ...] = ()
    ) -> pd.DataFrame:
        path = self.file(where, writer)
        table = _read_parquet(str(path), _stamp(path))
        absent = [c for c in columns if c not in table.columns]
        if absent:
            raise MissingPiece(
                f"{self.relative(path)} in {self.root} lacks the columns {absent}: expected "
                f"{list(columns)} ({writer} writes them)"
            )
        return table

    # --- run summary -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """run.json, completed from the steps' own configs: base and chat specs (cache manifest
        roles, then tuco/ and steering/ configs), layer (an analysis config, then the cache's
        single layer), steps (the step folders present). Without run.json (only the analysis
        records itself there) the same summary is assembled from what the steps wrote."""
        if not self.root.is_dir():
            raise MissingPiece(
                f"run folder {self.root} does not exist: give the folder a pipeline step wrote "
                "(`interp app runs/NAME`)"
            )
        present = {name: name for name in STEP_FOLDERS if (self.root / name).is_dir()}
        if self.has(self.run_record):
            info = dict(self.json(self.run_record, "the pipeline steps"))
        elif present:
            info = {"name": self.root.name, "run_json_missing": True}
        else:
            raise MissingPiece(
                f"run.json is missing from run folder {self.root} and no pipeline step wrote "
                f"into it (expected some of {', '.join(STEP_FOLDERS)})"
            )
        listed = dict(info.get("steps", {}))
        unlisted = {
            name: folder
            for name, folder in present.items()
            if not any(str(f).split("/")[0] == folder for f in listed.values())
        }
        info["steps"] = listed | unlisted
        for key, value in self._models_and_layer().items():
            info.setdefault(key, value)
        return info

    def _models_and_layer(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.has(self.cache / "manifest.json"):
            manifest = self.json(self.cache / "manifest.json", "`interp cache`")
            for model in manifest.get("models", []):
                if isinstance(model, dict) and model.get("role") in ("base", "chat"):
                    found.setdefault(model["role"], model.get("spec"))
            if len(manifest.get("layers", [])) == 1:
                found["layer"] = manifest["layers"][0]
        for config in (self.tuco / "config.json", self.steering / "config.json"):
            if self.has(config):
                data = self.json(config, "its step")
                for role in ("base", "chat"):
                    if isinstance(data.get(role), str):
                        found.setdefault(role, data[role])
        for dictionary in self.analysed_dictionaries():
            config = self.analysis(dictionary) / "config.json"
            if self.has(config) and "layer" in self.json(config, ANALYZE):
                found["layer"] = self.json(config, ANALYZE)["layer"]
                break
        return found

    def dictionaries(self) -> list[str]:
        """Dictionaries trained or analysed in this run, by folder name."""
        names = set()
        for folder in (self.dictionaries_folder, self.analyses):
            if folder.is_dir():
                names |= {p.name for p in folder.iterdir() if p.is_dir()}
        return sorted(names)

    def analysed_dictionaries(self) -> list[str]:
        return [d for d in self.dictionaries() if self.has(self.analysis(d) / "latents.parquet")]

    # --- analysis (one dictionary) -----------------------------------------------------------

    def latents(self, dictionary: str) -> pd.DataFrame:
        return self.parquet(self.analysis(dictionary) / "latents.parquet", ANALYZE, LATENT_COLUMNS)

    def examples(self, dictionary: str, latent: int) -> pd.DataFrame:
        """The stored examples of one latent (empty when the analysis kept none for it)."""
        path = self.file(self.analysis(dictionary) / "examples.parquet", ANALYZE)
        return _examples_of_latent(str(path), _stamp(path), int(latent))

    def latents_with_examples(self, dictionary: str) -> list[int]:
        """The latents the analysis stored examples for (empty without examples.parquet)."""
        path = self.analysis(dictionary) / "examples.parquet"
        if not self.has(path):
            return []
        return sorted(_example_index(str(path), _stamp(path)).rows)

    def token_strings(self, dictionary: str) -> dict[int, str]:
        path = self.file(self.analysis(dictionary) / "tokens.json", ANALYZE)
        return _read_token_strings(str(path), _stamp(path))

    def rows_of(self, where: str | Path, latent: int, columns: tuple[str, ...]) -> pd.DataFrame:
        """The rows of a per-latent analysis table that belong to `latent`."""
        self.parquet(where, ANALYZE, ("latent",) + columns)  # present, with these columns
        path = self.root / where
        return _rows_of_latent(str(path), _stamp(path), int(latent))

    # --- steps other than the analysis ------------------------------------------------------

    def dictionary_config(self, dictionary: str) -> dict[str, Any]:
        return self.json(self.dictionary(dictionary) / "config.json", "`interp train`")

    def dictionary_eval(self, dictionary: str) -> dict[str, Any] | None:
        path = self.dictionary(dictionary) / "eval.json"
        return self.json(path, "`interp train`") if self.has(path) else None

    def steering_maps(self) -> list[str]:
        """Saved steering maps as `task/method` (steering/maps/<task>/<method>/ holds what
        `SteeringMap.save` writes)."""
        from steering.steering_map import MAP_CONFIG

        folder = self.maps_folder
        if not folder.is_dir():
            return []
        return sorted(str(p.parent.relative_to(folder)) for p in folder.glob(f"*/*/{MAP_CONFIG}"))


def current_run() -> RunFolder:
    """The run folder chosen in the sidebar, else the one `interp app` was started on."""
    chosen = st.session_state.get(RUN_FOLDER_KEY) or os.environ.get(RUN_FOLDER_ENV, "")
    if not chosen.strip():
        raise MissingPiece(
            "no run folder given: start the app with `interp app runs/NAME` or type the folder in "
            "the sidebar"
        )
    return RunFolder(Path(chosen.strip()).expanduser())


def current_dictionary(run: RunFolder) -> str:
    """The dictionary chosen in the sidebar (the first analysed one by default)."""
    analysed = run.analysed_dictionaries()
    if not analysed:
        raise MissingPiece(
            f"no analysed dictionary in run folder {run.root}: "
            f"analysis/<dictionary>/latents.parquet is missing; {ANALYZE} writes it"
        )
    chosen = st.session_state.get(DICTIONARY_KEY)
    return chosen if chosen in analysed else analysed[0]


def show_missing(error: MissingPiece) -> NoReturn:
    """Show a missing piece and stop the page there."""
    st.error(str(error), icon=":material/folder_off:")
    st.stop()


def load_or_stop(read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, or the missing-piece message and the end of the page."""
    try:
        return read(*args)
    except MissingPiece as error:
        show_missing(error)
