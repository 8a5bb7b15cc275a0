#!/usr/bin/env bash
# Run here (PyPI reachable), in the repository root's clone: downloads into .whl/ (ignored
# by git) the wheels that a lent GPU machine lacks (Python 3.12, x86-64; it has JAX, NumPy,
# SciPy, pandas, pyarrow, scikit-image and h5py), for benchmarks/gpu_session.sh.
# dask 2026.7.1 because dask-cuda 26.10 pins it. About 31 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python=${PYTHON:-python3}
for package in keras==3.15.1 namex==0.1.0 optree==0.20.0 dask==2026.7.1 distributed==2026.7.1 \
    rapids-dask-dependency==26.10.0 dask-cuda==26.10.0 partd==1.4.2 locket==1.0.0 zict==3.0.0 \
    tblib==3.2.2 tornado==6.6.1 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
    google-crc32c==1.9.0 astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.16.0.37.44 \
    sep==1.4.1 photutils==3.0.0; do
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$package"
done
du -sh .whl
