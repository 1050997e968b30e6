"""Run inside the SAELens venv (tests/saelens_venv.py): load an exported folder with SAELens's own
`SAE.load_from_disk`, encode and decode the saved activations, and compare with the project's
outputs saved beside them. Prints one JSON line; exits 1 when they disagree beyond `atol`."""

import json
import sys

import sae_lens
import torch
from sae_lens import SAE
from safetensors.torch import load_file


def main(folder: str, tensors_path: str, atol: float) -> int:
    sae = SAE.load_from_disk(folder, device="cpu")
    saved = load_file(tensors_path)
    with torch.no_grad():
        latents = sae.encode(saved["x"])
        decoded = sae.decode(saved["latents"])
    report = {
        "sae_lens": sae_lens.__version__,
        "sae_class": type(sae).__name__,
        "metadata_version": sae.cfg.metadata.sae_lens_version,
        "model_name": sae.cfg.metadata.model_name,
        "hook_name": sae.cfg.metadata.hook_name,
        "context_size": sae.cfg.metadata.context_size,
        "encode_max_abs_diff": (latents - saved["latents"]).abs().max().item(),
        "decode_max_abs_diff": (decoded - saved["reconstruction"]).abs().max().item(),
        "active_agree": bool(((latents > 0) == (saved["latents"] > 0)).all()),
    }
    print(json.dumps(report))
    ok = report["encode_max_abs_diff"] <= atol and report["decode_max_abs_diff"] <= atol
    return 0 if ok and report["active_agree"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
