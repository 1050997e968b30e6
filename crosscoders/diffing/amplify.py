"""Amplified generations (`interp amplify`): greedy completions of the neutral prompts (ADL's,
crosscoders.diffing.adl.NEUTRAL_PROMPTS: chat-formatted everyday requests that name no planted
domain) under logit amplification (interp/amplification.py), logits_base + alpha (logits_chat -
logits_base), for each alpha; alpha = 0 (base) and 1 (chat, the unamplified reference) always
included. Each generation's mean NLL under the unsteered chat model is recorded, so that the
score table (crosscoders.diffing.evaluate_diffing.amplification_cells) can keep the coherent
ones as for ADL and TuCo.

Output folder: config.json, generations.json = [{method: "amplification", model: "chat",
alpha, prompts, completions, nll}].
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crosscoders.diffing.adl import NEUTRAL_PROMPTS, texts_and_nll
from crosscoders.diffing.output_folder import claim_output_folder
from interp.amplification import logit_amplified
from interp.errors import InterpError
from interp.fileio import atomic_write_json
from interp.generation import complete
from interp.models import ModelPair
from interp.tuco import tokenize_prompts

GENERATIONS = "generations.json"


@dataclass
class AmplifyConfig:
    alphas: list[float] = field(default_factory=lambda: [2.0, 4.0])
    n_prompts: int = len(NEUTRAL_PROMPTS)
    max_new_tokens: int = 32

    def validate(self) -> None:
        if not 1 <= self.n_prompts <= len(NEUTRAL_PROMPTS):
            raise InterpError(
                f"n_prompts = {self.n_prompts}: expected 1..{len(NEUTRAL_PROMPTS)} neutral prompts"
            )
        if self.max_new_tokens < 1:
            raise InterpError(f"max_new_tokens = {self.max_new_tokens}: expected >= 1")

    def all_alphas(self) -> list[float]:
        return sorted({0.0, 1.0, *(float(a) for a in self.alphas)})


def amplified_generations(
    pair: ModelPair, prompts: list[str], alpha: float, max_new_tokens: int
) -> tuple[list[str], list[float]]:
    """Greedy completions under logits_base + alpha (logits_chat - logits_base), and the
    unsteered chat model's mean NLL of each."""
    batch = tokenize_prompts(pair, prompts, chat_template=True, padding_side="left")
    with logit_amplified(pair, alpha):
        new = complete(pair.chat, batch["input_ids"], batch["attention_mask"], max_new_tokens)
    return texts_and_nll(pair.chat.model, pair.tokenizer, batch, new)


def run_amplify(
    pair: ModelPair,
    out: Path,
    config: AmplifyConfig | None = None,
    identity: dict | None = None,
    force: bool = False,
) -> list[dict]:
    config = config or AmplifyConfig()
    config.validate()
    out = Path(out)
    claim_output_folder(out, {**asdict(config), **(identity or {})}, force)
    prompts = list(NEUTRAL_PROMPTS[: config.n_prompts])
    rows = []
    for alpha in config.all_alphas():
        started = time.perf_counter()
        completions, nll = amplified_generations(pair, prompts, alpha, config.max_new_tokens)
        rows.append(
            {
                "method": "amplification",
                "model": "chat",
                "alpha": alpha,
                "prompts": prompts,
                "completions": completions,
                "nll": nll,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        atomic_write_json(out / GENERATIONS, rows)
    return rows
