"""Model diffing with a base/chat crosscoder (Minder et al. 2025): the per-latent table, Latent
Scaling, causal tests of latent sets, max-activating examples, and the token-level base-vs-chat
shift. Each analysis writes its part of `<run>/analysis/<dict_name>/`; `run.py` runs them all."""
