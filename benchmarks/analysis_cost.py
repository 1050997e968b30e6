"""Cost of the diffing analysis's cache passes against one pass of the dictionary over the cache.

Prints one JSON object:
- `read_s`: stream the cache (read + float conversion) once;
- `one_pass_s`: stream the cache once and encode + decode every token with the dictionary;
- `analysis_s`: the analysis's two cache passes (Latent Scaling sums, firing counts, top
  activations and firing sample, example selection, window activations, histograms) plus the
  latent table: everything whose cost grows with the cache;
- `multiple` = analysis_s / one_pass_s;
- `neighbors_s`: the fixed, cache-independent cost of the nearest-latent table (O(F^2 d)).
With no `--cache`, a cache of `--tokens` tokens is built first from a random 2-block Gemma 3
pair of Gemma 3 270M's width (d_model 640) with the tests' word-level tokenizer: the analysis
cost depends on the cache size, d_model and the dictionary, not on the weights, and a real
model on this shared CPU caches only a few tokens per second. The dictionary is a freshly
initialised BatchTopK crosscoder of `--dict-size` latents whose threshold is set so that about
`--k` latents fire per token, or a trained one (`--dictionary`, any kind: the L1 crosscoder's
analysis cost grows with its L0); `tokens_per_s` = cache tokens / analysis_s.

    python benchmarks/analysis_cost.py [--cache runs/x/cache --layer 9] [--tokens 50000]
        [--dictionary runs/x/dictionaries/l1]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from crosscoders.activations import batch_topk_cutoff
from crosscoders.config import CrossCoderConfig, Source
from crosscoders.crosscoder import CrossCoder
from crosscoders.diffing.cache_pass import pair_sources, run_passes, stream_tokens
from crosscoders.diffing.decoder_views import nearest_latents
from crosscoders.diffing.examples import ExampleSettings
from crosscoders.diffing.latent_table import latent_table
from crosscoders.diffing.pair_dictionary import PairDictionary
from crosscoders.diffing.token_subsets import TemplateTokens
from crosscoders.init import initialize
from crosscoders.io import load_crosscoder
from interp.cache import ActivationCache, InMemorySource, build_cache, cache_config
from interp.models import LoadedModel, ModelPair, load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import VOCAB_SIZE, WORDS, tiny_tokenizer  # noqa: E402

D_MODEL = 640


def wide_random_pair() -> ModelPair:
    """Two random 2-block Gemma 3 models of width 640 sharing the word-level test tokenizer."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = Gemma3TextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=D_MODEL,
            intermediate_size=2 * D_MODEL,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=D_MODEL // 4,
            max_position_embeddings=256,
            layer_types=["full_attention"] * 2,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
        model = AutoModelForCausalLM.from_config(config).eval()
        models.append(LoadedModel(f"random-640-{seed}", model, tiny_tokenizer()))
    return ModelPair(*models)


def random_texts(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS[3:], length)) for _ in range(n)]


def make_dictionary(cache: ActivationCache, layer: int, dict_size: int, k: int) -> PairDictionary:
    sources = pair_sources(cache, layer)
    sample = cache.gather(np.arange(min(cache.n_tokens, 4096)))[:, sources]
    config = CrossCoderConfig(
        n_sources=2,
        d_model=cache.d_model,
        dict_size=dict_size,
        activation="batchtopk",
        k=k,
        sources=[Source(cache.models[0], layer, "base"), Source(cache.models[1], layer, "chat")],
    )
    coder = CrossCoder(config)
    with torch.no_grad():
        initialize(coder, sample, torch.Generator().manual_seed(0), b_dec_init="mean")
        scaled = sample * coder.input_scale[:, None]
        f = torch.relu(coder.pre_activations(scaled))
        g = f * coder.decoder_norms().sum(0)
        coder.get_buffer("threshold").copy_(batch_topk_cutoff(g, k))
    return PairDictionary.from_coder(coder.eval())


def timed(run) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="an existing cache folder")
    parser.add_argument("--layer", type=int, help="layer of the cache to analyse")
    parser.add_argument("--tokens", type=int, default=50_000, help="tokens of a built cache")
    parser.add_argument("--dict-size", type=int, default=16_384)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dictionary", type=Path, help="a trained dictionary folder to time")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as scratch:
        build_s = None
        if args.cache is not None:
            tokenizer = load_model(ActivationCache(args.cache).models[1]).tokenizer
        else:
            pair = wide_random_pair()
            tokenizer = pair.tokenizer
            folder = Path(scratch) / "cache"
            n_docs = args.tokens // 60 + 1
            prompts, responses = random_texts(n_docs, 20, 1), random_texts(n_docs, 80, 2)
            source = InMemorySource(
                plain={"wiki": random_texts(n_docs, 120, 0)},
                chats={"chat": list(zip(prompts, responses, strict=True))},
            )
            config = cache_config(pair, [1], "wiki:0.5,chat:0.5", n_tokens=args.tokens)
            build_s = timed(
                lambda: build_cache(pair, config, folder, source=source, progress=False)
            )
            args.cache = folder
        cache = ActivationCache(args.cache)
        layer = args.layer if args.layer is not None else cache.layers[0]
        if args.dictionary is not None:
            dictionary = PairDictionary.from_coder(load_crosscoder(args.dictionary).eval(), layer)
            args.dict_size = dictionary.dict_size
        else:
            dictionary = make_dictionary(cache, layer, args.dict_size, args.k)
        sources = pair_sources(cache, layer)
        template = TemplateTokens.from_tokenizer(tokenizer)
        tokens = stream_tokens(cache, "all", None, template)

        def read() -> None:
            for batch in cache.iterate_sequential(args.batch_size):
                batch.acts[:, sources].sum()

        def one_pass() -> None:
            for batch in cache.iterate_sequential(args.batch_size):
                dictionary.decode(dictionary.encode(batch.acts[:, sources]))

        def analysis() -> None:
            results = run_passes(
                cache, dictionary, tokens, "all", args.batch_size, ExampleSettings(), seed=0
            )
            betas = results.scaling.betas(dictionary.W_dec)  # coder units, as the sums
            latent_table(dictionary, results.firing, betas)

        read_s = timed(read)
        one_pass_s = timed(one_pass)
        analysis_s = timed(analysis)
        neighbors_s = timed(lambda: nearest_latents(dictionary, 10))
        with torch.no_grad():
            first = next(cache.iterate_sequential(args.batch_size)).acts[:, sources]
            l0 = float((dictionary.encode(first) > 0).sum(-1).float().mean())
    print(
        json.dumps(
            {
                "cache_tokens": cache.n_tokens,
                "d_model": cache.d_model,
                "dictionary": None if args.dictionary is None else str(args.dictionary),
                "dict_size": args.dict_size,
                "l0": l0,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "cache_build_s": build_s,
                "read_s": read_s,
                "one_pass_s": one_pass_s,
                "analysis_s": analysis_s,
                "multiple": analysis_s / one_pass_s,
                "tokens_per_s": cache.n_tokens / analysis_s,
                "neighbors_s": neighbors_s,
                "pair": cache.models,
            }
        )
    )


if __name__ == "__main__":
    main()
