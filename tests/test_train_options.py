"""The training options (crosscoders.train_options): one declaration shared by the CLI, the
pipeline and the Python API, and defaults that fit the run's length (issue 17)."""

import typer.main

from crosscoders.config import CrossCoderConfig, Source, TrainingConfig
from crosscoders.train_options import StreamSpec, TrainOptions
from crosscoders.trainer import learning_rate
from interp.cli.main import app
from interp.options import option_fields

SOURCES = [Source("base-model", 2, "base"), Source("chat-model", 2, "chat")]


def _command_params(*path: str) -> dict:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def test_a_short_run_without_a_warmup_reaches_the_peak_learning_rate():
    """The README tour's 46 steps: the configs' 1000-step warm-up kept the rate below 5% of lr;
    unset, the warm-up is a tenth of the run (4 steps) and step 4 runs at the full rate."""
    options = TrainOptions(dict_size=256, lr=1e-3)
    training = options.training_config(46)
    assert training.warmup_steps == 4
    assert learning_rate(4, training) == 1e-3
    assert max(learning_rate(step, training) for step in range(46)) == 1e-3


def test_a_long_run_keeps_the_default_warmup_and_threshold_start():
    options = TrainOptions(dict_size=256)
    assert options.training_config(50_000).warmup_steps == 1000
    assert options.coder_config(50_000, 8, SOURCES).threshold_start_step == 1000


def test_an_unset_threshold_start_is_a_tenth_of_a_short_run():
    assert TrainOptions(dict_size=256).coder_config(300, 8, SOURCES).threshold_start_step == 30


def test_a_set_warmup_longer_than_the_run_is_kept_with_a_one_line_warning(capsys):
    options = TrainOptions(dict_size=256, warmup_steps=1000, threshold_start_step=500)
    assert options.training_config(46).warmup_steps == 1000
    assert options.coder_config(46, 8, SOURCES).threshold_start_step == 500
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("warning: warmup_steps = 1000 >= the run's 46 steps")
    assert lines[1].startswith("warning: threshold_start_step = 500 >= the run's 46 steps")


def test_a_set_warmup_inside_the_run_is_kept_silently(capsys):
    options = TrainOptions(dict_size=256, warmup_steps=30, threshold_start_step=100)
    assert options.training_config(300).warmup_steps == 30
    assert options.coder_config(300, 8, SOURCES).threshold_start_step == 100
    assert capsys.readouterr().err == ""


def test_decoder_init_norm_defaults_by_activation():
    """Minder et al.'s L1 crosscoders start their decoder columns at norm 0.005."""
    l1 = TrainOptions(dict_size=256, activation="relu_l1").coder_config(100, 8, SOURCES)
    top_k = TrainOptions(dict_size=256).coder_config(100, 8, SOURCES)
    chosen = TrainOptions(dict_size=256, activation="relu_l1", decoder_init_norm=0.1)
    assert (l1.decoder_init_norm, top_k.decoder_init_norm) == (0.005, 1.0)
    assert chosen.coder_config(100, 8, SOURCES).decoder_init_norm == 0.1


def test_the_cli_batch_size_is_the_training_configs():
    """The drift of issue 17: the CLI said 2048, TrainingConfig 4096."""
    assert TrainingConfig(n_steps=1).batch_size == 2048
    for command in ("crosscoder", "sae"):
        assert _command_params("train", command)["batch_size"].default == 2048


def test_every_option_field_is_a_cli_option_with_its_default_and_help():
    for command in ("crosscoder", "sae"):
        params = _command_params("train", command)
        for entry in option_fields(TrainOptions):
            param = params[entry.name]
            assert param.help == entry.metadata["help"]
            assert param.required == (entry.name == "dict_size")
            if not param.required:
                assert param.default == entry.default, entry.name
        for entry in option_fields(StreamSpec):  # unset = no stream; the help names the default
            param = params[entry.name]
            assert param.default is None
            assert param.help.startswith(entry.metadata["help"])
            if entry.default is not None and entry.name not in ("base", "chat"):
                assert param.help.endswith(f"(default {entry.default})")


def test_options_mirroring_a_config_field_take_its_default():
    options = TrainOptions(dict_size=256)
    coder = CrossCoderConfig(n_sources=2, d_model=8, dict_size=256)
    training = TrainingConfig(n_steps=1)
    assert (options.k, options.activation, options.l1_coefficient) == (
        coder.k,
        coder.activation,
        coder.l1_coefficient,
    )
    assert (options.batch_size, options.lr, options.seed, options.log_every) == (
        training.batch_size,
        training.lr,
        training.seed,
        training.log_every,
    )


def test_the_precision_option_reaches_the_training_config():
    assert TrainOptions(dict_size=256).training_config(10).precision == "auto"
    assert TrainOptions(dict_size=256, precision="bf16").training_config(10).precision == "bf16"
    assert _command_params("train", "crosscoder")["precision"].default == "auto"
