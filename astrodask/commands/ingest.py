"""``astrodask ingest``: FITS band images → Zarr mosaic store."""

import sys

from astrodask.commands import progress_bar


def register(subparsers):
    parser = subparsers.add_parser(
        "ingest", help="convert per-band FITS images into a tiled Zarr mosaic store",
        description="Validate one FITS image per band (same pixel grid and WCS) and write a "
                    "Zarr v3 mosaic store whose chunks are the models' halo'd windows.")
    parser.add_argument("inputs", nargs="+", metavar="BAND.fits",
                        help="one FITS file per band (.fits or .fits.gz)")
    parser.add_argument("--out", required=True, metavar="MOSAIC.zarr", help="store to write")
    parser.add_argument("--bands", help="comma-separated band names in input order "
                                        "(default: each file's FILTER keyword)")
    parser.add_argument("--tile", type=int, default=512, help="model window side (default 512)")
    parser.add_argument("--halo", type=int, default=32,
                        help="overlap on each side of a window's core (default 32)")
    parser.add_argument("--weight", nargs="+", metavar="W.fits",
                        help="inverse-variance weight maps, one per band, in input order")
    parser.add_argument("--hdu", type=int, help="HDU index to read (default: first image HDU)")
    parser.add_argument("--rescale", metavar="F|auto",
                        help="resample the bands by factor F (>1 upsamples, <1 downsamples; "
                             "flux-conserving, WCS updated); auto: F that brings the median "
                             "measured PSF FWHM to ~3.8 px, the shipped Mask R-CNN's")
    parser.add_argument("--psf-fwhm", metavar="BAND=ARCSEC,...",
                        help="PSF FWHM per band in arcsec (e.g. g=1.1,r=1.0), stored instead "
                             "of the measurement")
    parser.add_argument("--background", type=int, metavar="MESH",
                        help="subtract each band's sky background, a map of MESH x MESH px "
                             "meshes (as SExtractor's BACK_SIZE; e.g. 128), for images whose "
                             "sky was not subtracted (default: the pixels as given)")
    parser.add_argument("--saturation", metavar="LEVEL|BAND=LEVEL,...",
                        help="saturation level per band (or one for every band) in the input "
                             "files' units, for headers without SATURATE (as SExtractor's "
                             "SATUR_LEVEL); default each header's SATURATE")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args):
    from astrodask import ingest, parse_band_values, parse_psf_fwhm

    bands = args.bands.split(",") if args.bands else None
    psf_fwhm = parse_psf_fwhm(args.psf_fwhm) if args.psf_fwhm else None
    saturation = (parse_band_values(args.saturation, "--saturation", "r=31000 or 31000",
                                    unit="LEVEL", allow_all=True)
                  if args.saturation else None)
    with progress_bar("ingest", "blocks", args.quiet) as progress:
        mosaic = ingest(args.inputs, args.out, bands=bands, tile=args.tile, halo=args.halo,
                        weights=args.weight, hdu=args.hdu, overwrite=args.overwrite,
                        rescale=args.rescale, psf_fwhm=psf_fwhm, background=args.background,
                        saturation=saturation, progress=progress)
    n_bands, height, width = mosaic.shape
    ny, nx = mosaic.tile_grid.shape
    wcs = "with WCS" if mosaic.wcs is not None else "no WCS"
    print(f"wrote {mosaic.path}: bands {','.join(mosaic.bands)}, {height}x{width} px, "
          f"{ny}x{nx} windows of {mosaic.tile_grid.tile} (halo {mosaic.tile_grid.halo}), {wcs}",
          file=sys.stdout)
    background = mosaic.attrs.get("background")
    if background:
        for band, level in background["levels"].items():
            print(f"background {band}: {level['median']:.4g} (meshes of {background['mesh']} px, "
                  f"{level['min']:.4g} to {level['max']:.4g}) subtracted", file=sys.stdout)
    if mosaic.rescale_factor != 1.0:
        print(f"resampled by {mosaic.rescale_factor:g}: {mosaic.pixel_scale or 0:.4g} arcsec/px",
              file=sys.stdout)
    for band, psf in (mosaic.psf or {}).items():
        print(f"PSF {band}: {format_psf(psf)}", file=sys.stdout)
    sources = mosaic.attrs.get("saturation_source") or {}
    for band, level in mosaic.saturation.items():
        if level is not None:
            print(f"saturation {band}: {level:.6g} ({sources.get(band) or 'SATURATE'})",
                  file=sys.stdout)


def format_psf(psf):
    """One line about a band's PSF."""
    if psf.fwhm_px is None:
        return f"unknown ({psf.reason})"
    arcsec = f" = {psf.fwhm_arcsec:.2f} arcsec" if psf.fwhm_arcsec else ""
    stars = f" from {psf.n_stars} stars" if psf.source == "measured" else " (given)"
    return f"FWHM {psf.fwhm_px:.2f} px{arcsec}{stars}"
