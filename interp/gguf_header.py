"""What a GGUF file says about its model, read from the header alone (no tensor is touched).

The pair rule (interp/models.py) needs the architecture family, d_model, n_layers and the
vocabulary of each model before any weights are read. For a GGUF that is not yet dequantized,
transformers' own config path (`AutoConfig.from_pretrained(..., gguf_file=...)`) parses every
metadata array with `gguf.GGUFReader` and takes 10-45 s on the built-ins; this reader walks the
header once with `struct` over a memory map (well under a second for Gemma's 262,144 tokens).

Layout, from the GGUF specification (ggml `docs/gguf.md`, "File Structure"): the magic `GGUF`, a
uint32 version, a uint64 tensor count and a uint64 key/value count (versions 2 and 3; version 1
used uint32 counts), then each key/value pair: the key as a string (uint64 byte length + UTF-8),
a uint32 value type (`gguf.GGUFValueType`), and the value; an array is a uint32 element type, a
uint64 count and the elements. The type codes come from the `gguf` package.
"""

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFValueType

from interp.errors import InterpError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# struct formats of the fixed-size value types (little-endian, as the spec stores them)
_FIXED = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}

TOKENS_KEY = "tokenizer.ggml.tokens"

# Architecture names of llama.cpp that transformers loads under another `model_type`, following
# `load_gguf_checkpoint` in transformers/modeling_gguf_pytorch_utils.py (the `updated_architecture`
# renames, and "Gemma3 GGUF checkpoint only contains weights of text backbone"), and the config
# builders of transformers/integrations/gguf/gguf_config_mapping.py (GGUF_CONFIG_ARCHS).
_HF_MODEL_TYPE = {
    "gemma3": "gemma3_text",
    "gemma4": "gemma4_text",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "gpt_oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "qwen35": "qwen3_5_text",
    "qwen35moe": "qwen3_5_moe_text",
}


@dataclass(frozen=True)
class GGUFHeader:
    """The facts of the pair rule, as the GGUF header states them."""

    path: Path
    architecture: str  # llama.cpp's name (`general.architecture`)
    family: str  # the `model_type` transformers gives the dequantized model
    d_model: int  # `<arch>.embedding_length`
    n_layers: int  # `<arch>.block_count`
    tokens: tuple[str, ...]  # `tokenizer.ggml.tokens`, index = token id

    @property
    def vocab(self) -> dict[str, int]:
        """The vocabulary as a token -> id map, the way transformers builds it from the tokens
        list (`{token: index for index, token in enumerate(tokens)}` in
        transformers/integrations/gguf/gguf_tokenizer_mapping.py)."""
        return {token: index for index, token in enumerate(self.tokens)}


def hf_model_type(architecture: str, model_name: str = "") -> str:
    """The `model_type` transformers gives a GGUF of this llama.cpp architecture."""
    if "llama" in architecture and "mistral" in model_name.lower():
        return "mistral"  # load_gguf_checkpoint: llama.cpp stores Mistral as llama
    return _HF_MODEL_TYPE.get(architecture, architecture)


class _Cursor:
    """A position in the mapped file; every read checks the bounds, so a truncated header is
    an InterpError, not a struct.error."""

    def __init__(self, path: Path, data: mmap.mmap) -> None:
        self.path, self.data, self.pos = path, data, 0

    def take(self, size: int) -> int:
        start = self.pos
        if size < 0 or start + size > len(self.data):
            raise InterpError(
                f"GGUF file {str(self.path)!r} is truncated or corrupt (its header runs past the "
                f"end of the file at byte {len(self.data)}): delete it and rerun, or reinstall "
                "its package"
            )
        self.pos += size
        return start

    def fixed(self, fmt: str) -> int | float | bool:
        return struct.unpack_from(fmt, self.data, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = int(self.fixed("<Q"))
        start = self.take(length)
        try:
            return self.data[start : start + length].decode("utf-8")
        except UnicodeDecodeError:
            raise InterpError(
                f"GGUF file {str(self.path)!r} is corrupt (a metadata string at byte {start} is "
                "not UTF-8): delete it and rerun, or reinstall its package"
            ) from None

    def value(self, value_type: int, wanted: bool) -> object:
        """One value; arrays not `wanted` are skipped (strings still have to be walked)."""
        if value_type in _FIXED:
            return self.fixed(_FIXED[value_type])
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type != GGUFValueType.ARRAY:
            raise self.corrupt(f"unknown value type {value_type}")
        element_type, count = int(self.fixed("<I")), int(self.fixed("<Q"))
        if element_type in _FIXED and not wanted:
            self.take(count * struct.calcsize(_FIXED[element_type]))
            return count
        values = [self.value(element_type, wanted) for _ in range(count)]
        return values if wanted else count

    def corrupt(self, what: str) -> InterpError:
        return InterpError(
            f"GGUF file {str(self.path)!r} is corrupt ({what} at byte {self.pos}): delete it and "
            "rerun, or reinstall its package"
        )


def read_gguf_header(path: Path) -> GGUFHeader:
    """Architecture, d_model, n_layers and tokens of a GGUF, from its metadata only."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise InterpError(f"cannot read GGUF file {str(path)!r}: {error.strerror}") from None
    with handle:
        if path.stat().st_size < len(GGUF_MAGIC):
            raise InterpError(f"{str(path)!r} is not a GGUF file (it is empty or truncated)")
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    with data:
        cursor = _Cursor(path, data)
        if data[:4] != GGUF_MAGIC:
            raise InterpError(
                f"{str(path)!r} is not a GGUF file (it does not start with the bytes 'GGUF')"
            )
        cursor.take(4)
        version = int(cursor.fixed("<I"))
        if version not in SUPPORTED_VERSIONS:
            raise InterpError(
                f"GGUF file {str(path)!r} is version {version}; expected one of "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}"
            )
        cursor.fixed("<Q")  # tensor count: not needed
        metadata: dict[str, object] = {}
        for _ in range(int(cursor.fixed("<Q"))):
            key = cursor.string()
            value_type = int(cursor.fixed("<I"))
            metadata[key] = cursor.value(value_type, wanted=key == TOKENS_KEY)
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise InterpError(f"GGUF file {str(path)!r} has no general.architecture in its metadata")
    missing = [
        key
        for key in (f"{architecture}.embedding_length", f"{architecture}.block_count", TOKENS_KEY)
        if key not in metadata
    ]
    if missing:
        raise InterpError(f"GGUF file {str(path)!r} lacks the metadata {', '.join(missing)}")
    n_layers = int(metadata[f"{architecture}.block_count"])
    if architecture.startswith("qwen35"):
        # Qwen3.5 counts its multi-token-prediction block as a layer, transformers' decoder stack
        # does not (`_qwen35_config` in transformers/integrations/gguf/gguf_config_mapping.py)
        n_layers -= int(metadata.get(f"{architecture}.nextn_predict_layers", 0))
    return GGUFHeader(
        path=path,
        architecture=architecture,
        family=hf_model_type(architecture, str(metadata.get("general.name", ""))),
        d_model=int(metadata[f"{architecture}.embedding_length"]),
        n_layers=n_layers,
        tokens=tuple(metadata[TOKENS_KEY]),
    )
