"""Cut the documentation gallery's pictures from the results of a demo or a merge.

    .venv/bin/astrodask demo --out /work/bench/demo
    .venv/bin/python benchmarks/gallery.py /work/bench/demo/results --prefix demo --corner 504 0

writes ``docs/gallery/<prefix>_overview.jpg`` (the whole overview, at most
640 px), and the ``--size`` square whose lower-left pixel is ``--corner``
(0-based mosaic y, x) at full resolution from ``overview.png``
(``<prefix>_overview_crop.png``), ``segmap.fits`` (``<prefix>_segmap_crop.png``,
one colour per catalog id) and ``morpheus_colour.png``
(``<prefix>_morpheus_colour_crop.jpg``, when the U-Net ran).
"""

import argparse
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image

GALLERY = Path(__file__).resolve().parents[1] / "docs" / "gallery"


def png_crop(path, corner, size):
    """The ``size`` square at mosaic pixel ``corner`` (y, x) of a y-upwards PNG quick-look."""
    picture = np.asarray(Image.open(path).convert("RGB"))
    height = picture.shape[0]
    y0, x0 = corner
    return picture[height - y0 - size:height - y0, x0:x0 + size]


def segmap_picture(path, corner, size, seed=0):
    """The segmentation map's square, each id in its own colour, sky black, y upwards."""
    y0, x0 = corner
    with fits.open(path) as hdus:
        ids = np.asarray(hdus[0].data[y0:y0 + size, x0:x0 + size])
    palette = np.random.default_rng(seed).integers(60, 256, size=(int(ids.max()) + 1, 3))
    palette[0] = 0
    return palette[ids][::-1].astype(np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a merge's output folder (demo: OUT/results)")
    parser.add_argument("--prefix", required=True, help="file name prefix, e.g. demo or hst")
    parser.add_argument("--corner", type=int, nargs=2, default=(0, 0), metavar=("Y", "X"))
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--out", type=Path, default=GALLERY)
    args = parser.parse_args(argv)

    corner = tuple(args.corner)
    overview = Image.open(args.results / "overview.png").convert("RGB")
    overview.thumbnail((640, 640))
    overview.save(args.out / f"{args.prefix}_overview.jpg", quality=85)
    Image.fromarray(png_crop(args.results / "overview.png", corner, args.size)).save(
        args.out / f"{args.prefix}_overview_crop.png")
    Image.fromarray(segmap_picture(args.results / "segmap.fits", corner, args.size)).save(
        args.out / f"{args.prefix}_segmap_crop.png")
    colour = args.results / "morpheus_colour.png"
    if colour.exists():
        Image.fromarray(png_crop(colour, corner, args.size)).save(
            args.out / f"{args.prefix}_morpheus_colour_crop.jpg", quality=90)
    print(f"wrote {args.prefix}_* pictures to {args.out}")


if __name__ == "__main__":
    main()
