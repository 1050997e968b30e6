"""The science profile (`interp evaluate-diffing data/pipelines/science.toml`): every diffing
method on every organism, then one score table.

The profile is a pipeline config (interp/pipeline.py) whose `[run]` names the run folder and the
layer, plus one `[organisms.NAME]` table per organism:

    [organisms.NAME]
    base = "gemma-3-270m"
    chat = "gemma-3-270m-chat"
    description = "..."
    vocabulary = ["sorry", ...]            # the planted vocabulary, or
    vocabulary_file = "data/x/config.json" # a JSON file whose "vocabulary" key holds it
                                           # (relative paths: the working directory, then the
                                           # project root)

Each organism runs the profile's step tables (cache, train.*, analyze, diff_sae, adl, profile,
...) as a pipeline into `RUN/<organism>/` (so finished steps are skipped on a rerun), then
crosscoders.diffing.evaluate_diffing scores it; `RUN/diffing.json` and `RUN/diffing.md` hold the
table over all organisms with each organism's change profile beside it.
"""

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

from crosscoders.diffing.evaluate_diffing import Organism, score_organism, write_table
from crosscoders.diffing.options import ScienceOptions
from interp.errors import InterpError
from interp.options import comma_separated
from interp.paths import PROJECT_DATA_DIR
from interp.pipeline import Step, plan, run_pipeline
from interp.run_folder import RunFolder

PROJECT_ROOT = PROJECT_DATA_DIR.parent


def read_profile(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"science profile {str(path)!r} does not exist: expected a TOML file")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InterpError(f"science profile {str(path)!r} is not valid TOML: {error}") from None
    if not config.get("organisms"):
        raise InterpError(f"{path}: expected at least one [organisms.NAME] table")
    if "out" not in config.get("run", {}):
        raise InterpError(f"{path}: [run] needs `out` (the run folder)")
    return config


def _vocabulary_file(name: str, spec: str) -> list[str]:
    candidates = [Path(spec)] if Path(spec).is_absolute() else [Path(spec), PROJECT_ROOT / spec]
    for path in candidates:
        if path.is_file():
            words = json.loads(path.read_text()).get("vocabulary")
            if not isinstance(words, list) or not words:
                raise InterpError(
                    f'organism {name!r}: {str(path)!r} has no "vocabulary" list: expected the '
                    "planted words its recipe fixed before training"
                )
            return [str(word) for word in words]
    raise InterpError(
        f"organism {name!r}: vocabulary file {spec!r} does not exist (looked in the working "
        f"directory and {str(PROJECT_ROOT)!r}): expected the organism's recipe"
    )


def organisms_of(config: dict, names: list[str] | None = None) -> list[Organism]:
    tables = config["organisms"]
    unknown = sorted(set(names or []) - set(tables))
    if unknown:
        raise InterpError(f"unknown organisms {unknown}: the profile has {sorted(tables)}")
    out = []
    for name, table in tables.items():
        if names and name not in names:
            continue
        if "chat" not in table or "base" not in table:
            raise InterpError(f"organism {name!r}: expected `base` and `chat` model specs")
        if "vocabulary" in table:
            vocabulary = [str(word) for word in table["vocabulary"]]
        elif "vocabulary_file" in table:
            vocabulary = _vocabulary_file(name, table["vocabulary_file"])
        else:
            raise InterpError(
                f"organism {name!r}: expected `vocabulary` or `vocabulary_file` (the planted "
                "words that score recovery)"
            )
        out.append(
            Organism(
                name=name,
                base=table["base"],
                chat=table["chat"],
                vocabulary=vocabulary,
                description=table.get("description", ""),
                dictionaries=list(config.get("train", {})),
            )
        )
    return out


def organism_pipeline(config: dict, organism: Organism, run_dir: Path) -> dict:
    """The pipeline config of one organism: the profile's step tables, its models, its folder."""
    steps = {k: v for k, v in config.items() if k not in ("run", "organisms")}
    run = {**config["run"], "out": str(run_dir / organism.name)}
    run.update(base=organism.base, chat=organism.chat)
    return {"run": run, **steps}


def _profile_summary(run_dir: Path) -> dict:
    path = RunFolder(run_dir).change_profile / "profile.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    from crosscoders.diffing.change_profile import markdown

    pieces = [markdown(data["pass"]["rows"])]
    note = (
        "||h_chat - h_base|| / ||h_base|| (ratio of mean norms) per layer and token class: "
        f"a pass over {data['pass']['n_texts']} held-out wiki texts and "
        f"{data['pass']['n_chats']} held-out chat-tune conversations"
    )
    if "cache" in data:
        pieces.append(markdown(data["cache"]["rows"]))
        note += f"; second table: the run's cache ({data['cache']['n_tokens']} tokens)"
    return {"note": note + ".", "markdown": "\n".join(pieces), "data": data}


StepCheck = Callable[[list[Step], list[Step], str], None]  # (steps, selected, source)
StepRunner = Callable[[Step], None]  # runs one step (the library function of its command)


def evaluate(
    config_path: Path,
    options: ScienceOptions,
    check_steps: StepCheck,
    run_step: StepRunner,
    out: Path | None = None,
) -> tuple[Path, Path]:
    """Run each organism's pipeline (unless `options.score_only`) and score it. The caller (the
    CLI) says how a pipeline's steps are checked and run, so this module never imports the
    CLI."""
    from interp.models import load_model

    config = read_profile(config_path)
    run_dir = Path(out) if out is not None else Path(config["run"]["out"])
    names = comma_separated(options.organisms) if options.organisms else None
    organisms = organisms_of(config, names)
    max_nll, min_distinct = options.max_nll, options.min_distinct
    if not options.score_only:  # every organism's steps checked before the first one runs
        for organism in organisms:
            steps = plan(organism_pipeline(config, organism, run_dir))
            check_steps(steps, steps, f"{config_path} [organisms.{organism.name}]")
    cells, readings, profiles = [], {}, {}
    for organism in organisms:
        pipeline = organism_pipeline(config, organism, run_dir)
        if not options.score_only:
            run_pipeline(pipeline, run_step)
        folder = run_dir / organism.name
        chat = load_model(organism.chat, options.model_dtype) if organism.dictionaries else None
        organism_cells, organism_readings = score_organism(
            organism,
            folder,
            chat.model if chat else None,
            chat.tokenizer if chat else None,
            max_nll,
            min_distinct,
        )
        cells += organism_cells
        readings[organism.name] = organism_readings
        profiles[organism.name] = _profile_summary(folder)
    return write_table(run_dir, cells, organisms, readings, profiles)
