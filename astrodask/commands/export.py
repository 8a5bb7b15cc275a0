"""``astrodask export``: a merged catalog as a FITS binary table."""


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a merged catalog as a FITS binary table",
        description="Write catalog.parquet (or the results folder holding it) as a FITS "
                    "binary table, part by part in bounded memory: the same columns and "
                    "units (TUNITn), pixel coordinates 1-based as FITS counts them (x, y, "
                    "centroids, anchors and a box's first pixel + 1; a box's end is its last "
                    "pixel, inclusive), the provenance in the primary header (ADPROV). The "
                    "file appears only when whole.")
    parser.add_argument("catalog", metavar="CATALOG",
                        help="results folder or catalog.parquet (local path or URL)")
    parser.add_argument("out", metavar="OUT", help="the FITS file to write (replaced if there)")
    parser.set_defaults(func=run)


def run(args):
    from astrodask import write_catalog_fits

    rows = write_catalog_fits(args.catalog, args.out)
    print(f"wrote {args.out}: {rows} objects")
