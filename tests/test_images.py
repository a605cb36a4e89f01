"""Decoding every odd or broken input a user can hand us, resizing, PNG output, .npz and sources.

Inputs are generated with Pillow in ``tmp_path`` or in memory; nothing here is mocked."""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ascent.shared.errors import InvalidInput
from ascent.shared.images import (
    decode_image,
    encode_png,
    load_npz_item,
    read_npz,
    resize_center_crop,
    resize_smaller_side,
)
from ascent.shared.settings import Settings
from ascent.shared.sources import SourceReader

from .conftest import VAL25


def read_source(uri: str, settings: Settings | None = None) -> bytes:
    return SourceReader(settings).read(uri)


def load_source_image(uri: str, settings: Settings | None = None) -> tuple[np.ndarray, int | None]:
    return SourceReader(settings).load_image(uri)


LIMIT = 64_000_000


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` RGB pixels but holds none: a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def gradient(height: int = 20, width: int = 30) -> np.ndarray:
    """A deterministic H×W×3 uint8 image with distinct values everywhere."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=2).astype(
        np.uint8
    )


# --- broken inputs: a clear, permanent error naming the item ------------------------------------


def _truncated_png() -> bytes:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    return data[: len(data) // 2]


def _truncated_jpeg() -> bytes:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(encode(Image.fromarray(gradient(32, 32))))
    start = data.index(b"IDAT") + 8
    data[start : start + 16] = bytes(16)  # damaged compressed data (the CRC no longer matches)
    return bytes(data)


BROKEN_INPUTS = {
    "empty": (b"", "empty file"),
    "text with a .png name": (b"name,label\ncat.png,281\n", "text file"),
    "binary garbage": (bytes(range(256)) * 4, "not a supported image format"),
    "truncated png": (_truncated_png(), "corrupt or truncated"),
    "truncated jpeg": (_truncated_jpeg(), "corrupt or truncated"),
    "corrupt png data": (_corrupt_png(), "corrupt"),
    "png signature only": (b"\x89PNG\r\n\x1a\n", "PNG file but its header is truncated or corrupt"),
    "declared 20000x20000": (png_header_only(20000, 20000), "decompression bomb"),
    "declared 9000x9000": (png_header_only(9000, 9000), "exceeds the limit"),
    "postscript": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "text file"),
}


@pytest.mark.parametrize("case", list(BROKEN_INPUTS))
def test_broken_inputs_raise_a_clear_permanent_error_naming_the_item(case: str) -> None:
    data, reason = BROKEN_INPUTS[case]
    with pytest.raises(InvalidInput, match=reason) as info:
        decode_image(data, "file:///in/photo-17.png", LIMIT)
    assert "file:///in/photo-17.png" in str(info.value)
    assert not info.value.retryable


def test_decompression_bomb_is_refused_from_the_header_before_decoding() -> None:
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 100  # declares 400 million pixels
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match="decompression bomb"):
        decode_image(bomb, "bomb.png", LIMIT)
    assert time.perf_counter() - start < 1


def test_a_real_compressed_image_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1500), "white").save(path)
    assert path.stat().st_size < 50_000  # 3 million pixels, a few KiB on disk
    with pytest.raises(InvalidInput, match=r"2000×1500 = 3,000,000 pixels exceeds the limit of 1,000,000"):
        decode_image(path.read_bytes(), "big.png", 1_000_000)
    assert decode_image(path.read_bytes(), "big.png", 3_000_000).shape == (1500, 2000, 3)


def test_float_images_are_refused_with_a_reason() -> None:
    data = encode(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F"), "TIFF")
    with pytest.raises(InvalidInput, match=r"float.*not supported"):
        decode_image(data, "depth.tiff", LIMIT)


# --- odd but valid inputs: converted correctly to H×W×3 uint8 RGB -------------------------------


def decoded(image: Image.Image, fmt: str = "PNG", **options: object) -> np.ndarray:
    array = decode_image(encode(image, fmt, **options), f"test.{fmt.lower()}", LIMIT)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert array.flags.writeable and array.flags.c_contiguous
    return array


def test_rgb_is_returned_exactly() -> None:
    pixels = gradient()
    assert np.array_equal(decoded(Image.fromarray(pixels)), pixels)


def test_alpha_is_composited_onto_white() -> None:
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    out = decoded(Image.fromarray(rgba, "RGBA"))
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent red is white
    assert out[0, 1].tolist() == [0, 0, 255]  # opaque blue stays blue
    assert np.abs(out[0, 2].astype(int) - 127).max() <= 1  # half-transparent black is mid grey


def test_grayscale_with_alpha_is_composited_onto_white() -> None:
    la = Image.fromarray(np.array([[[0, 0], [0, 255], [200, 255]]], dtype=np.uint8), "LA")
    assert decoded(la)[0].tolist() == [[255, 255, 255], [0, 0, 0], [200, 200, 200]]


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    out = decoded(Image.fromarray(gray, "L"))
    assert np.array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    samples = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(samples)
    assert image.mode.startswith("I;16")
    out = decoded(image)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.array_equal(out[..., 0], out[..., 2])


def test_thirty_two_bit_integer_grayscale_is_read_as_sixteen_bit() -> None:
    samples = np.array([[0, 65535, 70000, -5]], dtype=np.int32)
    out = decoded(Image.fromarray(samples, "I"), "TIFF")
    assert out[0, :, 0].tolist() == [0, 255, 255, 0]


def test_cmyk_is_converted_to_rgb() -> None:
    cmyk = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0], [0, 255, 255, 0]]], dtype=np.uint8)
    out = decoded(Image.fromarray(cmyk, "CMYK"), "TIFF")
    assert out[0].tolist() == [[255, 255, 255], [0, 0, 0], [0, 255, 255], [255, 0, 0]]


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    out = decoded(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    assert out.shape == (8, 16, 3)
    assert np.abs(out.astype(int) - [255, 0, 0]).max() < 10


def test_palette_images_are_expanded() -> None:
    palette_image = Image.fromarray(gradient(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    expected = np.array(palette_image.convert("RGB"))
    assert np.array_equal(decoded(palette_image), expected)


def test_palette_transparency_becomes_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.putdata([0, 1])
    for fmt in ("PNG", "GIF"):
        out = decoded(image, fmt, transparency=1)
        assert out[0].tolist() == [[0, 0, 0], [255, 255, 255]], fmt


def test_rgb_colour_key_transparency_becomes_white() -> None:
    pixels = np.array([[[255, 0, 0], [0, 128, 0]]], dtype=np.uint8)
    out = decoded(Image.fromarray(pixels), "PNG", transparency=(255, 0, 0))
    assert out[0].tolist() == [[255, 255, 255], [0, 128, 0]]


def test_one_bit_images_become_black_and_white() -> None:
    image = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    assert decoded(image)[..., 0].tolist() == [[0, 255], [255, 0]]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP", "PPM"])
def test_one_pixel_images_decode(fmt: str) -> None:
    out = decoded(Image.new("RGB", (1, 1), (200, 100, 50)), fmt)
    assert out.shape == (1, 1, 3)
    assert np.abs(out.astype(int) - [200, 100, 50]).max() <= 8  # JPEG/WEBP are lossy


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, "anim.gif", LIMIT)[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6 means "rotate 90° clockwise to display": a stored 40×20 image is shown 20×40."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:10, :10] = (255, 0, 0)  # red block in the stored top-left corner
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, "JPEG", exif=exif, quality=95)
    out = decode_image(path.read_bytes(), path.name, LIMIT)
    assert out.shape == (40, 20, 3)
    assert out[2, 17, 0] > 200 and out[2, 2, 0] < 50  # the red block is now top-right


# --- resizing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((200, 300), 100, (100, 150)),
        ((300, 200), 100, (150, 100)),
        ((201, 300), 100, (100, 149)),
        ((7, 7), 3, (3, 3)),
    ],
)
def test_resize_smaller_side_keeps_the_aspect(shape: tuple[int, int], size: int, expected: tuple[int, int]) -> None:
    out = resize_smaller_side(np.zeros((*shape, 3), dtype=np.uint8), size)
    assert out.shape == (*expected, 3) and out.dtype == np.uint8


def test_resize_to_the_same_size_is_the_identity() -> None:
    pixels = gradient(50, 80)
    assert np.array_equal(resize_smaller_side(pixels, 50), pixels)


def test_downscaling_is_antialiased() -> None:
    checkerboard = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = resize_smaller_side(np.repeat(checkerboard[:, :, None], 3, axis=2), 8)
    assert np.abs(out.astype(int) - 127).max() <= 2  # no aliasing: fine detail averages to grey


def test_resize_center_crop_keeps_the_centre() -> None:
    pixels = np.zeros((200, 300, 3), dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:200] = (0, 255, 0)
    pixels[:, 200:] = (0, 0, 255)
    out = resize_center_crop(pixels, 100)
    assert out.shape == (100, 100, 3) and out.flags.c_contiguous
    assert out[50, 50].tolist() == [0, 255, 0]
    assert out[50, 0].tolist() == [255, 0, 0] and out[50, 99].tolist() == [0, 0, 255]


@pytest.mark.slow  # importing torchvision takes seconds
def test_resize_matches_torchvision_which_made_the_reference_numbers() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    pixels = np.random.default_rng(1).integers(0, 256, (181, 263, 3), dtype=np.uint8)
    expected = np.array(transforms.CenterCrop(96)(transforms.Resize(96)(Image.fromarray(pixels))))
    assert np.array_equal(resize_center_crop(pixels, 96), expected)
    expected = np.array(transforms.Resize(64)(Image.fromarray(pixels)))
    assert np.array_equal(resize_smaller_side(pixels, 64), expected)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_resize_rejects_arrays_that_are_not_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="H×W×3 uint8"):
        resize_center_crop(bad, 2)


# --- PNG output ----------------------------------------------------------------------------------


def test_encode_png_is_lossless_for_rgb_and_grayscale() -> None:
    rgb = gradient(17, 23)
    assert np.array_equal(decode_image(encode_png(rgb), "out.png", LIMIT), rgb)
    gray = rgb[..., 0].copy()
    assert np.array_equal(np.array(Image.open(io.BytesIO(encode_png(gray)))), gray)


def test_encode_png_is_deterministic() -> None:
    assert encode_png(gradient()) == encode_png(gradient())


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), dtype=np.float32), np.zeros((4, 4, 2), dtype=np.uint8)])
def test_encode_png_rejects_other_arrays(bad: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="encode_png"):
        encode_png(bad)


# --- .npz files ----------------------------------------------------------------------------------


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.fixture
def images_and_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), np.array([3, 1, 4, 1, 5])


def test_npz_item_and_label(images_and_labels: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    images, labels = images_and_labels
    # A pickled object array beside X and y, as in the CS231n file: it is never loaded.
    data = npz_bytes(X=images, y=labels, label_map=np.array([{"cat": 1}], dtype=object))
    image, label = load_npz_item(data, 2)
    assert np.array_equal(image, images[2]) and label == 4 and type(label) is int
    path = tmp_path / "set.npz"
    path.write_bytes(data)
    image, label = load_npz_item(path, 4)
    assert np.array_equal(image, images[4]) and label == 5


def test_npz_without_labels_gives_none(images_and_labels: tuple[np.ndarray, np.ndarray]) -> None:
    image, label = load_npz_item(npz_bytes(X=images_and_labels[0]), 0)
    assert label is None and image.shape == (8, 8, 3)


def test_npz_items_are_copies(images_and_labels: tuple[np.ndarray, np.ndarray]) -> None:
    arrays = read_npz(npz_bytes(X=images_and_labels[0]))
    first, _ = arrays.item(0)
    first[:] = 0
    assert np.array_equal(arrays.item(0)[0], images_and_labels[0][0])


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"images": np.zeros((1, 2, 2, 3), np.uint8)}, "no array named X"),
        ({"X": np.zeros((1, 2, 2, 3), np.float32)}, r"X must be N×H×W×3 uint8"),
        ({"X": np.zeros((2, 2, 3), np.uint8)}, r"X must be N×H×W×3 uint8"),
        ({"X": np.zeros((2, 2, 2, 3), np.uint8), "y": np.array([1])}, "one integer label per image"),
        ({"X": np.zeros((2, 2, 2, 3), np.uint8), "y": np.array([0.5, 1.0])}, "one integer label per image"),
    ],
)
def test_malformed_npz_is_refused(arrays: dict[str, np.ndarray], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        load_npz_item(npz_bytes(**arrays), 0, "set.npz")


def test_npz_index_out_of_range_is_refused(images_and_labels: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(InvalidInput, match=r"set\.npz: index 5 out of range: it holds 5 images"):
        load_npz_item(npz_bytes(X=images_and_labels[0]), 5, "set.npz")


@pytest.mark.parametrize("data", [b"", b"not a zip at all", npz_bytes(X=np.zeros((1, 2, 2, 3), np.uint8))[:40]])
def test_unreadable_npz_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"set\.npz"):
        load_npz_item(data, 0, "set.npz")


def npz_with_declared_shape(shape: tuple[int, ...]) -> bytes:
    """An .npz whose X header declares ``shape`` but which holds no data: a zip bomb's header."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X.npy", member.getvalue())
    return buffer.getvalue()


def test_npz_sizes_are_checked_from_the_header_before_loading() -> None:
    with pytest.raises(InvalidInput, match="exceed 1,000,000 pixels"):
        load_npz_item(npz_with_declared_shape((1, 2000, 2000, 3)), 0, "bomb.npz", max_pixels=1_000_000)
    with pytest.raises(InvalidInput, match="bytes, over"):
        load_npz_item(npz_with_declared_shape((100_000, 224, 224, 3)), 0, "bomb.npz")


def test_the_cs231n_validation_file_loads_without_pickle() -> None:
    if not VAL25.is_file():
        pytest.skip(f"{VAL25} not found (set ASCENT_ASSETS)")
    image, label = load_npz_item(VAL25, 3)
    with np.load(VAL25) as reference:
        assert np.array_equal(image, reference["X"][3]) and label == int(reference["y"][3])
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8


# --- sources -------------------------------------------------------------------------------------


def test_read_source_reads_file_uris_and_plain_paths(tmp_path: Path) -> None:
    path = tmp_path / "a b#1.png"
    path.write_bytes(b"bytes")
    assert read_source(path.as_uri()) == b"bytes"  # percent-encoded: file:///.../a%20b%231.png
    assert read_source(str(path)) == b"bytes"
    assert read_source("file://localhost" + path.as_uri()[len("file://") :]) == b"bytes"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:///nonexistent/dir/x.png", "file does not exist"),
        ("/nonexistent/dir/x.png", "file does not exist"),
        ("file://server/share/x.png", "only local file URIs"),
        ("http://example.com/x.png", "unsupported source scheme 'http'"),
        ("class:76", "unsupported source scheme 'class'"),
        ("s3://Not_A_Bucket/x.png", "not a valid bucket name"),
    ],
)
def test_read_source_errors_name_the_uri_and_are_permanent(uri: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as info:
        read_source(uri)
    assert uri in str(info.value)
    assert not info.value.retryable


def test_read_source_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is a directory"):
        read_source(tmp_path.as_uri())


def test_load_source_image_decodes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(encode(Image.fromarray(gradient())))
    image, label = load_source_image(path.as_uri(), Settings())
    assert np.array_equal(image, gradient()) and label is None


def test_load_source_image_applies_the_pixel_limit_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(InvalidInput, match="exceeds the limit of 5,000"):
        load_source_image(path.as_uri(), Settings(max_pixels=5000))


def test_npz_sources_read_each_file_once_per_shard(
    images_and_labels: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = images_and_labels
    path = tmp_path / "shard.npz"
    path.write_bytes(npz_bytes(X=images, y=labels))
    reader = SourceReader()
    for index in range(5):
        image, label = reader.load_image(f"{path.as_uri()}#{index}")
        assert np.array_equal(image, images[index]) and label == labels[index]
    after = reader.npz_cache_info()
    assert (after["misses"], after["hits"]) == (1, 4)


def test_a_changed_npz_is_read_again(images_and_labels: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    images, _ = images_and_labels
    path = tmp_path / "changing.npz"
    path.write_bytes(npz_bytes(X=images))
    reader = SourceReader()
    assert np.array_equal(reader.load_image(f"{path}#0")[0], images[0])
    path.write_bytes(npz_bytes(X=images[::-1].copy(), y=np.arange(5)))
    image, label = reader.load_image(f"{path}#0")
    assert np.array_equal(image, images[4]) and label == 0


def test_npz_cache_keeps_the_last_two_files(images_and_labels: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    uris = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.npz"
        path.write_bytes(npz_bytes(X=images_and_labels[0]))
        uris.append(path.as_uri())
    reader = SourceReader()
    for uri in [uris[0], uris[1], uris[0], uris[2], uris[1]]:  # a b a(hit) c(evicts b) b(miss)
        reader.load_image(f"{uri}#0")
    after = reader.npz_cache_info()
    assert (after["misses"], after["hits"]) == (4, 1)
    assert after["files"] == 2


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [
        ("", "needs an image index"),
        ("#x", "non-negative image index"),
        ("#-1", "non-negative"),
        ("#9", "out of range"),
    ],
)
def test_bad_npz_fragments_are_refused(
    suffix: str, reason: str, images_and_labels: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "set.npz"
    path.write_bytes(npz_bytes(X=images_and_labels[0]))
    with pytest.raises(InvalidInput, match=reason) as info:
        load_source_image(path.as_uri() + suffix)
    assert path.as_uri() in str(info.value)


def test_s3_sources_are_read_with_the_settings_endpoint(
    s3_endpoint: str, s3_bucket: str, images_and_labels: tuple[np.ndarray, np.ndarray]
) -> None:
    settings = Settings(aws_endpoint_url=s3_endpoint)
    store = settings.open_store(f"s3://{s3_bucket}")
    store.put("inputs/cat.png", encode(Image.fromarray(gradient())))
    store.put("inputs/val.npz", npz_bytes(X=images_and_labels[0], y=images_and_labels[1]))
    image, label = load_source_image(f"s3://{s3_bucket}/inputs/cat.png", settings)
    assert np.array_equal(image, gradient()) and label is None
    image, label = load_source_image(f"s3://{s3_bucket}/inputs/val.npz#3", settings)
    assert np.array_equal(image, images_and_labels[0][3]) and label == 1


@pytest.mark.parametrize("where", ["missing key", "missing bucket"])
def test_missing_s3_sources_are_permanent_errors(s3_endpoint: str, s3_bucket: str, where: str) -> None:
    uri = f"s3://{s3_bucket}/inputs/nope.png" if where == "missing key" else "s3://no-such-bucket-x/a.png"
    with pytest.raises(InvalidInput, match="does not exist") as info:
        read_source(uri, Settings(aws_endpoint_url=s3_endpoint))
    assert uri in str(info.value) and not info.value.retryable
