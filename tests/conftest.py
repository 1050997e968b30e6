import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))

from tiny_models import FAMILIES, tiny_model, tiny_pair  # noqa: E402


@pytest.fixture(params=FAMILIES)
def tiny_any(request):
    """A tiny random model of each supported family."""
    return tiny_model(request.param)


@pytest.fixture
def tiny(request):
    return tiny_model("gemma3")


@pytest.fixture
def pair():
    return tiny_pair("gemma3")
