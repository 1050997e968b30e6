"""What tells one set of model weights from another without hashing them all: the cache, the
model stream, the analysis and the TuCo steering records store it beside what the weights made."""

import hashlib

import torch

FINGERPRINT_SAMPLES = 4096  # values hashed per tensor


def model_fingerprint(
    model: torch.nn.Module,
    samples: int = FINGERPRINT_SAMPLES,
    as_dtype: torch.dtype | None = None,
) -> str:
    """sha256 of every parameter's and buffer's name, shape, dtype and `samples` evenly strided
    values. Hashing all ~1 GB of a 270M model costs as much as several forward batches; a
    strided sample tells any other checkpoint or fine-tune apart (they change every value of
    the tensors they touch). `as_dtype`: the floating-point values cast to that dtype first,
    i.e. the fingerprint the same weights have when loaded in `as_dtype` (from_pretrained
    rounds to it as `Tensor.to` does)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples)].cpu().contiguous()
        if as_dtype is not None and sample.is_floating_point():
            sample = sample.to(as_dtype)
        digest.update(f"{name}:{tuple(tensor.shape)}:{sample.dtype}".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
