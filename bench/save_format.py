"""Does a fooling image survive the format it is stored in? (issue 17, docs/save-format.md)

On the 25 CS231n val images with SqueezeNet, target class 6 (the reference's setting): ``fool`` with
PNG outputs, whose images are then re-encoded as JPEG at ``--quality`` and classified again, against
``fool`` with the JPEG codec in its success check (``--save-format jpeg:Q``), whose decoded outputs
are classified independently here. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ascent.shared.codecs import parse_save_format, tensor_roundtrip
from ascent.shared.kernels import fool
from bench import common


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--target", type=int, default=6)
    parser.add_argument("--device")
    args = parser.parse_args(argv)
    device = common.pick_device(args.device)
    model = common.load_model(device)
    images, _ = common.load_val25(device)
    codec = tensor_roundtrip(parse_save_format(f"jpeg:{args.quality}"))
    out: dict[str, object] = {"images": int(images.shape[0]), "quality": args.quality, "target": args.target}
    started = time.perf_counter()
    png = fool(model, images, args.target)
    out["png_seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    jpeg = fool(model, images, args.target, codec=codec)
    out["jpeg_seconds"] = round(time.perf_counter() - started, 1)
    with torch.no_grad():
        png_as_jpeg = model(codec(png.images)).argmax(1) == args.target
        jpeg_decoded = model(codec(jpeg.images)).argmax(1) == args.target
    out["png_fooled"] = int(png.fooled.sum())
    out["png_fooled_after_jpeg"] = int((png.fooled & png_as_jpeg).sum())
    out["jpeg_fooled"] = int(jpeg.fooled.sum())
    out["jpeg_fooled_decoded_checked"] = int((jpeg.fooled & jpeg_decoded).sum())
    out["png_median_iterations"] = float(png.iterations[png.fooled].float().median())
    out["jpeg_median_iterations"] = float(jpeg.iterations[jpeg.fooled].float().median())
    out["png_mean_l2"] = round(float(png.l2.mean()), 3)
    out["jpeg_mean_l2"] = round(float(jpeg.l2.mean()), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
