"""``astrodask demo``: the whole pipeline on a built-in simulated field."""

from astrodask.commands import stage_progress


def register(subparsers):
    parser = subparsers.add_parser(
        "demo", help="the whole pipeline end to end on a simulated field",
        description="Run the pipeline end to end on a simulated field with known truth: "
                    "simulate, ingest, run the shipped models on a local Dask cluster, merge "
                    "into a catalog, segmentation map and pictures.")
    parser.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    parser.add_argument("--preset", choices=["decam", "hst"], default="decam",
                        help="simulated survey (default decam: g,r,z, where both shipped models "
                             "run; hst: the published Morpheus model's bands)")
    parser.add_argument("--size", default="1024x1024", help="field size WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--n-workers", type=int, help="local Dask workers (default: one per core)")
    parser.set_defaults(func=run)


def run(args):
    from pathlib import Path

    from astrodask import run_demo

    with stage_progress("steps") as progress:
        result = run_demo(args.out, preset=args.preset, size=args.size, seed=args.seed,
                      n_workers=args.n_workers, progress=progress)
    sim = result.simulation
    print(f"simulated {sim['shape'][1]}x{sim['shape'][0]} {sim['preset']} field "
          f"({','.join(sim['bands'])}): {sim['n_galaxies']} galaxies, {sim['n_stars']} stars "
          f"-> {result.out / 'field'}")
    print(f"mosaic: {result.mosaic}")
    print(f"results: {result.run.results} ({', '.join(result.run.models)}; "
          f"{result.run.tiles_run} tiles on {result.run.cluster})")
    merged = result.merge
    print(f"catalog: {merged.files['catalog']} ({merged.n_objects} objects)")
    print("objects by class: " + ", ".join(f"{k} {v}" for k, v in merged.by_class.items()))
    if merged.by_morphology:
        print("objects by morphology: " + ", ".join(f"{k} {v}"
                                                     for k, v in merged.by_morphology.items()))
        print(f"  of them at S/N >= {merged.bright_snr:g} (morphology worth counting): "
              + (", ".join(f"{k} {v}" for k, v in merged.by_morphology_bright.items())
                 or "none"))
    print("maps and pictures: " + ", ".join(Path(merged.files[k]).name for k in
                                            ("segmap_fits", "morphology_fits", "overview_png",
                                             "colour_png") if k in merged.files))
    print("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
