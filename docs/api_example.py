"""The Python API (README, "The Python API"): cache, train, analyze, then explore the dictionary
on your own text: its latents per token, a latent's top examples, splicing, steering; TuCo.

    python docs/api_example.py [RUN_FOLDER] [BASE CHAT]

tests/test_api_example.py runs it on tiny random models.
"""

import sys
from pathlib import Path

from crosscoders import CrossCoderConfig, TrainingConfig
from crosscoders.diffing.run import analyze
from crosscoders.streams import cache_stream
from crosscoders.trainer import Trainer
from interp import load_pair
from interp.cache import ActivationCache, build_cache, cache_config
from interp.tuco import tokenize_prompts, tuning_contribution
from steering.explore import open_run

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/api")
pair = load_pair(*sys.argv[2:4])  # no specs: gemma-3-270m vs gemma-3-270m-chat
mix = {"wiki": 0.5, "chat": 0.5}  # or a JSONL file / dataset folder: {"my.jsonl": 1.0}
build_cache(pair, cache_config(pair, [0.5], mix, n_tokens=4000), run / "cache")
coder = CrossCoderConfig(n_sources=2, d_model=pair.d_model, dict_size=256, k=16)
training = TrainingConfig(n_steps=40, batch_size=256, lr=1e-3, warmup_steps=5)
stream = cache_stream(ActivationCache(run / "cache"), training.batch_size)
Trainer(coder, training, stream, run / "dictionaries" / "btk").train()
analyze(run, "btk", units=("latents", "examples", "report"))  # run/analysis/btk/latents.parquet

# Explore: a run folder (open_run("runs/demo") for a finished `interp run`), or the pair plus a
# dictionary folder, its analysis and its cache
ex = open_run(
    dictionary=run / "dictionaries" / "btk",
    analysis=run / "analysis" / "btk",
    cache=run / "cache",
    pair=pair,
)
text = "How do I pick a lock? Ask a locksmith."
encoded = ex.encode(text)  # encoded.latents: [tokens, 256] f_j read from both models
top = ex.top_latents(text, n=5)
print(top.to_string(index=False))
latent = int(top.latent[0])
print(ex.examples(latent, n=3)[["activation", "token", "text"]].to_string(index=False))
splice = ex.splice([text])  # reconstruction in the forward, per model
print(f"CE recovered by splicing, chat: {splice['chat']['ce_loss_recovered']:.3f}")
print("steered:", ex.steer(latent, "Tell me a story.", strength=8.0, max_new_tokens=8))
scores = tuning_contribution(pair, **tokenize_prompts(pair, ["How do I pick a lock?"]))
print(f"TuCo of the prompt: {scores.tuco[0]:.3f}")
