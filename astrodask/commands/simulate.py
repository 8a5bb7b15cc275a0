"""``astrodask simulate``: a GalSim survey field with its truth, written to a folder."""

import argparse

from astrodask.commands import progress_bar


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return value


def register(subparsers):
    parser = subparsers.add_parser(
        "simulate", help="simulate a survey field with known truth (GalSim)",
        description="Draw a multi-band survey field (galaxies and stars through the PSF, sky, "
                    "Poisson and read noise) tile by tile and write one FITS per band, the truth "
                    "catalogue (truth.parquet), per-object masks (masks.parquet), the exclusive "
                    "label map (labels.fits) and the morphology map (morphology.fits).")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    parser.add_argument("--size", default="4096x4096", metavar="WxH",
                        help="field size in pixels, WIDTHxHEIGHT (default 4096x4096)")
    parser.add_argument("--preset", default="decam",
                        help="survey preset: decam (g,r,z at 0.262\"/px) or hst "
                             "(v,z,j,h at 0.06\"/px) (default decam)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--density", type=_number, metavar="GAL_PER_ARCMIN2",
                        help="galaxies per arcmin^2 (default: preset; 30 for decam)")
    parser.add_argument("--star-density", type=_number, metavar="STARS_PER_ARCMIN2",
                        help="stars per arcmin^2 (default: preset)")
    parser.add_argument("--deep", action="store_true",
                        help="ultra-deep field: ~750 galaxies/arcmin^2, fainter limit, deeper noise")
    parser.add_argument("--cosmic-rays", type=_number, default=0.0, metavar="PER_MPX",
                        help="cosmic-ray tracks per megapixel per band (default 0)")
    parser.add_argument("--large-galaxies", type=_number, default=0.0, metavar="PER_ARCMIN2",
                        help="large, bright galaxies added per arcmin^2, most of them spirals "
                             "with star-forming knots along their arms (default 0)")
    parser.add_argument("--saturate", action="store_true",
                        help="saturate bright stars, with bleed trails along columns")
    parser.add_argument("--noiseless", action="store_true",
                        help="also write noiseless_<band>.fits")
    parser.add_argument("--mask-sigma", type=_number, default=1.0,
                        help="truth-mask floor in detection-image sigma (default 1)")
    parser.add_argument("--tile-size", type=int, default=1024,
                        help="drawing tile side, a multiple of 256 (memory only; default 1024)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes drawing tiles in parallel (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous simulation in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args):
    from astrodask import simulate

    with progress_bar("simulate", "tiles", args.quiet) as progress:
        result = simulate(args.out_dir, size=args.size, preset=args.preset, seed=args.seed,
                          density=args.density, star_density=args.star_density, deep=args.deep,
                          noiseless=args.noiseless, cosmic_rays=args.cosmic_rays,
                          saturate=args.saturate, mask_sigma=args.mask_sigma,
                          large_galaxies=args.large_galaxies,
                          tile_size=args.tile_size, workers=args.workers,
                          overwrite=args.overwrite, progress=progress)
    ny, nx = result["shape"]
    print(f"wrote {result['out_dir']}: {result['preset']} {nx}x{ny} px, bands "
          f"{','.join(result['bands'])}, {result['n_galaxies']} galaxies and "
          f"{result['n_stars']} stars in {result['seconds']:.1f} s")
