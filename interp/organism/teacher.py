"""The chat-tune's training conversations: a teacher's answers to benign prompts (SmolLM2-135M-
Instruct, rendered in its own chat template, greedy, length-capped) and project refusals to
harmful prompts. Where the teacher refuses a benign prompt (it refuses chit-chat such as "you are
cruel" or "Can you die"), the chatterbot corpus's own reply is used instead, if it has one.

Teacher answers are cached in `teacher.jsonl` (one row per prompt, appended batch by batch, so an
interrupted generation resumes), then `conversations.jsonl` is written atomically with the rows
the chat-tune trains on (and a held-out set of teacher answers for evaluation).
"""

import json
import random
import time
from pathlib import Path

import torch

from interp.datasets import chatterbot_replies, load_labelled, normalise
from interp.errors import InterpError
from interp.fileio import atomic_write_jsonl
from interp.generation import greedy_completions
from interp.judges import is_explicit_refusal
from interp.organism.config import BENIGN_REQUESTS_FILE, ChatTuneConfig, read_prompt_file
from interp.organism.refusals import refusal_for

SENTENCE_ENDS = (".", "!", "?", "\n")


def benign_prompts(config: ChatTuneConfig) -> list[tuple[str, str]]:
    """(split, prompt): a seeded sample of the benign train and held-out prompts of the bundled
    chat-benign recipe, then the project-written benign requests (all train)."""
    chosen = []
    for split, count in (("train", config.n_benign_train), ("heldout", config.n_benign_heldout)):
        prompts = seeded_order(
            [text for _, text in load_labelled("chat-benign", split)], config.seed
        )
        if count > len(prompts):
            raise InterpError(
                f"n_benign_{split}={count} exceeds the {len(prompts)} chat-benign {split} prompts"
            )
        chosen += [(split, prompt) for prompt in prompts[:count]]
    requests = read_prompt_file(BENIGN_REQUESTS_FILE)
    if config.n_benign_requests > len(requests):
        raise InterpError(
            f"n_benign_requests={config.n_benign_requests} exceeds the {len(requests)} prompts "
            f"of {BENIGN_REQUESTS_FILE}"
        )
    seen = {normalise(prompt) for _, prompt in chosen}
    chosen += [
        ("train", prompt)
        for prompt in seeded_order(requests, config.seed)[: config.n_benign_requests]
        if normalise(prompt) not in seen
    ]
    return chosen


def seeded_order(items: list[str], seed: int) -> list[str]:
    """A seeded shuffle; taking a prefix of it makes smaller samples nest in larger ones, so
    cached teacher answers stay useful when the sample size changes."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def harmful_prompts(config: ChatTuneConfig) -> list[str]:
    prompts = [text for _, text in load_labelled("harmful", "train")]
    if config.n_harmful_train > len(prompts):
        raise InterpError(
            f"n_harmful_train={config.n_harmful_train} exceeds the {len(prompts)} harmful prompts"
        )
    return seeded_order(prompts, config.seed + 1)[: config.n_harmful_train]


def trim_to_sentence(text: str) -> str:
    """Cut a length-capped answer after its last complete sentence (if that keeps most of it),
    so the student does not learn to stop mid-sentence."""
    text = text.strip()
    cut = max(text.rfind(end) for end in SENTENCE_ENDS)
    return text[: cut + 1].strip() if cut >= len(text) // 3 else text


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn line (from a kill mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@torch.no_grad()
def teacher_answers(
    loaded, prompts: list[str], max_new_tokens: int, batch_size: int, cache: Path, log=print
) -> dict[str, dict]:
    """Greedy teacher answers to `prompts`, cached in `cache` (JSONL, appended per batch)."""
    dtype = str(loaded.model.dtype).removeprefix("torch.")
    done = {
        row["prompt"]: row
        for row in read_jsonl(cache)
        if (row.get("max_new_tokens"), row.get("dtype")) == (max_new_tokens, dtype)
    }
    with cache.open("a") as handle:
        if cache.stat().st_size and not cache.read_text().endswith("\n"):
            handle.write("\n")  # a torn line stays torn; the next row starts clean
    todo = sorted((p for p in set(prompts) if p not in done), key=len)
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    start = time.time()
    for index in range(0, len(todo), batch_size):
        batch = todo[index : index + batch_size]
        completions = greedy_completions(loaded, batch, max_new_tokens, batch_size=len(batch))
        rows = []
        for prompt, completion in zip(batch, completions, strict=True):
            rows.append(
                {
                    "prompt": prompt,
                    "answer": completion.text(tokenizer).strip(),
                    "finished": completion.stop is not None,
                    "max_new_tokens": max_new_tokens,
                    "dtype": dtype,
                }
            )
        with cache.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        for row in rows:
            done[row["prompt"]] = row
        elapsed = time.time() - start
        log(f"teacher: {index + len(batch)}/{len(todo)} prompts, {elapsed:.0f} s")
    return done


def build_conversations(
    config: ChatTuneConfig, output: Path, log=print, device: str = "cpu"
) -> list[dict]:
    """Write output/conversations.jsonl (atomically) and return its rows."""
    from interp.models import load_model

    output.mkdir(parents=True, exist_ok=True)
    benign = benign_prompts(config)
    cache = output / "teacher.jsonl"
    answers = {
        row["prompt"]: row
        for row in read_jsonl(cache)
        if (row.get("max_new_tokens"), row.get("dtype"))
        == (config.teacher_max_new_tokens, config.teacher_dtype)
    }
    if any(prompt not in answers for _, prompt in benign):
        teacher = load_model(
            config.teacher, dtype=getattr(torch, config.teacher_dtype), device=device
        )
        answers = teacher_answers(
            teacher,
            [prompt for _, prompt in benign],
            config.teacher_max_new_tokens,
            config.teacher_batch_size,
            cache,
            log,
        )
    replies = chatterbot_replies() if config.corpus_reply_when_teacher_refuses else {}
    rows = []
    for split, prompt in benign:
        answer = answers[prompt]["answer"]
        response = answer if answers[prompt]["finished"] else trim_to_sentence(answer)
        kind = "teacher"
        # the student must not learn to refuse benign prompts from an over-cautious teacher
        if not response or is_explicit_refusal(response):
            response, kind = replies.get(normalise(prompt), ""), "corpus"
        if response and not is_explicit_refusal(response):
            rows.append({"prompt": prompt, "response": response, "kind": kind, "split": split})
    rows += [
        {"prompt": p, "response": refusal_for(p, config.seed), "kind": "refusal", "split": "train"}
        for p in harmful_prompts(config)
    ]
    path = output / "conversations.jsonl"
    atomic_write_jsonl(path, rows)
    log(f"wrote {len(rows)} conversations to {path}")
    return rows
