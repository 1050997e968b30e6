"""A seeded pseudo-random permutation of [0, n) evaluated pointwise, in O(1) memory.

Global token-level shuffling of a cache of any size without materialising a permutation of all
its indices: a balanced Feistel network is a bijection on [0, 4^h) for any round function, and
cycle-walking (re-applying it while the value is >= n) restricts it to a bijection on [0, n)
(Black & Rogaway 2002, "Ciphers with arbitrary finite domains"). Since 4^h < 4n, a value needs
fewer than 4 walks on average.
"""

import numpy as np

ROUNDS = 6
MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap, well-mixing bijection on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _round_keys(seed: int) -> np.ndarray:
    state = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    keys = []
    for round_index in range(ROUNDS):
        state = _mix64(
            state + np.uint64(0x9E3779B97F4A7C15 * (round_index + 1) & 0xFFFFFFFFFFFFFFFF)
        )
        keys.append(state[0])
    return np.array(keys, dtype=np.uint64)


def _feistel(values: np.ndarray, half_bits: int, keys: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << half_bits) - 1)
    shift = np.uint64(half_bits)
    left, right = values >> shift, values & mask
    for key in keys:
        left, right = right, left ^ (_mix64(right ^ key) & mask)
    return (left << shift) | right


def permute(indices: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The images of `indices` (each in [0, n)) under the permutation of [0, n) chosen by `seed`."""
    assert n > 0 and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < n)), n
    half_bits = max(1, (int(n - 1).bit_length() + 1) // 2)
    keys = _round_keys(seed)
    values = _feistel(indices.astype(np.uint64), half_bits, keys)
    outside = values >= np.uint64(n)
    while outside.any():
        values[outside] = _feistel(values[outside], half_bits, keys)
        outside = values >= np.uint64(n)
    return values.astype(np.int64)
