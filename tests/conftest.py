import pytest
import torch

from rediffuse.paths import dataset_dir, reference_dir

# Small models run several times faster single-threaded on 2-core machines.
torch.set_num_threads(1)


@pytest.fixture
def reference():
    p = reference_dir()
    if p is None:
        pytest.skip("../shared/reference/liu2020-benchmark is not present")
    return p


def require_dataset(name: str):
    p = dataset_dir(name)
    if p is None:
        pytest.skip(f"../shared/data/{name} is not present")
    return p


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A weight-map fusion checkpoint trained for 2 steps (seconds): for pipeline and CLI tests."""
    from rediffuse.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig(synthetic=4, crop=24, batch=2, steps=2, prediction="weights", T=50,
                      model=dict(base=8, mults=(1, 2), conv="bconv", groups=2, emb_dim=16))
    train(cfg, out, progress=False)
    return out / "last.pt"


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    """A ``FusionModel`` of ``tiny_checkpoint`` (one per test module)."""
    from rediffuse.fuse import FusionModel

    return FusionModel(tiny_checkpoint)


@pytest.fixture(scope="module")
def shipped():
    """The shipped default model as a ``FusionModel``; skips the test where the weights are absent."""
    from rediffuse.fuse import DEFAULT_CHECKPOINT, FusionModel

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped weight-map model is not there")
    return FusionModel(DEFAULT_CHECKPOINT)


def numbers_in(obj):
    """Every number in a nested results structure (dicts, lists; booleans skipped)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from numbers_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers_in(v)
