"""TuCo: the Tuning Contribution of Nuti, Franzmeyer and Henriques (ICML 2025).

The fine-tuned (chat) model runs as usual; on every decoder block l a forward hook also evaluates
the pre-trained (base) block l on *exactly* the same input (the fine-tuned stream x_l, the same
position embeddings, masks and position ids) and splits the block's update in two:

    f(x, l)   = block_l(x) - x                       (the whole block: attention + MLP)
    PTC_l     = f^PT(x_l, l)                         pre-trained component
    FTC_l     = f^FT(x_l, l) - f^PT(x_l, l)          fine-tuning component
    x_{l+1}   = x_l + PTC_l + FTC_l                  (only the fine-tuned trajectory propagates)

    TuCo(x)   = ||sum_l FTC_l||_1 / (||sum_l PTC_l||_1 + ||sum_l FTC_l||_1)    norm of the sums
    OutputCo  = ||x_L^FT - x_L^PT||_1 / (||x_L^PT||_1 + ||x_L^FT - x_L^PT||_1)

TuCo is read at the last prompt token, i.e. the last token of the chat template's generation
prompt, before anything is generated. `x_L` is `resid_post[L-1]`, before the final norm.
The cumulative curve at layer l is the TuCo of the model truncated after block l (partial sums
over blocks 0..l); its last entry is TuCo.

Alpha-scaling replaces each block's update by x_{l+1} = x_l + PTC_l + alpha * FTC_l, in forward
passes and in `generate` (KV cache on or off): alpha = 1 is the fine-tuned model, alpha = 0 the
pre-trained model when the two share embeddings, final norm and unembedding.

Embeddings and head: the decomposition runs the *fine-tuned* model, so its token embeddings (x_0),
final norm and unembedding are used, as in the paper. The project's chat-tune is LoRA on attention
and MLP, so these are shared and alpha = 0 reproduces the base model exactly; for a full fine-tune
(e.g. Llama-2-7b vs -chat) alpha = 0 is "pre-trained blocks on fine-tuned embeddings".

Cost: one fine-tuned pass through the decoder blocks plus one pre-trained block per layer (no
unembedding is computed for TuCo); OutputCo adds one pre-trained pass through the blocks.

KV cache: the hook hands the pre-trained block its own `DynamicCache`, created when a new
fine-tuned cache object appears, so the base block never writes into the chat layer's slot.

Recipe for a 7B chat model on a GPU (both models in bf16, ~28 GB; one H100/A100 80 GB):

    interp tuco experiments --base meta-llama/Llama-2-7b-hf --chat meta-llama/Llama-2-7b-chat-hf \
        --device cuda --dtype bfloat16 --n-prompts 200 --batch-size 16 --out runs/llama2-7b/tuco

(`google/gemma-2-2b` / `google/gemma-2-2b-it` or `Qwen/Qwen2.5-7B` / `-Instruct` work the same
way.) In bf16 the reconstruction is exact only to bf16 rounding; use float32 to check it.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, DynamicCache

from interp.errors import InterpError
from interp.generation import complete, encode_prompts, position_ids_from_mask
from interp.hooks import block_output, decoder_layers, residual_stream, with_block_output
from interp.models import ModelPair

# combine(layer, x_l, block_PT(x_l), block_FT(x_l)) -> x_{l+1}
BlockCombiner = Callable[[int, Tensor, Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# The math: small pure functions
# ---------------------------------------------------------------------------------------------


def contribution_ratio(
    base_part: Float[Tensor, "... d_model"], tuned_part: Float[Tensor, "... d_model"]
) -> Float[Tensor, "..."]:
    """||tuned||_1 / (||base||_1 + ||tuned||_1): TuCo with (sum PTC, sum FTC), OutputCo with
    (x_L^PT, x_L^FT - x_L^PT). 0 when both parts vanish."""
    tuned = tuned_part.abs().sum(-1)
    total = base_part.abs().sum(-1) + tuned
    return torch.where(total > 0, tuned / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)


def output_contribution(
    pretrained_final: Float[Tensor, "... d_model"], finetuned_final: Float[Tensor, "... d_model"]
) -> Float[Tensor, "..."]:
    """OutputCo = ||x_L^FT - x_L^PT||_1 / (||x_L^PT||_1 + ||x_L^FT - x_L^PT||_1)."""
    return contribution_ratio(pretrained_final, finetuned_final - pretrained_final)


def last_token_index(attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, " batch"]:
    """Index of the last real token of each row, for left or right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counting one half (the Mann-Whitney U statistic over n_pos * n_neg)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not positives or not negatives:
        raise InterpError(
            f"ROC-AUC needs both classes: got {len(positives)} positives and "
            f"{len(negatives)} negatives"
        )
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


# ---------------------------------------------------------------------------------------------
# Hooks: evaluate the pre-trained block next to each fine-tuned block
# ---------------------------------------------------------------------------------------------


class _SeparateCache:
    """Gives the pre-trained blocks their own KV cache, one per fine-tuned cache object."""

    def __init__(self, config) -> None:
        self.config = config
        self.finetuned: Cache | None = None
        self.pretrained: Cache | None = None

    def swap(self, kwargs: dict) -> dict:
        swapped = dict(kwargs)
        for key, value in kwargs.items():
            if isinstance(value, Cache):
                if value is not self.finetuned:
                    if not isinstance(value, DynamicCache):
                        raise InterpError(
                            f"TuCo hooks support a dynamic KV cache only, got "
                            f"{type(value).__name__}: leave `cache_implementation` unset"
                        )
                    self.finetuned, self.pretrained = value, DynamicCache(config=self.config)
                swapped[key] = self.pretrained
        return swapped


@contextmanager
def pretrained_blocks_alongside(pair: ModelPair, combine: BlockCombiner) -> Iterator[None]:
    """While active, every block l of `pair.chat.model` also runs `pair.base.model`'s block l on
    the same arguments and outputs `combine(l, x_l, block_PT(x_l), block_FT(x_l))`."""
    finetuned_blocks = decoder_layers(pair.chat.model)
    pretrained_blocks = decoder_layers(pair.base.model)
    if pair.base.model is pair.chat.model:
        raise InterpError(
            f"base and chat are the same model object ({pair.chat.spec!r}): the hooked block "
            "would call itself; load the model twice for an identical pair"
        )
    caches = _SeparateCache(pair.base.model.config)

    def hook_for(layer: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Tensor | tuple):
            x = args[0] if args else kwargs["hidden_states"]
            pretrained_out = block_output(pretrained_blocks[layer](*args, **caches.swap(kwargs)))
            return with_block_output(
                output, combine(layer, x, pretrained_out, block_output(output))
            )

        return hook

    handles = [
        block.register_forward_hook(hook_for(layer), with_kwargs=True)
        for layer, block in enumerate(finetuned_blocks)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def alpha_scaled(pair: ModelPair, alpha: float) -> Iterator[None]:
    """While active, `pair.chat.model` (forward and `generate`) computes
    x_{l+1} = x_l + PTC_l + alpha * FTC_l at every block (TuCo's scaling)."""

    def combine(_layer: int, x: Tensor, pretrained_out: Tensor, finetuned_out: Tensor) -> Tensor:
        pretrained_component = pretrained_out - x
        finetuning_component = finetuned_out - pretrained_out
        return x + pretrained_component + alpha * finetuning_component

    with pretrained_blocks_alongside(pair, combine):
        yield


# ---------------------------------------------------------------------------------------------
# The decomposition and the scores
# ---------------------------------------------------------------------------------------------


@dataclass
class Decomposition:
    """The components of one batch, in float32. Sums run over all blocks; per-layer components
    are kept at the last prompt token only (all positions and layers: batch*seq*L*d floats)."""

    embeddings: Float[Tensor, "batch seq d_model"]  # x_0, input of block 0
    pretrained_sum: Float[Tensor, "batch seq d_model"]  # sum_l PTC_l
    finetuning_sum: Float[Tensor, "batch seq d_model"]  # sum_l FTC_l
    pretrained_last: Float[Tensor, "batch n_layers d_model"]  # PTC_l at the last prompt token
    finetuning_last: Float[Tensor, "batch n_layers d_model"]  # FTC_l at the last prompt token
    attention_mask: Int[Tensor, "batch seq"]
    last_index: Int[Tensor, " batch"]


@torch.no_grad()
def decompose(
    pair: ModelPair,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"] | None = None,
) -> Decomposition:
    """Run the fine-tuned decoder once (no unembedding) with the pre-trained block evaluated
    beside each block, and collect PTC/FTC."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    last_index = last_token_index(attention_mask)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    # Running sums over blocks keep memory at O(batch * seq * d); per-layer terms only at `last`.
    state: dict[str, Tensor] = {}
    last_ptc: list[Tensor] = []
    last_ftc: list[Tensor] = []

    def record(layer: int, x: Tensor, pretrained_out: Tensor, finetuned_out: Tensor) -> Tensor:
        # Components and sums in float32 even for a bf16 model: 30+ bf16 additions lose digits.
        x32, pretrained32 = x.float(), pretrained_out.float()
        pretrained_component = pretrained32 - x32  # PTC_l = f^PT(x_l)
        finetuning_component = finetuned_out.float() - pretrained32  # FTC_l = f^FT - f^PT
        if layer == 0:
            state["x0"] = x32
            state["ptc"] = pretrained_component
            state["ftc"] = finetuning_component
        else:
            state["ptc"] = state["ptc"] + pretrained_component
            state["ftc"] = state["ftc"] + finetuning_component
        last_ptc.append(pretrained_component[rows, last_index])
        last_ftc.append(finetuning_component[rows, last_index])
        return finetuned_out

    with pretrained_blocks_alongside(pair, record):
        pair.chat.model.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
    keep = attention_mask.bool().unsqueeze(-1)
    return Decomposition(
        # Padded positions of a left-padded row attend to nothing and may hold NaN: zero them.
        embeddings=torch.where(keep, state["x0"], 0.0),
        pretrained_sum=torch.where(keep, state["ptc"], 0.0),
        finetuning_sum=torch.where(keep, state["ftc"], 0.0),
        pretrained_last=torch.stack(last_ptc, dim=1),
        finetuning_last=torch.stack(last_ftc, dim=1),
        attention_mask=attention_mask,
        last_index=last_index,
    )


@dataclass
class TuningContribution:
    """TuCo of a batch of prompts."""

    tuco: Float[Tensor, " batch"]  # at the last prompt token
    per_token: Float[Tensor, "batch seq"]  # TuCo at every position; 0 at padding
    cumulative: Float[Tensor, "batch n_layers"]  # TuCo of the model truncated after block l
    output_contribution: Float[Tensor, " batch"] | None  # OutputCo at the last prompt token
    attention_mask: Int[Tensor, "batch seq"]
    last_index: Int[Tensor, " batch"]


def scores_from_decomposition(decomposition: Decomposition) -> TuningContribution:
    d = decomposition
    rows = torch.arange(d.last_index.shape[0], device=d.last_index.device)
    per_token = contribution_ratio(d.pretrained_sum, d.finetuning_sum) * d.attention_mask
    cumulative = contribution_ratio(
        d.pretrained_last.cumsum(dim=1), d.finetuning_last.cumsum(dim=1)
    )
    return TuningContribution(
        tuco=per_token[rows, d.last_index],
        per_token=per_token,
        cumulative=cumulative,
        output_contribution=None,
        attention_mask=d.attention_mask,
        last_index=d.last_index,
    )


@torch.no_grad()
def tuning_contribution(
    pair: ModelPair,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"] | None = None,
    with_output_contribution: bool = False,
) -> TuningContribution:
    """TuCo (and optionally OutputCo, one extra pre-trained pass) of a tokenized batch."""
    decomposition = decompose(pair, input_ids, attention_mask)
    scores = scores_from_decomposition(decomposition)
    if with_output_contribution:
        mask = decomposition.attention_mask
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = decomposition.last_index
        finetuned_final = (
            decomposition.embeddings + decomposition.pretrained_sum + decomposition.finetuning_sum
        )[rows, last]
        # HF positions here (arange) vs ours (mask-derived) differ only by a shift on left-padded
        # rows, which rotary embeddings do not see.
        pretrained_final = residual_stream(
            pair.base.model,
            input_ids,
            [pair.n_layers - 1],
            attention_mask=mask,
        )[rows, last, 0]
        scores.output_contribution = output_contribution(pretrained_final, finetuned_final)
    return scores


def tokenize_prompts(
    pair: ModelPair, prompts: Sequence[str], chat_template: bool = True, padding_side: str = "left"
) -> dict[str, Tensor]:
    """`interp.generation.encode_prompts` for a pair, on the chat model's device."""
    if pair.tokenizer.pad_token_id is None:
        raise InterpError(f"tokenizer of {pair.chat.spec!r} has no pad token: expected one")
    batch = encode_prompts(pair.tokenizer, prompts, chat_template, padding_side)
    return {k: v.to(pair.chat.device) for k, v in batch.items()}


def generate(
    pair: ModelPair,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"],
    alpha: float = 1.0,
    **options,
) -> Int[Tensor, "batch_x_samples new_tokens"]:
    """`interp.generation.complete` with the alpha-scaled fine-tuned model:
    x_{l+1} = x_l + PTC_l + alpha FTC_l."""
    if options.get("share_prefill"):
        raise InterpError("share_prefill is not supported with alpha-scaling: expected False")
    with alpha_scaled(pair, alpha):
        return complete(pair.chat, input_ids, attention_mask, **options)


@dataclass
class PromptScore:
    """TuCo of one prompt, as the experiments and the app store it."""

    prompt: str
    tokens: list[str]  # the chat-formatted prompt's tokens
    tuco: float  # at the last prompt token
    output_contribution: float | None
    cumulative: list[float]  # by layer
    per_token: list[float]


def score_prompts(
    pair: ModelPair,
    prompts: Sequence[str],
    batch_size: int = 8,
    with_output_contribution: bool = True,
    chat_template: bool = True,
) -> list[PromptScore]:
    """TuCo of each prompt (rendered in the chat template), batched by similar length to waste
    little on padding; results keep the order of `prompts`."""
    if batch_size < 1:
        raise InterpError(f"batch size {batch_size} is invalid: expected >= 1")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # characters ~ tokens
    results: dict[int, PromptScore] = {}
    for start in tqdm(range(0, len(order), batch_size), desc="TuCo", unit="batch"):
        chunk = order[start : start + batch_size]
        batch = tokenize_prompts(pair, [prompts[i] for i in chunk], chat_template)
        scores = tuning_contribution(
            pair, **batch, with_output_contribution=with_output_contribution
        )
        for row, index in enumerate(chunk):
            real = batch["attention_mask"][row].bool()
            results[index] = PromptScore(
                prompt=prompts[index],
                tokens=pair.tokenizer.convert_ids_to_tokens(batch["input_ids"][row][real].tolist()),
                tuco=float(scores.tuco[row]),
                output_contribution=None
                if scores.output_contribution is None
                else float(scores.output_contribution[row]),
                cumulative=scores.cumulative[row].tolist(),
                per_token=scores.per_token[row][real].tolist(),
            )
    return [results[i] for i in range(len(prompts))]
