"""`interp models` and `interp compare`."""

import json

import typer

from interp.builtin_models import BUILTINS, builtin_status
from interp.chat_template import render_chat
from interp.cli.options import options_from
from interp.command_options import CompareOptions


def models() -> None:
    """List the built-in models: packages installed, dequantized cache present."""
    for name in BUILTINS:
        typer.echo(json.dumps(builtin_status(name)))


@options_from("options", CompareOptions)
def compare(options: CompareOptions) -> None:
    """Base vs chat: the top next tokens and their probabilities on a chat-formatted prompt."""
    import torch

    from interp.models import load_pair_in

    pair = load_pair_in(options.base, options.chat, options.model_dtype, options.device)
    text = render_chat(pair.tokenizer, options.prompt)
    typer.echo(f"prompt (chat template): {text!r}")
    batch = pair.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    for role, loaded in (("base", pair.base), ("chat", pair.chat)):
        with torch.no_grad():
            logits = loaded.model(**batch.to(loaded.device)).logits[0, -1]
        probs = torch.softmax(logits.float(), dim=-1)
        values, ids = probs.topk(options.top)
        shown = ", ".join(
            f"{pair.tokenizer.decode([int(i)])!r} {float(p):.3f}"
            for p, i in zip(values, ids, strict=True)
        )
        typer.echo(f"{role:>4} ({loaded.spec}): {shown}")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("compare")(compare)
