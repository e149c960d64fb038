"""The wheels the GPU box lacks for the real sweep, for its Python 3.12, under one call's carry.

    python bench/gpu_wheels.py              # download into .whl/ (ignored by git), strip, check
    python bench/gpu_wheels.py --dry-run    # print the pip commands only

The box has torch, transformers, peft, numpy, pandas, pyarrow, scipy, grpcio, protobuf,
msgpack, aiohttp, psutil, requests, click, pyyaml ... but no Ray, MLflow or Optuna. These
are the packages that the sweep (`python -m tuner.run`: Ray Tune, MLflow's SQLite store,
Optuna) imports and the box lacks, at the versions installed here (what the tests ran
with). A device call carries at most 64 MiB with the working tree, so parts no sweep
loads are cut out of two wheels: Ray's Java jars (32 MB; Tune is Python), its dashboard's
web client (the tuner starts Ray without a dashboard), RLlib, Serve and its LLM library,
and MLflow's web UI (7.5 MB; `mlflow ui` runs where the results are read). The RECORD
loses those files' lines, and every entry is recompressed with LZMA: ~50 MiB in all
instead of ~64 MiB deflated (measured: Ray 2.60's wheel 79 -> 31 MB).

On the box (bench/gpu_sweep.py does it, bench/gpu_all.sh calls that):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import subprocess
import sys
import zipfile
from pathlib import Path

# Parts of a wheel that the sweep never loads, by package.
STRIP = {
    "ray": ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/serve/", "ray/llm/"),
    "mlflow": ("mlflow/server/js/",),
}
# What the sweep imports and the box lacks: Requires-Dist of ray, mlflow-skinny, mlflow (its
# SQL store) and optuna, less what the box has, and less what is never imported (checked:
# in a Python 3.12 holding only the box's packages, these wheels and nothing else import
# ray.tune, optuna and mlflow, create runs in an SQLite store, and run a Ray Tune grid).
PACKAGES = (
    "ray", "mlflow", "mlflow-skinny", "optuna", "colorlog", "alembic", "mako", "sqlalchemy",
    "cachetools", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
    "sqlparse", "python-dotenv", "opentelemetry-api", "opentelemetry-sdk",
    "opentelemetry-proto", "opentelemetry-semantic-conventions", "pydantic", "pydantic-core",
    "annotated-types", "typing-inspection", "importlib-metadata", "fastapi", "starlette",
    "cryptography", "cffi", "databricks-sdk", "google-auth", "pyasn1", "pyasn1-modules",
)  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
CARRY_MIB = 64  # one device call: carried paths and the working tree together
TREE_MIB = 4  # the working tree's share (about 1 MiB now) with room to grow


def pinned(names: tuple[str, ...]) -> list[str]:
    """name==version as installed here; a package not installed here is an error."""
    specs = []
    for name in names:
        try:
            specs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise SystemExit(f"gpu_wheels: {name} is not installed here; pip install it") from None
    return specs


def download_command(specs: list[str], folder: Path) -> list[str]:
    """pip download of cp312 manylinux (or pure-Python) wheels, no dependencies."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]  # fmt: skip
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return command + specs


def repack_wheel(wheel: Path, prefixes: tuple[str, ...]) -> int:
    """Rewrite `wheel` in place without the files under `prefixes` (and their RECORD lines),
    every entry LZMA-compressed (a third smaller than deflate on Ray's binaries; zipfile,
    and so pip, reads it; RECORD's hashes are of the contents, unchanged). Returns the
    bytes saved; 0 when it is already repacked."""
    before = wheel.stat().st_size
    with zipfile.ZipFile(wheel) as source:
        infos = source.infolist()
        if all(i.compress_type == zipfile.ZIP_LZMA for i in infos):
            return 0
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as target:
            for info in infos:
                if info.filename.startswith(prefixes):
                    continue
                data = source.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(x for x in lines if not x.startswith(prefixes)).encode()
                target.writestr(info, data, compress_type=zipfile.ZIP_LZMA)
    tmp.replace(wheel)
    return before - wheel.stat().st_size


def project_of(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=".whl", help="where the wheels go (ignored by git)")
    p.add_argument("--dry-run", action="store_true", help="print the download command only")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    command = download_command(pinned(PACKAGES), folder)
    print(" ".join(command), flush=True)
    if args.dry_run:
        return 0
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.whl"):  # two versions of one package stop the install
        stale.unlink()
    if subprocess.run(command).returncode:
        print("gpu_wheels: pip download failed (no network to PyPI?)", file=sys.stderr)
        return 1
    for wheel in sorted(folder.glob("*.whl")):
        saved = repack_wheel(wheel, STRIP.get(project_of(wheel), ()))
        print(f"repacked {wheel.name}: {-saved / 2**20:+.1f} MiB", flush=True)
    total = sum(w.stat().st_size for w in folder.glob("*.whl")) / 2**20
    limit = CARRY_MIB - TREE_MIB
    print(f"{len(list(folder.glob('*.whl')))} wheels, {total:.1f} MiB (limit {limit} MiB)")
    if total > limit:
        print(f"gpu_wheels: {total:.1f} MiB is over the {limit} MiB a call carries",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
