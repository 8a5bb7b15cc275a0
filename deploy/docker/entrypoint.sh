#!/bin/sh
# Entrypoint of the astrodask images.
#
#   docker run IMAGE run /data/mosaic.zarr --out /data/results   ->  astrodask run ...
#   args: [dask, worker, tcp://scheduler:8786]                    ->  dask worker ...
#   args: [dask-scheduler, --port=8786]                           ->  dask scheduler ...
#
# Arguments that start with a program on PATH (dask, dask-cuda-worker, python,
# sh, astrodask) run that program; anything else goes to `astrodask`. The Dask
# Helm chart and the Kubernetes operator set only a container's args, so one
# image serves as the astrodask command, a Dask scheduler and a Dask worker.
# The Helm chart still starts `dask-scheduler` and `dask-worker`, programs that
# distributed no longer installs: they become `dask scheduler` / `dask worker`.
set -e
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    if command -v "$1" >/dev/null 2>&1; then
        exec "$@"
    fi
    case "$1" in
        dask-*)
            subcommand="${1#dask-}"
            shift
            exec dask "$subcommand" "$@"
            ;;
    esac
fi
exec astrodask "$@"
