"""Uploads as a person would see them (core.reporting.images.read_upload, the function the Your images page calls), and
a property-based fuzz of it: whatever bytes arrive, the result is a (3, 32, 32) uint8 image or an UploadError."""

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.reporting.images import UploadError, read_upload


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def test_a_16_bit_png_keeps_its_brightness():
    """PIL's convert("RGB") clips 16-bit grey to 255: a mid-grey 16-bit PNG came out white (mean 254.6)."""
    grey = np.full((40, 40), 32768, dtype=np.uint16)  # half of 65535
    image = Image.fromarray(grey, "I;16")
    pixels = read_upload(encoded(image, "PNG"), "deep.png")
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, 32, 32)
    assert abs(float(pixels.float().mean()) - 127.5) < 1.5


@pytest.mark.parametrize(
    ("values", "expected"),
    [(np.full((8, 8), 0.5, np.float32), 128), (np.linspace(-5, 5, 64, dtype=np.float32).reshape(8, 8), 128)],
)
def test_float_images_are_scaled_from_their_range(values, expected):
    pixels = read_upload(encoded(Image.fromarray(values, "F"), "TIFF"), "float.tif")
    assert int(pixels.float().mean().round()) == expected


def test_exif_orientation_is_applied():
    """A phone photo stores 'rotate 90 degrees clockwise to show' in EXIF (orientation 6): the left half of the stored
    pixels is the top half of what a person sees."""
    stored = np.zeros((64, 64, 3), dtype=np.uint8)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = read_upload(encoded(Image.fromarray(stored), "JPEG", exif=exif, quality=95), "phone.jpg")
    top, bottom = pixels[:, :12].float().mean(dim=(1, 2)), pixels[:, 20:].float().mean(dim=(1, 2))
    assert top[0] > 200 and top[2] < 60, top  # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_areas_read_as_white(mode):
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black
    image.paste((0, 128, 0, 255), (8, 8, 24, 24))  # an opaque green square
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        image = image.convert("P")
        image.info["transparency"] = image.getpixel((0, 0))
    pixels = read_upload(encoded(image, "PNG", **({"transparency": image.info["transparency"]} if mode == "P" else {})))
    assert pixels[:, 0, 0].tolist() == [255, 255, 255]
    assert pixels[:, 16, 16].tolist() != [255, 255, 255]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["PNG", "PPM", "BMP", "TIFF"]))
def test_a_lossless_32x32_rgb_image_is_read_pixel_for_pixel(seed, format):
    """A GTSRB-sized RGB file comes back exactly: no resampling, no colour change."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    back = read_upload(encoded(Image.fromarray(pixels), format))
    assert np.array_equal(back.permute(1, 2, 0).numpy(), pixels)


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "I", "I;16", "F", "HSV", "LAB"]
FORMATS = {
    "PNG": {"1", "L", "P", "RGB", "RGBA", "LA", "I", "I;16"},
    "JPEG": {"L", "RGB", "CMYK"},
    "WEBP": {"RGB", "RGBA"},
    "PPM": {"1", "L", "RGB", "I"},
    "TIFF": {"1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "I", "I;16", "F", "LAB"},
    "GIF": {"L", "P"},
    "BMP": {"1", "L", "P", "RGB"},
}


@st.composite
def image_files(draw) -> bytes:
    """An image file of a random size, mode, bit depth and format, then maybe truncated or with junk bytes."""
    width, height = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if mode in ("I", "I;16"):
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16), "I;16")
        image = image if mode == "I;16" else image.convert("I")
    elif mode == "F":
        image = Image.fromarray((rng.normal(size=(height, width)) * draw(st.sampled_from([1e-3, 1, 1e6]))).astype("f4"))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    format = draw(st.sampled_from([name for name, modes in FORMATS.items() if mode in modes] or ["TIFF"]))
    try:
        data = encoded(image, format)
    except (OSError, ValueError, KeyError):  # a combination the encoder refuses: send the raw pixels instead
        data = image.tobytes()
    damage = draw(st.sampled_from(["none", "truncate", "junk_prefix", "junk_suffix", "flip_bytes", "only_junk"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif damage == "junk_prefix":
        data = draw(st.binary(min_size=1, max_size=32)) + data
    elif damage == "junk_suffix":
        data = data + draw(st.binary(min_size=1, max_size=256))
    elif damage == "flip_bytes" and data:
        buffer = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            buffer[position] ^= 0xFF
        data = bytes(buffer)
    elif damage == "only_junk":
        data = draw(st.binary(max_size=512))
    return data


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(image_files())
def test_fuzzed_uploads_give_an_image_or_a_clear_error(data):
    try:
        pixels = read_upload(data, "fuzz.bin")
    except UploadError as error:
        assert "fuzz.bin" in str(error)  # the message names the file
        return
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, 32, 32)


def test_the_shipped_drawn_signs_are_what_the_script_draws(tmp_path):
    """examples/signs/ is regenerated by `python -m core.reporting.sign_examples`: the files in the repository are its
    output on current code, one per EXAMPLES entry, and each goes through the upload path."""
    from core.reporting.sign_examples import EXAMPLES, SIGNS_DIR, shipped_examples, write_examples

    assert set(shipped_examples()) == set(EXAMPLES)
    for path in write_examples(tmp_path):
        assert path.read_bytes() == (SIGNS_DIR / path.name).read_bytes(), path.name
        assert tuple(read_upload(path.read_bytes(), path.name).shape) == (3, 32, 32)


def test_the_drawn_signs_report_scores_every_example(run_directory):
    """`python -m core.reporting.sign_examples --evaluate RUN` (README's domain-shift numbers): one row per example,
    verdicts
    from the run's own models; the shipped student is not right on all of them (it is a domain shift)."""
    from core.reporting.sign_examples import EXAMPLES, evaluate

    report = evaluate(run_directory)
    assert report["n"] == len(EXAMPLES) == 16
    assert 0 < sum(row["student_right"] for row in report["rows"]) < report["n"]
    assert all(isinstance(row["abstain"], bool) for row in report["rows"])  # the shipped run has abstention.json


def test_a_large_photo_is_downscaled_not_refused():
    """A 24-megapixel JPEG (it was refused over 16 MP) is read: its left half red, its right half blue, as a person
    sees it, at 32x32."""
    wide = np.zeros((4000, 6000, 3), dtype=np.uint8)
    wide[:, :3000, 0] = 255
    wide[:, 3000:, 2] = 255
    pixels = read_upload(encoded(Image.fromarray(wide), "JPEG", quality=90), "photo.jpg")
    assert tuple(pixels.shape) == (3, 32, 32)
    assert pixels[0, :, :12].float().mean() > 200 and pixels[2, :, 20:].float().mean() > 200


def test_a_non_square_image_is_centre_cropped_not_squashed():
    """A 96x32 image whose middle third is a green square comes out as that square (squashing kept all three
    thirds, each a third as wide)."""
    strip = np.zeros((32, 96, 3), dtype=np.uint8)
    strip[:, :32] = (255, 0, 0)
    strip[:, 32:64] = (0, 255, 0)
    strip[:, 64:] = (0, 0, 255)
    pixels = read_upload(encoded(Image.fromarray(strip), "PNG"), "strip.png")
    assert pixels.permute(1, 2, 0).reshape(-1, 3).tolist() == [[0, 255, 0]] * (32 * 32)


def test_an_unreadable_file_names_every_accepted_format():
    from core.reporting.images import ACCEPTED_FORMATS

    for data in (b"", b"not an image at all"):
        with pytest.raises(UploadError) as refused:
            read_upload(data, "x.bin")
        assert ACCEPTED_FORMATS in str(refused.value)
    assert all(name in ACCEPTED_FORMATS for name in ("PNG", "JPEG", "PPM", "WebP", "TIFF", "BMP", "GIF"))
