import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Deterministic and quick on small shared machines: one seed, one intra-op thread."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
