"""Inputs of benchmarks/gpu_suite.sh.

    python benchmarks/gpu_suite_setup.py pair OUT [--tiny]
        OUT/base and OUT/chat: HF folders with the default pair's config (Gemma 3 270M) and its
        tokenizer (with the Gemma chat template) and random weights (seeds 0 and 1), in bf16.
        Costs of caching, training and the pipeline do not depend on weight values, so this pair
        times them without the real weights. `--tiny`: the same tokenizer and vocabulary with a
        2-block, d = 64 config (the suite's smoke mode on the CPU). `--from SOURCE`: the config
        and tokenizer from a folder `pair-source` wrote (where the Gemma package is not installed).
    python benchmarks/gpu_suite_setup.py pair-source OUT
        OUT: the default pair's config.json and tokenizer files, tokenizer.json xz-compressed
        (benchmarks/gpu_kit.py puts it in the kit for a GPU machine with no package index).
    python benchmarks/gpu_suite_setup.py pipeline PROFILE OUT_TOML --pair BASE CHAT --out RUN
        [--tokens N] [--device D]
        A copy of a pipeline profile (data/pipelines/*.toml) on that pair: [run] out/base/chat
        set, [cache] tokens = N, every table's `device` = D.

The config and tokenizer come from the bundled Gemma package: the dequantized folder in the user
cache when it is there, else read from the GGUF by transformers (config and tokenizer only, the
weights are never dequantized).
"""

import argparse
import json
import lzma
import shutil
import tempfile
import tomllib
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from interp.builtin_models import dequantized_cache_folder, gemma_3_270m_gguf, is_prepared
from interp.chat_template import GEMMA_CHAT_TEMPLATE

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
}


def default_pair_config_and_tokenizer():
    gguf, sha256 = gemma_3_270m_gguf()
    folder = dequantized_cache_folder(sha256)
    if is_prepared(folder):
        return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    options = {"gguf_file": gguf.name}
    return (
        AutoConfig.from_pretrained(gguf.parent, **options),
        AutoTokenizer.from_pretrained(gguf.parent, **options),
    )


def write_pair_source(out: Path) -> None:
    config, tokenizer = default_pair_config_and_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tokenizer_json = out / "tokenizer.json"
    with lzma.open(out / "tokenizer.json.xz", "wb", preset=9) as packed:
        packed.write(tokenizer_json.read_bytes())
    tokenizer_json.unlink()


def pair_source_config_and_tokenizer(source: Path):
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        with lzma.open(source / "tokenizer.json.xz") as packed:
            (Path(folder) / "tokenizer.json").write_bytes(packed.read())
        return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def write_pair(out: Path, tiny: bool, source: Path | None = None) -> None:
    if source is None:
        config, tokenizer = default_pair_config_and_tokenizer()
    else:
        config, tokenizer = pair_source_config_and_tokenizer(source)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    if tiny:
        for name, value in TINY.items():
            setattr(config, name, value)
        config.layer_types = config.layer_types[: TINY["num_hidden_layers"]]
    for seed, role in enumerate(("base", "chat")):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(out / role)
        tokenizer.save_pretrained(out / role)
        del model


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML spelling for {value!r}")


def to_toml(tables: dict) -> str:
    """Tables of scalars and lists, one level of subtables ([train.NAME])."""
    lines = []
    for name, table in tables.items():
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if scalars or not subtables:
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in scalars.items()]
            lines.append("")
        for sub, entries in subtables.items():
            lines.append(f"[{name}.{sub}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in entries.items()]
            lines.append("")
    return "\n".join(lines)


def write_pipeline(args: argparse.Namespace) -> None:
    tables = tomllib.loads(Path(args.profile).read_text())
    tables["run"].update(out=args.out, base=args.pair[0], chat=args.pair[1])
    if args.tokens is not None:
        tables["cache"]["tokens"] = args.tokens
    if args.device is not None:
        for table in tables.values():
            for entries in [table, *(v for v in table.values() if isinstance(v, dict))]:
                if "device" in entries:
                    entries["device"] = args.device
    Path(args.out_toml).write_text(to_toml(tables))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pair = commands.add_parser("pair")
    pair.add_argument("out", type=Path)
    pair.add_argument("--tiny", action="store_true")
    pair.add_argument("--from", dest="source", type=Path)
    pair_source = commands.add_parser("pair-source")
    pair_source.add_argument("out", type=Path)
    pipeline = commands.add_parser("pipeline")
    pipeline.add_argument("profile")
    pipeline.add_argument("out_toml")
    pipeline.add_argument("--pair", nargs=2, required=True, metavar=("BASE", "CHAT"))
    pipeline.add_argument("--out", required=True)
    pipeline.add_argument("--tokens", type=int)
    pipeline.add_argument("--device")
    args = parser.parse_args()
    if args.command == "pair":
        write_pair(args.out, args.tiny, args.source)
    elif args.command == "pair-source":
        write_pair_source(args.out)
    else:
        write_pipeline(args)


if __name__ == "__main__":
    main()
