import io

import numpy as np
import pytest
from PIL import Image

from laionface.errors import LaionFaceError
from laionface.imagedecode import DecodeError, decode_image, target_size
from laionface.testing.faces import encode_jpeg, encode_png, face_sources, fault_images


@pytest.fixture(scope="module")
def faults():
    return fault_images()


@pytest.fixture(scope="module")
def astronaut():
    return face_sources()[0].image


def test_decode_error_is_rooted_and_a_value_error():
    assert issubclass(DecodeError, LaionFaceError) and issubclass(DecodeError, ValueError)


def test_cmyk_jpeg_decodes_to_rgb_with_right_colours(faults, astronaut):
    d = decode_image(faults["cmyk.jpg"], None)
    assert d.rgb.shape == (512, 512, 3) and d.rgb.dtype == np.uint8
    assert np.abs(d.rgb.astype(int) - astronaut).mean() < 8  # Adobe inversion undone


def test_16bit_png_scales_to_8_bits(faults):
    d = decode_image(faults["16bit.png"], None)
    assert d.rgb.shape == (64, 64, 3)
    want = np.rint(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16) / 257.0)
    assert np.abs(d.rgb[..., 0].astype(int) - want).max() <= 1
    assert d.rgb.min() == 0 and d.rgb.max() == 255


def test_alpha_is_composited_on_white():
    arr = np.zeros((20, 30, 4), np.uint8)
    arr[:, :15] = (255, 0, 0, 255)  # opaque red | fully transparent black
    d = decode_image(encode_png(Image.fromarray(arr, "RGBA")), None)
    assert tuple(d.rgb[5, 5]) == (255, 0, 0) and tuple(d.rgb[5, 25]) == (255, 255, 255)
    la = Image.fromarray(np.dstack([np.full((8, 8), 0, np.uint8), np.zeros((8, 8), np.uint8)]), "LA")
    assert tuple(decode_image(encode_png(la), None).rgb[0, 0]) == (255, 255, 255)


def test_rgba_fixture(faults):
    d = decode_image(faults["rgba.png"], None)
    assert d.rgb.shape == (128, 128, 3)


def test_palette_with_transparency_and_bilevel():
    p = Image.new("P", (10, 10), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    buf = io.BytesIO()
    p.save(buf, "PNG", transparency=0)
    d = decode_image(buf.getvalue(), None)
    assert tuple(d.rgb[0, 0]) == (255, 255, 255) and tuple(d.rgb[1, 1]) == (0, 255, 0)
    assert decode_image(encode_png(Image.new("1", (9, 7), 1)), None).rgb.shape == (7, 9, 3)


def test_animated_gif_gives_first_frame(faults):
    d = decode_image(faults["animated.gif"], None)
    assert tuple(d.rgb[10, 10]) == (255, 0, 0)


def test_greyscale_becomes_three_equal_channels():
    g = (np.arange(50 * 40) % 256).astype(np.uint8).reshape(40, 50)
    d = decode_image(encode_png(Image.fromarray(g, "L")), None)
    assert d.rgb.shape == (40, 50, 3) and (d.rgb[..., 0] == g).all() and (d.rgb[..., 2] == g).all()


def test_exif_orientation_applied_and_sizes_swapped(faults, astronaut):
    d = decode_image(faults["exif_rotated.jpg"], None)
    upright = face_sources()[2].image  # grace_hopper, 512 wide x 600 high
    assert d.rgb.shape == upright.shape and d.original_size == (upright.shape[1], upright.shape[0])
    assert np.abs(d.rgb.astype(int) - upright).mean() < 8  # upright again
    stored = Image.fromarray(astronaut).resize((400, 300)).transpose(Image.Transpose.ROTATE_90)  # 300 x 400
    exif = Image.Exif()
    exif[0x0112] = 6
    d = decode_image(encode_jpeg(stored, exif=exif.tobytes()), 200)
    assert d.original_size == (400, 300) and d.rgb.shape == (150, 200, 3)
    assert d.scale == pytest.approx((2.0, 2.0))


def test_big_jpeg_is_downscaled_fast_and_scale_maps_back(faults):
    d = decode_image(faults["huge_area.jpg"], 640)
    assert d.original_size == (4000, 3000) and d.rgb.shape == (480, 640, 3)
    assert d.scale == (6.25, 6.25)
    wide = decode_image(faults["wide.jpg"], 640)
    assert wide.rgb.shape == (64, 640, 3) and wide.original_size == (2000, 200)


def test_never_upscales(faults):
    d = decode_image(faults["tiny.jpg"], 640)
    assert d.rgb.shape == (8, 8, 3) and d.scale == (1.0, 1.0)
    assert target_size(100, 50, 640) == (100, 50) and target_size(1280, 640, 640) == (640, 320)


def test_truncated_jpeg_is_a_decode_error(faults):
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(faults["truncated.jpg"], 640)


def test_decompression_bomb_is_refused_readably(faults):
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(faults["bomb.png"], 640)


def test_over_limit_but_under_twice_is_refused_too(monkeypatch):
    data = encode_png(Image.new("L", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10000 px: Pillow would only warn
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(data, None)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\xff\xd8\xff\xe0" + b"\x00" * 30])
def test_garbage_is_a_decode_error(data):
    with pytest.raises(DecodeError):
        decode_image(data, 640)
