"""``astrodask demo``: the whole pipeline on a built-in simulated field."""


def register(subparsers):
    parser = subparsers.add_parser(
        "demo", help="simulate a field, ingest it and run the shipped models on it",
        description="Run the pipeline end to end on a simulated field with known truth: "
                    "simulate, ingest, run the shipped models on a local Dask cluster.")
    parser.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    parser.add_argument("--preset", choices=["decam", "hst"], default="hst",
                        help="simulated survey (default hst: the published Morpheus bands)")
    parser.add_argument("--size", default="1024x1024", help="field size WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--n-workers", type=int, help="local Dask workers (default: one per core)")
    parser.set_defaults(func=run)


def run(args):
    import numpy as np

    from ..demo import demo
    from ..progress import TextProgress
    from ..simulation.render import parse_size

    bars = {}

    def progress(stage, done, total):
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars.clear()
            bars[stage] = TextProgress(stage, unit="steps")
        bars[stage](done, total)

    result = demo(args.out, preset=args.preset, size=parse_size(args.size), seed=args.seed,
                  n_workers=args.n_workers, progress=progress)
    for bar in bars.values():
        bar.close()
    sim = result.simulation
    print(f"simulated {sim['shape'][1]}x{sim['shape'][0]} {sim['preset']} field "
          f"({','.join(sim['bands'])}): {sim['n_galaxies']} galaxies, {sim['n_stars']} stars "
          f"-> {result.out / 'field'}")
    print(f"mosaic: {result.mosaic}")
    print(f"results: {result.run.results} ({', '.join(result.run.models)}; "
          f"{result.run.tiles_run} tiles on {result.run.cluster})")
    unet = result.run.results / "unet.zarr"
    if unet.exists():
        import zarr

        group = zarr.open_group(str(unet), mode="r")
        classes = group.attrs["astrodask"]["classes"]
        top = np.argmax(group["mean"][:], axis=0)
        counts = np.bincount(top.ravel(), minlength=len(classes)) / top.size
        print("pixels by top U-Net class: " + ", ".join(
            f"{name} {100 * share:.1f}%" for name, share in zip(classes, counts)))
    instances = result.run.results / "maskrcnn"
    if instances.exists():
        import pyarrow.dataset as ds

        table = ds.dataset(instances, format="parquet").to_table(
            filter=ds.field("in_core"), columns=["class"])
        names = table.column("class").to_pylist()
        print(f"Mask R-CNN detections (window cores): {names.count('star')} stars, "
              f"{names.count('galaxy')} galaxies")
    print("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
