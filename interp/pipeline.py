"""The main job as a pipeline: a TOML config names every step's settings, `interp run CONFIG` runs
any subset of the steps in order, and a step whose output exists with the same config is skipped.

A step is one `interp` command (so the pipeline adds no second code path): the CLI's step runner
(interp.cli.pipeline_cmd.run_step) builds that command's options dataclasses from the config's
table for the step and calls the library function the command calls, with what the pipeline sets
itself from `[run]` and the run folder's layout (models, layer, folders; `Step.fixed`). The whole
config is checked before the first step runs (interp.cli.pipeline_cmd.check_steps). After a step
succeeds, `RUN/pipeline/<step>.json` records its command, options, those fixed values and the
models' weights identity; a rerun with the same record skips it, a changed one reruns it (each
command then resumes, or refuses a different config or other models in an existing folder unless
its table sets `overwrite = true`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
# a [train.NAME] step with source = "stream": its command is "train KIND" + STREAMED
STREAMED = " stream"
PROFILES_DIR = PROJECT_DATA_DIR / "pipelines"


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "cache", "train.batchtopk", "analyze.batchtopk"
    command: str  # the `interp` command it runs, e.g. "train crosscoder", "dict eval"
    table: str  # the config table of its options, e.g. "train.batchtopk", "analyze"
    options: dict[str, Any] = field(default_factory=dict)  # that table's keys and values
    # what the pipeline sets itself (folders, models, layers): the keyword arguments of the
    # function the command runs, next to the options dataclasses built from `options`
    fixed: dict[str, Any] = field(default_factory=dict)


def _step(name: str, command: str, table: str, options: dict, **fixed: Any) -> Step:
    """A step running `interp COMMAND` with the table's options; a table may not set what the
    pipeline sets (its value would silently lose or win against the pipeline's folders and
    models)."""
    _refuse_fixed(table, options, fixed)
    return Step(name, command, table, dict(options), fixed)


def _refuse_fixed(table: str, options: dict, fixed: dict) -> None:
    clash = sorted(set(options) & set(fixed))
    if clash:
        raise InterpError(
            f"[{table}] sets {clash[0]!r}, which the pipeline sets itself (from [run] and the "
            "run folder's layout): remove it"
        )


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


def plan(config: dict) -> list[Step]:
    """Every step the config describes, in execution order."""
    run = config["run"]
    out = Path(run["out"])
    layout = RunFolder(out)
    layer = str(run.get("layer", "0.5"))
    base, chat = run.get("base", DEFAULT_PAIR[0]), run.get("chat", DEFAULT_PAIR[1])
    steps: list[Step] = []
    if "cache" in config:
        steps.append(
            _step(
                "cache", "cache", "cache", config["cache"],
                pair=(base, chat), layers=layer, out=layout.cache,
            )
        )  # fmt: skip
    dictionaries = config.get("train", {})
    for name, options in dictionaries.items():
        options = dict(options)
        kind = options.pop("kind", "crosscoder")
        source = options.pop("source", "cache")
        table = f"train.{name}"
        out_folder = layout.dictionary(name)
        if source == "cache":
            step = _step(table, f"train {kind}", table, options, out=out_folder, cache=layout.cache)
        elif source == "stream":
            # streamed from [run]'s models and layer (StreamSpec's base, chat, layers): the
            # table may not set them, and they join its options (the stream's own dataclass)
            from_run = {"base": base, "chat": chat, "layers": str(layer)}
            _refuse_fixed(table, options, from_run)
            streamed = {**options, **from_run}
            step = _step(table, f"train {kind}{STREAMED}", table, streamed, out=out_folder)
        else:
            raise InterpError(f'[{table}] source = {source!r}: expected "cache" or "stream"')
        steps.append(step)
    if "eval" in config:
        for name in dictionaries:
            folder = layout.dictionary(name)
            eval_step = _step(
                f"eval.{name}", "dict eval", "eval", config["eval"],
                dictionary=folder, cache=layout.cache,
            )  # fmt: skip
            steps.append(eval_step)
    if "analyze" in config:
        for name in dictionaries or [None]:
            analyze_step = _step(
                f"analyze.{name}", "analyze", "analyze", config["analyze"],
                run=out, dict_name=name,
            )  # fmt: skip
            steps.append(analyze_step)
    if "diff_sae" in config:
        steps.append(_step("diff_sae", "diff-sae", "diff_sae", config["diff_sae"], run=out))
    models = {"base": base, "chat": chat}
    if "adl" in config:
        steps.append(
            _step("adl", "adl", "adl", config["adl"], **models, layer=layer, out=layout.adl)
        )
    if "profile" in config:
        steps.append(
            _step("profile", "change-profile", "profile", config["profile"], run=out, **models)
        )
    if "tuco" in config:
        steps.append(
            _step("tuco", "tuco experiments", "tuco", config["tuco"], **models, out=layout.tuco)
        )
    if "steer" in config:
        options = dict(config["steer"])
        if options.get("crosscoder") in dictionaries:  # a [train.NAME] step: its dictionary
            options["crosscoder"] = str(layout.dictionary(options["crosscoder"]))
        steps.append(_step("steer", "steer eval", "steer", options, **models, out=layout.steering))
    for kind, folder in (
        ("weights", layout.weights),
        ("horizon", layout.horizon),
        ("amplify", layout.amplification),
    ):
        if kind in config:
            steps.append(_step(kind, kind, kind, config[kind], **models, out=folder))
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


def step_record(step: Step, models: dict[str, str]) -> dict:
    """What a finished step is recorded as: its command, options, what the pipeline set and the
    models' weights identity (a rerun with the same record skips the step)."""
    fixed = {
        key: [str(item) for item in value] if isinstance(value, tuple) else
        (str(value) if isinstance(value, Path) else value)
        for key, value in step.fixed.items()
    }  # fmt: skip
    return {"command": step.command, "options": step.options, "fixed": fixed, "models": models}


def is_done(out: Path, step: Step, models: dict[str, str]) -> bool:
    path = record_path(out, step)
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    record.pop("seconds", None)
    return record == step_record(step, models)


def mark_done(out: Path, step: Step, seconds: float, models: dict[str, str]) -> None:
    record = step_record(step, models) | {"seconds": round(seconds, 1)}
    atomic_write_json(record_path(out, step), record)


def describe(step: Step) -> str:
    """`interp train crosscoder (dict_size=2048, k=32, ...)`: the command and the table's
    options, as the run prints it."""
    options = ", ".join(f"{key}={value!r}" for key, value in step.options.items())
    return f"interp {step.command}" + (f" ({options})" if options else "")


def run_pipeline(
    config: dict,
    run_step: Callable[[Step], None],
    only: Sequence[str] | None = None,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run the selected steps through `run_step(step)` (the CLI's interp.cli.pipeline_cmd.run_step:
    the library function behind the step's command, with the options dataclasses built from its
    table); returns the names of the steps it ran."""
    out = Path(config["run"]["out"])
    out.mkdir(parents=True, exist_ok=True)
    ran = []
    models = models_identity(config)
    for step in select(plan(config), only):
        if is_done(out, step, models):
            echo(f"[skip] {step.name}: done with the same config and models")
            continue
        echo(f"[run]  {step.name}: {describe(step)}")
        start = time.perf_counter()
        run_step(step)
        seconds = time.perf_counter() - start
        mark_done(out, step, seconds, models)
        echo(f"[done] {step.name}: {seconds:.0f} s")
        ran.append(step.name)
    return ran
