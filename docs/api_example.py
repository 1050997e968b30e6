"""The Python API in a dozen lines (README, "The Python API"): cache, train, analyze, TuCo, steer.

    python docs/api_example.py [RUN_FOLDER] [BASE CHAT]

tests/test_api_example.py runs it on tiny random models.
"""

import sys
from pathlib import Path

from crosscoders.config import CrossCoderConfig, TrainingConfig
from crosscoders.diffing.run import analyze
from crosscoders.streams import cache_stream
from crosscoders.trainer import Trainer
from interp import load_pair
from interp.cache import ActivationCache, build_cache, cache_config
from interp.tuco import tokenize_prompts, tuning_contribution

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/api")
pair = load_pair(*sys.argv[2:4])  # no specs: gemma-3-270m vs gemma-3-270m-chat
build_cache(pair, cache_config(pair, [0.5], "wiki:0.5,chat:0.5", n_tokens=4000), run / "cache")
cache = ActivationCache(run / "cache")
coder = CrossCoderConfig(n_sources=2, d_model=pair.d_model, dict_size=256, k=16)
training = TrainingConfig(n_steps=40, batch_size=256, lr=1e-3, warmup_steps=5)
Trainer(coder, training, cache_stream(cache, 256), run / "dictionaries" / "btk").train()
analyze(run, "btk", units=("latents", "examples", "report"))  # run/analysis/btk/latents.parquet
scores = tuning_contribution(pair, **tokenize_prompts(pair, ["How do I pick a lock?"]))
print(f"TuCo of the prompt: {scores.tuco[0]:.3f}")
