"""The wheel that the Docker image installs ships everything the service needs.

Runs the builder stage's package commands of the ``Dockerfile`` here (no Docker engine is
needed): ``pip wheel --no-deps`` of a copy of the sources, then an install of that wheel alone
into a fresh virtual environment, run from outside the checkout. Every file under the package
directories must be in the wheel (data files such as the GPU catalog, calibration profiles,
presets and database migrations are easy to leave out of ``package-data``), and the installed
``meshplan`` must start, read its data and, where the build has a database, migrate one.

The third-party dependencies come from this checkout's environment (a path entry in the fresh
environment), so the test needs no network; the image itself resolves them from PyPI.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_NAMES = ("__pycache__", "*.pyc", "*.pyo", ".*")


def _package_dirs() -> list[str]:
    """Top-level package directories that ``pyproject.toml``'s package discovery includes."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(d.name for d in ROOT.iterdir()
                  if (d / "__init__.py").is_file()
                  and any(fnmatch.fnmatch(d.name, p) for p in patterns))


def _source_files(packages: list[str]) -> set[str]:
    files = set()
    for package in packages:
        for path in (ROOT / package).rglob("*"):
            rel = path.relative_to(ROOT)
            if path.is_file() and not any(fnmatch.fnmatch(part, pattern)
                                          for part in rel.parts for pattern in SKIP_NAMES):
                files.add(rel.as_posix())
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources the Docker build context holds."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in _package_dirs():
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns(*SKIP_NAMES))
    dist = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: setuptools from this environment, so no download is needed.
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(dist), str(src)],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (whl,) = dist.glob("meshplan-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with only the wheel installed; its ``bin`` directory."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path"
                           "('purelib'))"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
    # The dependencies: a plain path entry, appended after the venv's own site-packages, so
    # that this checkout's editable install (a .pth hook there) is not activated.
    (Path(site) / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MESHPLAN_", "PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**clean, **(env or {})}, input=stdin)


def test_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    packages = _package_dirs()
    assert {"costmodel", "solver", "service"} <= set(packages)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if ".dist-info/" not in n}
        entry_points = next(zf.read(n).decode() for n in zf.namelist()
                            if n.endswith(".dist-info/entry_points.txt"))
    missing = sorted(_source_files(packages) - shipped)
    assert not missing, f"not in the wheel (add them to package-data): {missing}"
    assert any(n.startswith("costmodel/data/profiles/") for n in shipped)
    assert "meshplan = service.cli:main" in entry_points


def test_installed_wheel_runs_from_outside_the_checkout(installed: Path,
                                                        tmp_path: Path) -> None:
    where = _run(installed, "python", "-c",
                 "import costmodel, service, solver, sys; "
                 "print(service.__file__, costmodel.__file__, solver.__file__, sys.prefix)",
                 cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    *files, prefix = where.stdout.split()
    for f in files:
        assert f.startswith(prefix) and not f.startswith(str(ROOT)), (
            f"imported from {f}, not from the installed wheel")

    help_ = _run(installed, "meshplan", "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    for command in ("serve", "estimate", "plan", "gpus", "models"):
        assert command in help_.stdout

    gpus = _run(installed, "meshplan", "gpus", "--json", cwd=tmp_path)
    assert gpus.returncode == 0, gpus.stderr
    assert "H100-SXM-80GB" in gpus.stdout

    # The estimate reads the presets, the GPU catalog and the default calibration profile.
    example = (ROOT / "examples" / "llama3-70b-h100.json").read_text()
    est = _run(installed, "meshplan", "estimate", "-", "--json", cwd=tmp_path, stdin=example)
    assert est.returncode == 0, est.stderr
    assert json.loads(est.stdout)["step_time_s"] > 0

    # The docs assets come from an installed package, not from this checkout.
    assets = _run(installed, "python", "-c",
                  "from service.docs import assets_dir; "
                  "print((assets_dir() / 'swagger-ui-bundle.js').is_file())", cwd=tmp_path)
    assert assets.stdout.strip() == "True", assets.stderr


def test_installed_wheel_migrates_a_database(installed: Path, tmp_path: Path) -> None:
    """``meshplan db upgrade`` from the wheel: the migration scripts ship with it."""
    db = tmp_path / "wheel.db"
    out = _run(installed, "meshplan", "db", "upgrade", cwd=tmp_path,
               env={"MESHPLAN_DATABASE_URL": f"sqlite:///{db}"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert db.is_file() and db.stat().st_size > 0
