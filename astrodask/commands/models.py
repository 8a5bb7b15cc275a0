"""``astrodask models import-morpheus``: the published Morpheus weights as a Keras model."""

from astrodask.commands import group


def register(subparsers):
    sub = group(subparsers, "models", "Import published models into astrodask")
    parser = sub.add_parser(
        "import-morpheus",
        help="convert the Morpheus checkpoint from the morpheus-astro package to .keras",
        description="Read the TF1 checkpoint shipped in the installed morpheus-astro package "
                    "(morpheus/core/model_weights/model-440), build the Keras U-Net, copy the "
                    "weights, check it against the original graph (softmax to 1e-4) and write "
                    "a .keras file with its model card (.card.json) beside it. "
                    "Needs: pip install 'astrodask[morpheus]'.")
    parser.add_argument("--out", metavar="PATH",
                        help="output .keras file (default: the shipped "
                             "astrodask/models/weights/morpheus.keras)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the original TF1 graph for the check")
    parser.set_defaults(func=_import_morpheus, quiet_native_logs=True)


def _import_morpheus(args):
    from astrodask import import_morpheus, model_card

    path = import_morpheus(out=args.out, verify=not args.no_verify)
    check = model_card(path)["metrics"].get("conversion_check", {})
    line = f"wrote {path} and its model card"
    if check:
        line += (f"; max |softmax - original| = "
                 f"{check['max_abs_softmax_diff_vs_original_graph']:.1e}")
    print(line)
