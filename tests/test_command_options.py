"""Each command's options are its options dataclasses' fields (one declaration: name, default,
help), so the CLI, a pipeline table and the Python API cannot drift apart; and a pipeline table
is built into those same dataclasses."""

from dataclasses import MISSING, fields

import pytest
import typer.main

from interp.cli import main as cli_main
from interp.cli.options import options_from_table
from interp.cli.pipeline_cmd import STEP_COMMANDS, _named
from interp.errors import InterpError
from interp.options import HELP, option_fields
from interp.pipeline import STREAMED

# what each pipeline command takes besides its dataclasses: what a pipeline sets itself (folders,
# models, layers) and options that only make sense on the command line
NOT_FROM_A_TABLE = {
    "cache": {"pair", "layers", "out"},
    "train crosscoder": {"out", "cache", *(f.name for f in fields(_named(
        "crosscoders.train_options:StreamSpec")))},
    "train sae": {"out", "cache", *(f.name for f in fields(_named(
        "crosscoders.train_options:StreamSpec")))},
    # source = "stream": the same CLI command, its stream options from the table (and [run])
    "train crosscoder stream": {"out", "cache"},
    "train sae stream": {"out", "cache"},
    "dict eval": {"dictionary", "cache"},
    "analyze": {"run", "dict_name", "compare"},
    "diff-sae": {"run"},
    "adl": {"base", "chat", "layer", "out"},
    "change-profile": {"run", "base", "chat"},
    "tuco experiments": {"base", "chat", "out"},
    "steer eval": {"base", "chat", "out"},
    "weights": {"base", "chat", "out"},
    "horizon": {"base", "chat", "out"},
    "amplify": {"base", "chat", "out"},
    "steer train": {"base", "chat", "out"},
    "evaluate-diffing": {"config", "out"},
    "tuco score": set(),
    "tuco generate": set(),
    "compare": set(),
    "steer generate": {"map_dir"},
    "organism chat-tune": set(),
    "organism card": set(),
    "organism narrow": set(),
    "organism narrow-card": set(),
    "dict export": {"dictionary"},
    "dict import": {"path"},
    "app": {"run_folder"},
    "run": {"config"},
    "demo": set(),
    "cache verify": {"path"},
    "models": set(),
    "data list": set(),
    "data build": set(),
    "organism judge": set(),
}  # fmt: skip
# commands that are no pipeline step, with their options dataclasses
OTHER_COMMANDS = {
    "steer train": (
        "steering.options:SteerTrainOptions",
        "steering.options:LineasOptions",
        "steering.options:LatentOptions",
    ),
    "evaluate-diffing": ("crosscoders.diffing.options:ScienceOptions",),
    "compare": ("interp.command_options:CompareOptions",),
    "steer generate": ("steering.options:SteerGenerateOptions",),
    "organism chat-tune": ("interp.organism.options:ChatTuneOptions",),
    "organism card": ("interp.organism.options:CardOptions",),
    "organism narrow": ("interp.organism.options:NarrowOptions",),
    "organism narrow-card": ("interp.organism.options:NarrowCardOptions",),
    "tuco score": (
        "interp.command_options:TucoScoreOptions",
        "interp.command_options:TucoPairOptions",
    ),
    "tuco generate": (
        "interp.command_options:TucoGenerateOptions",
        "interp.command_options:TucoPairOptions",
    ),
    "dict export": ("interp.command_options:DictExportOptions",),
    "dict import": ("interp.command_options:DictImportOptions",),
    "app": ("interp.command_options:AppOptions",),
    "run": ("interp.command_options:RunOptions",),
    "demo": ("interp.command_options:DemoOptions",),
    # no options: only an argument, or none
    "cache verify": (),
    "models": (),
    "data list": (),
    "data build": (),
    "organism judge": (),
}
STREAM_FIELDS = {f.name for f in fields(_named("crosscoders.train_options:StreamSpec"))}
OPTION_CLASSES = {path: command.option_classes for path, command in STEP_COMMANDS.items()}
OPTION_CLASSES |= OTHER_COMMANDS


def _command(path: str):
    command = typer.main.get_command(cli_main.app)
    for name in path.removesuffix(STREAMED).split():
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", sorted(OPTION_CLASSES))
def test_command_options_are_its_dataclass_fields(path):
    params = {param.name: param for param in _command(path).params if param.name != "help"}
    declared = [
        entry for reference in OPTION_CLASSES[path] for entry in option_fields(_named(reference))
    ]
    assert sorted(set(params) - {entry.name for entry in declared}) == sorted(
        NOT_FROM_A_TABLE[path]
    )
    for entry in declared:
        param = params[entry.name]
        if path.endswith(STREAMED) and entry.name in STREAM_FIELDS:
            # unset on a CLI that also takes --cache (unset = no stream); the table's defaults
            # are the dataclass's
            assert param.default is None and not param.required, (path, entry.name)
        elif entry.default is MISSING:
            assert param.required, entry.name
        else:
            assert param.default == entry.default, (path, entry.name)
        assert param.help.startswith(entry.metadata[HELP]), (path, entry.name)


def _command_paths(command, path: str = ""):
    """Every command of the app by its path ("dict export"), a group whose callback takes
    parameters of its own (`interp cache`) included."""
    subcommands = getattr(command, "commands", {})
    if path and (not subcommands or any(p.name != "help" for p in command.params)):
        yield path
    for name, subcommand in subcommands.items():
        yield from _command_paths(subcommand, f"{path} {name}".strip())


def test_every_command_of_the_app_takes_its_options_from_dataclasses():
    paths = set(_command_paths(typer.main.get_command(cli_main.app)))
    covered = {path.removesuffix(STREAMED) for path in OPTION_CLASSES}
    assert {"dict export", "cache", "cache verify", "train sae", "models"} <= paths
    assert sorted(paths - covered) == []
    assert sorted(covered - paths) == []


def test_every_step_kind_of_a_pipeline_has_a_command():
    from interp.pipeline import plan

    config = {
        "run": {"out": "r"},
        **{kind: {} for kind in ("cache", "eval", "analyze", "diff_sae", "adl", "profile")},
        **{kind: {} for kind in ("tuco", "steer", "weights", "horizon", "amplify")},
        "train": {
            "c": {}, "s": {"kind": "sae"},
            "cs": {"source": "stream"}, "ss": {"kind": "sae", "source": "stream"},
        },
    }  # fmt: skip
    assert {step.command for step in plan(config)} == set(STEP_COMMANDS)


def test_a_table_builds_the_commands_dataclass_with_types_and_checks():
    from crosscoders.train_options import TrainControls, TrainOptions

    training, controls = options_from_table(
        [TrainOptions, TrainControls], {"dict_size": 64, "lr": 1, "overwrite": True}, "[t]"
    )
    assert training == TrainOptions(dict_size=64, lr=1.0) and isinstance(training.lr, float)
    assert controls == TrainControls(overwrite=True)
    for table, message in [
        ({"dict_size": 64, "lr": "fast"}, "[t] lr = 'fast': expected a valid number"),
        ({"dict_size": 0}, "[t] dict_size = 0: expected a number > 0"),
        ({"dict_size": 64, "overwrite": 1}, "[t] overwrite = 1: expected true or false"),
        ({"dict_size": 64, "nope": 1}, "[t] has no option 'nope'"),
        ({}, "[t] needs 'dict_size'"),
    ]:
        with pytest.raises(InterpError) as error:
            options_from_table([TrainOptions, TrainControls], table, "[t]")
        assert str(error.value).startswith(message), (table, str(error.value))


# every command by whether its library function loads models to run them: those take
# `--model-dtype` (default auto: bf16 on CUDA, fp32 on the CPU); the others, with the reason
RUNS_MODELS = {
    "cache", "train crosscoder stream", "train sae stream", "dict eval", "analyze", "diff-sae",
    "adl", "change-profile", "horizon", "amplify", "evaluate-diffing", "tuco score",
    "tuco generate", "tuco experiments", "compare", "steer train", "steer eval", "steer generate",
    "organism card", "organism narrow-card",
}  # fmt: skip
NO_MODEL_DTYPE = {
    "weights": "reads weight differences in float32, runs no model",
    "organism chat-tune": "trains in float32 (its teacher's dtype is the config's)",
    "organism narrow": "trains in float32",
    "train crosscoder": "reads a cache",
    "train sae": "reads a cache",
    "dict export": "no model",
    "dict import": "no model",
    "app": "the app's live models load in auto",
    "run": "each step's table has its own",
    "demo": "each step's table has its own",
    "cache verify": "no model",
    "models": "lists the built-ins",
    "data list": "no model",
    "data build": "no model",
    "organism judge": "no model",
}


def test_every_command_that_runs_models_takes_model_dtype_default_auto():
    from interp.options import model_dtype_option

    assert sorted(RUNS_MODELS & set(NO_MODEL_DTYPE)) == []
    assert sorted(set(OPTION_CLASSES) ^ (RUNS_MODELS | set(NO_MODEL_DTYPE))) == []
    declaration = model_dtype_option()
    for path, references in OPTION_CLASSES.items():
        declared = {
            entry.name: entry
            for reference in references
            for entry in option_fields(_named(reference))
        }
        params = {param.name: param for param in _command(path).params}
        if path not in RUNS_MODELS:
            assert "model_dtype" not in declared, path
            continue
        entry = declared["model_dtype"]
        assert entry.default == "auto", path
        assert entry.metadata[HELP].endswith(declaration.metadata[HELP]), path
        assert entry.metadata["check"] == "model_dtype", path
        assert params["model_dtype"].opts == ["--model-dtype"], path
        # the streamed train CLI leaves its stream options unset (training from --cache)
        assert params["model_dtype"].default == (None if path.endswith(STREAMED) else "auto")


def test_a_table_with_the_old_dtype_key_gets_one_line_naming_model_dtype():
    from crosscoders.diffing.options import AdlOptions

    with pytest.raises(InterpError) as error:
        options_from_table([AdlOptions], {"dtype": "bf16"}, "quick.toml: [adl]")
    assert str(error.value) == "quick.toml: [adl] has no option 'dtype': it is now 'model_dtype'"
    (options,) = options_from_table([AdlOptions], {"model_dtype": "bf16"}, "[adl]")
    assert options.model_dtype == "bfloat16"
