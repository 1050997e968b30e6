"""The main job as a pipeline: a TOML config names every step's settings, `interp run CONFIG` runs
any subset of the steps in order, and a step whose output exists with the same config is skipped.

A step is one `interp` command (so the pipeline adds no second code path): its argv is built from
the config's table for that step plus the run-level `[run]` settings (models, layer, output folder).
After a step succeeds, `RUN/pipeline/<step>.json` records its argv and the models' weights
identity; a rerun with the same argv and weights skips it, a changed one reruns it (each command
then resumes, or refuses a different config or other models in an existing folder unless its
table sets `overwrite = true` / `force = true`).

    [run]        out, base, chat, layer
    [cache]      `interp cache`             -> RUN/cache
    [train.NAME] `interp train crosscoder`  -> RUN/dictionaries/NAME (one table per dictionary;
                 `kind = "sae"` trains an SAE instead; `source = "stream"` trains from [run]'s
                 models and layer with the table's stream options instead of RUN/cache)
    [eval]       `interp dict eval`         -> RUN/dictionaries/NAME/eval.json (each dictionary)
    [analyze]    `interp analyze`           -> RUN/analysis/NAME (each dictionary)
    [diff_sae]   `interp diff-sae`          -> RUN/diff-sae (difference SAE on the cache)
    [adl]        `interp adl`               -> RUN/adl (Activation Difference Lens)
    [profile]    `interp change-profile`    -> RUN/change_profile
    [tuco]       `interp tuco experiments`  -> RUN/tuco
    [steer]      `interp steer eval`        -> RUN/steering (`crosscoder = "NAME"` names a
                 [train.NAME] dictionary, for the `latents` method)
    [weights]    `interp weights`           -> RUN/weights (dW spectra, intruder dimensions)
    [horizon]    `interp horizon`           -> RUN/horizon (entropy, branching factor)
    [amplify]    `interp amplify`           -> RUN/amplification (amplified generations)
"""

import json
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from interp.builtin_models import DEFAULT_PAIR, weights_identity
from interp.errors import InterpError
from interp.fileio import atomic_write_json
from interp.paths import PROJECT_DATA_DIR
from interp.run_folder import RunFolder

STEP_KINDS = (
    *("cache", "train", "eval", "analyze", "diff_sae", "adl", "profile", "tuco", "steer"),
    *("weights", "horizon", "amplify"),
)
RUN_KEYS = ("out", "base", "chat", "layer")
PROFILES_DIR = PROJECT_DATA_DIR / "pipelines"


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "cache", "train.batchtopk", "analyze.batchtopk"
    argv: tuple[str, ...]
    table: str = ""  # the config table of its options, e.g. "train.batchtopk", "analyze"
    options: tuple[tuple[str, object], ...] = ()  # that table's keys and values
    fixed: tuple[str, ...] = ()  # options the pipeline sets itself (folders, models), as keys


def _step(
    name: str, table: str, fixed: Sequence[str], options: dict, tail: Sequence[str] = ()
) -> Step:
    """A step running `interp *fixed *options *tail`; a table may not set what the pipeline sets
    (its value would silently lose or win against the pipeline's folders and models)."""
    fixed_keys = tuple(
        token[2:].replace("-", "_") for token in (*fixed, *tail) if token.startswith("--")
    )
    clash = sorted(set(options) & set(fixed_keys))
    if clash:
        raise InterpError(
            f"[{table}] sets {clash[0]!r}, which the pipeline sets itself (from [run] and the "
            "run folder's layout): remove it"
        )
    argv = (*fixed, *options_to_argv(options), *tail)
    return Step(name, argv, table, tuple(options.items()), fixed_keys)


def load_config(path: Path) -> dict:
    if not path.is_file():
        raise InterpError(f"pipeline config {str(path)!r} does not exist: expected a TOML file")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InterpError(f"pipeline config {str(path)!r} is not valid TOML: {error}") from None
    unknown = set(config) - {"run", *STEP_KINDS}
    if unknown:
        raise InterpError(
            f"unknown sections {sorted(unknown)} in {path}: expected run, {', '.join(STEP_KINDS)}"
        )
    check_tables(config, str(path))
    return config


def check_tables(config: dict, source: str) -> None:
    """The shape of a config: [run] with `out` and only its own keys (strings; `layer` may be a
    number), a table per step kind, and [train] holding one table per dictionary. The keys of
    each step table are checked against its command's options by the CLI (interp run)."""
    run = config.get("run", {})
    if not isinstance(run, dict) or "out" not in run:
        raise InterpError(f"{source}: [run] needs `out` (the run folder)")
    for key, value in run.items():
        if key not in RUN_KEYS:
            raise InterpError(
                f"{source}: [run] has no key {key!r}: expected one of {', '.join(RUN_KEYS)}"
            )
        number = key == "layer" and isinstance(value, int | float) and not isinstance(value, bool)
        if not isinstance(value, str) and not number:
            raise InterpError(f"{source}: [run] {key} = {value!r}: expected a string")
    for kind in STEP_KINDS:
        if kind in config and not isinstance(config[kind], dict):
            raise InterpError(f"{source}: `{kind}` must be a table ([{kind}])")
    for name, table in config.get("train", {}).items():
        if not isinstance(table, dict):
            raise InterpError(
                f"{source}: [train] key {name!r}: expected one table per dictionary, "
                f"e.g. [train.{name}] with dict_size = ..."
            )


def options_to_argv(options: dict) -> list[str]:
    """`{"dict_size": 4096, "overwrite": true}` -> `["--dict-size", "4096", "--overwrite"]`."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def plan(config: dict) -> list[Step]:
    """Every step the config describes, in execution order."""
    run = config["run"]
    out = Path(run["out"])
    layout = RunFolder(out)
    cache = str(layout.cache)
    pair = [run.get("base", DEFAULT_PAIR[0]), run.get("chat", DEFAULT_PAIR[1])]
    models = ("--base", pair[0], "--chat", pair[1])
    steps: list[Step] = []
    if "cache" in config:
        argv = ["cache", "--pair", *pair, "--layers", str(run.get("layer", "0.5"))]
        steps.append(_step("cache", "cache", argv, config["cache"], ["--out", cache]))
    dictionaries = config.get("train", {})
    for name, options in dictionaries.items():
        options = dict(options)
        kind = options.pop("kind", "crosscoder")
        source = options.pop("source", "cache")
        if source == "cache":
            data = ["--cache", cache]
        elif source == "stream":
            data = [*models, "--layers", str(run.get("layer", "0.5"))]
        else:
            raise InterpError(f'[train.{name}] source = {source!r}: expected "cache" or "stream"')
        argv = ["train", kind, *data, "--out", str(layout.dictionary(name))]
        steps.append(_step(f"train.{name}", f"train.{name}", argv, options))
    if "eval" in config:
        for name in dictionaries:
            argv = ["dict", "eval", str(layout.dictionary(name)), "--cache", cache]
            steps.append(_step(f"eval.{name}", "eval", argv, config["eval"]))
    if "analyze" in config:
        for name in dictionaries or [None]:
            argv = ["analyze", str(out), *(["--dict", name] if name else [])]
            steps.append(_step(f"analyze.{name}", "analyze", argv, config["analyze"]))
    if "diff_sae" in config:
        steps.append(_step("diff_sae", "diff_sae", ["diff-sae", str(out)], config["diff_sae"]))
    if "adl" in config:
        argv = ["adl", *models, "--layer", str(run.get("layer", "0.5")), "--out", str(layout.adl)]
        steps.append(_step("adl", "adl", argv, config["adl"]))
    if "profile" in config:
        argv = ["change-profile", str(out), *models]
        steps.append(_step("profile", "profile", argv, config["profile"]))
    if "tuco" in config:
        argv = ["tuco", "experiments", *models, "--out", str(layout.tuco)]
        steps.append(_step("tuco", "tuco", argv, config["tuco"]))
    if "steer" in config:
        options = dict(config["steer"])
        if options.get("crosscoder") in dictionaries:  # a [train.NAME] step: its dictionary
            options["crosscoder"] = str(layout.dictionary(options["crosscoder"]))
        argv = ["steer", "eval", *models, "--out", str(layout.steering)]
        steps.append(_step("steer", "steer", argv, options))
    for kind, command, folder in (
        ("weights", "weights", "weights"),
        ("horizon", "horizon", "horizon"),
        ("amplify", "amplify", "amplification"),
    ):
        if kind in config:
            argv = [command, *models, "--out", str(out / folder)]
            steps.append(_step(kind, kind, argv, config[kind]))
    return steps


def select(steps: list[Step], only: Sequence[str] | None) -> list[Step]:
    """Keep the steps named in `only` (a kind such as `train` selects every `train.*` step)."""
    if not only:
        return steps
    known = {step.name for step in steps} | {step.name.split(".")[0] for step in steps}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise InterpError(f"unknown steps {unknown}: this config has {sorted(known)}")
    return [s for s in steps if s.name in only or s.name.split(".")[0] in only]


def record_path(out: Path, step: Step) -> Path:
    return RunFolder(out).pipeline_record(step.name)


def models_identity(config: dict) -> dict[str, str]:
    """The weights identity of the run's two models: a step is only done if it was done with the
    same weights (a retrained chat-tune reruns every step, whose commands then refuse to mix)."""
    run = config["run"]
    specs = [run.get("base", DEFAULT_PAIR[0]), run.get("chat", DEFAULT_PAIR[1])]
    return {spec: weights_identity(spec) for spec in specs}


def is_done(out: Path, step: Step, models: dict[str, str]) -> bool:
    path = record_path(out, step)
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    return record.get("argv") == list(step.argv) and record.get("models") == models


def mark_done(out: Path, step: Step, seconds: float, models: dict[str, str]) -> None:
    path = record_path(out, step)
    record = {"argv": list(step.argv), "models": models, "seconds": round(seconds, 1)}
    atomic_write_json(path, record)


def run_pipeline(
    config: dict,
    invoke: Callable[[Sequence[str]], None],
    only: Sequence[str] | None = None,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run the selected steps through `invoke(argv)`; returns the names of the steps it ran."""
    out = Path(config["run"]["out"])
    out.mkdir(parents=True, exist_ok=True)
    ran = []
    models = models_identity(config)
    for step in select(plan(config), only):
        if is_done(out, step, models):
            echo(f"[skip] {step.name}: done with the same config and models")
            continue
        echo(f"[run]  {step.name}: interp {' '.join(step.argv)}")
        start = time.perf_counter()
        invoke(step.argv)
        seconds = time.perf_counter() - start
        mark_done(out, step, seconds, models)
        echo(f"[done] {step.name}: {seconds:.0f} s")
        ran.append(step.name)
    return ran
