"""The peer programs (enfuse, openfocus's StackMFF-v3) as evaluate methods; skipped cleanly without them."""
import numpy as np
import pytest

from rediffuse.evaluate import make_method
from rediffuse.peers import PEERS, get_peer, peer_available


def _pair(h=64, w=72):
    rng = np.random.default_rng(0)
    sharp = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    soft = np.full_like(sharp, 128)
    a, b = sharp.copy(), sharp.copy()
    a[:, w // 2:] = soft[:, w // 2:]
    b[:, : w // 2] = soft[:, : w // 2]
    return a, b, sharp


@pytest.mark.parametrize("name, package", [("enfuse", "enfuse"), ("stackmff", "openfocus")])
def test_a_missing_program_is_one_line_naming_the_package(name, package, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv(f"REDIFFUSE_{PEERS[name][1].upper()}", raising=False)
    assert not peer_available(name)
    with pytest.raises(RuntimeError, match=rf"^{package} is not installed: .*{package}") as e:
        make_method(name)
    assert "\n" not in str(e.value)


def test_unknown_peer_is_refused():
    with pytest.raises(ValueError, match="unknown peer"):
        get_peer("zerene")


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_fuses_colour_and_grey_pairs(name):
    if not peer_available(name):
        pytest.skip(f"{PEERS[name][1]} is not installed")
    a, b, sharp = _pair()
    fused = get_peer(name)([a, b])
    assert fused.shape == a.shape and fused.dtype == np.uint8
    # a focus stacker takes the textured half of each source, not the flat grey
    err = np.abs(fused.astype(float) - sharp).mean()
    assert err < np.abs(128.0 - sharp).mean() / 2
    grey = get_peer(name)([a[..., 0], b[..., 0]])
    assert grey.shape == a.shape[:2]
