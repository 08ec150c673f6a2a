import numpy as np
import pytest
import torch
from PIL import Image

from steer.errors import UserError
from steer.image import PHOTO_DIR, PHOTOS, builtin_image, load_target, to_png


def test_builtin_card_is_deterministic_rgb_in_range():
    a, b = builtin_image("card", 32), builtin_image("card", 32)
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0
    # Has both hard edges and smooth regions: large and small neighbour differences.
    dx = np.abs(np.diff(builtin_image("card", 128), axis=1)).max(axis=-1)
    assert dx.max() > 0.5 and np.median(dx) < 0.05


def test_png_path_is_resized_to_rgb(tmp_path):
    rgba = (np.random.default_rng(0).random((40, 30, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    img = load_target("t.png", 24, base=tmp_path)
    assert img.shape == (24, 24, 3) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_missing_and_unreadable_images_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"target image 'nope.png': no such file .*built-in name: card"):
        load_target("nope.png", 16, base=tmp_path)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match=r"bad.png: cannot read it as an image"):
        load_target("bad.png", 16, base=tmp_path)


def test_to_png_shrinks_to_max_side():
    data = to_png(torch.rand(200, 100, 3), max_side=64)
    import io
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and max(im.size) == 64


@pytest.mark.parametrize("name", PHOTOS)
def test_builtin_photographs_ship_with_the_package(name):
    img = load_target(name, 48)
    assert img.shape == (48, 48, 3) and img.dtype == torch.float32
    # A real photograph: colour, and detail at every scale (not a flat or synthetic image).
    assert img.std() > 0.1
    assert (img[..., 0] - img[..., 2]).abs().mean() > 0.02
    assert (PHOTO_DIR / f"{name}.jpg").is_file() and name in (PHOTO_DIR / "README.md").read_text()
