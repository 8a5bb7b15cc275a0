"""astrodask on SLURM GPU nodes through dask-jobqueue.

Each SLURM job is one Dask worker on one GPU (``#SBATCH --gres=gpu:1``),
started as a plain ``dask worker`` that advertises the Dask resource
``GPU=1``; the scheduler runs in this process (on the login node or wherever
this script runs) and ``astrodask.run`` drives the run through it::

    python deploy/slurm/slurm_cluster.py MOSAIC.zarr --out RESULTS --jobs 4 \\
        [--partition gpu] [--account ACCOUNT] [--walltime 02:00:00] \\
        [--cpus-per-task 8] [--memory 48GiB] [--interface ib0] [--models unet]
    python deploy/slurm/slurm_cluster.py --print-job-script [--partition gpu ...]

The mosaic, the results folder and the Python environment must be on a
filesystem that every node sees, at the same path: the workers read the
tiles and write the outputs themselves, and load the models from the path of
the astrodask installation that runs this script. Needs ``dask-jobqueue``
(``pip install 'astrodask[hpc]'``).
"""

import argparse
import sys

#: SBATCH directive asking for one GPU per job (one worker per job).
GPU_DIRECTIVE = "--gres=gpu:1"
#: Worker option advertising the GPU as a Dask resource.
GPU_RESOURCE_ARGS = ["--resources", "GPU=1"]


def gpu_cluster(*, partition=None, account=None, walltime="02:00:00", cpus_per_task=8,
                memory="48GiB", interface=None, log_directory="dask-logs",
                job_script_prologue=(), **kwargs):
    """A ``dask_jobqueue.SLURMCluster`` whose jobs are single-GPU astrodask workers.

    Parameters
    ----------
    partition, account : str, optional
        SLURM partition (``--partition``) and account (``--account``).
    walltime : str
        Job time limit, ``HH:MM:SS``.
    cpus_per_task : int
        CPU cores asked for each job (``--cpus-per-task``). The worker itself
        runs one task at a time (``--nthreads 1``), as astrodask's local GPU
        workers do; the cores feed the framework and the tile reads.
    memory : str
        Memory per job; also the worker's ``--memory-limit``.
    interface : str, optional
        Network interface the workers and the scheduler talk over (``ib0``).
    log_directory : str
        Where SLURM writes the jobs' output.
    job_script_prologue : sequence of str
        Shell lines run before the worker starts (``module load cuda``,
        ``source venv/bin/activate``).
    **kwargs
        Passed on to ``SLURMCluster`` (``scheduler_options``, ``python``...).

    Returns
    -------
    dask_jobqueue.SLURMCluster
        With no jobs yet: call ``cluster.scale(jobs=N)``.
    """
    from dask_jobqueue import SLURMCluster

    prologue = ["export TF_FORCE_GPU_ALLOW_GROWTH=true",
                "export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}", *job_script_prologue]
    return SLURMCluster(
        cores=1, processes=1, job_cpu=cpus_per_task, memory=memory, walltime=walltime,
        queue=partition, account=account, interface=interface,
        job_name="astrodask-worker", log_directory=log_directory,
        job_extra_directives=[GPU_DIRECTIVE], worker_extra_args=list(GPU_RESOURCE_ARGS),
        job_script_prologue=prologue, **kwargs)


def _parser():
    parser = argparse.ArgumentParser(
        description="Run astrodask on SLURM GPU nodes (one dask-jobqueue job per GPU).")
    parser.add_argument("mosaic", nargs="?", metavar="MOSAIC.zarr")
    parser.add_argument("--out", metavar="RESULTS", help="results folder")
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs (GPU workers)")
    parser.add_argument("--models", help="comma-separated, as for astrodask run")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--memory", default="48GiB")
    parser.add_argument("--interface", help="network interface, e.g. ib0")
    parser.add_argument("--prologue", action="append", default=[], metavar="LINE",
                        help="shell line run before each worker (repeatable)")
    parser.add_argument("--print-job-script", action="store_true",
                        help="print the job script and exit (submits nothing)")
    return parser


def main(argv=None):
    """Command line: start the cluster, scale it, run astrodask, close it."""
    args = _parser().parse_args(argv)
    if not args.print_job_script and not (args.mosaic and args.out):
        _parser().error("MOSAIC.zarr and --out are required (or --print-job-script)")
    options = dict(partition=args.partition, account=args.account, walltime=args.walltime,
                   cpus_per_task=args.cpus_per_task, memory=args.memory,
                   interface=args.interface, job_script_prologue=args.prologue)
    with gpu_cluster(**options) as cluster:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        from distributed import Client

        import astrodask

        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            print(f"dashboard: {client.dashboard_link}", file=sys.stderr)
            overrides = {"models": args.models.split(",")} if args.models else {}
            summary = astrodask.run(args.mosaic, args.out, client=client, **overrides)
    print(f"results in {summary.results}: {summary.tiles_run} tiles computed, "
          f"{summary.tiles_skipped} already done, of {summary.tiles_total} "
          f"in {summary.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
