"""The built sdist and wheel of gpt2-lm install into clean virtual environments and run, with and without a
C compiler (the C extensions are optional: without a compiler they are skipped and the package works).

Nothing but the project itself is installed from them, and nothing is downloaded: pip runs with --no-deps and
--no-index, and each clean environment sees the dependencies already installed beside these tests (torch
2.13.0 among them, never another) through a .pth file naming a view of this environment's site-packages that
leaves out this project's own files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli

pytestmark = pytest.mark.slow

NAME, VERSION = "gpt2_lm", "0.1.0"
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "runs", ".pytest_cache", ".hypothesis")


def run(*args, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def no_compiler_env(tmp: Path) -> dict:
    """CC names a compiler that does not exist, and PATH holds no gcc / cc / clang."""
    bare = tmp / "bare-bin"
    bare.mkdir(exist_ok=True)
    return {**os.environ, "CC": str(tmp / "no-such-compiler"), "PATH": str(bare)}


def extensions(names: list[str]) -> list[str]:
    return sorted(n for n in names if n.startswith("gpt2/_") and n.endswith(".so"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist, and wheels built from it with and without a C compiler."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    out = tmp / "dist"
    out.mkdir()
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = run(sys.executable, "-c", code, cwd=src).stdout.split()[-1]
    sdist = out / name
    assert sdist.name == f"{NAME}-{VERSION}.tar.gz"
    wheels = {}
    for label, env in (("cc", dict(os.environ)), ("no-cc", no_compiler_env(tmp))):
        folder = out / label
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", folder, sdist, env=env)
        (wheels[label],) = folder.glob("*.whl")
    return {"sdist": sdist, **wheels}


@pytest.fixture(scope="module")
def deps_view(tmp_path_factory) -> Path:
    """This environment's site-packages without this project (its editable hook and metadata)."""
    view = tmp_path_factory.mktemp("deps")
    for folder in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        for entry in Path(folder).iterdir():
            own = entry.name.startswith(("gpt2", "__editable__")) or "gpt2_lm" in entry.name or entry.suffix == ".pth"
            if not own and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    return view


def clean_env(root: Path, deps: Path) -> Path:
    """A new virtual environment that imports its dependencies from `deps`; returns its bin folder."""
    run(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "dependencies.pth").write_text(f"{deps}\n")
    return root / "bin"


def install(bin_dir: Path, what: Path, env: dict | None = None) -> None:
    run(
        sys.executable, "-m", "pip", "--python", bin_dir / "python", "install",
        "--no-deps", "--no-index", "--no-build-isolation", what, env=env,
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random model with its own tokenizer, saved in the project's format."""
    from gpt2.model import GPT, GPTConfig
    from gpt2.tokenizer import Tokenizer
    from gpt2.weights import save_model

    root = tmp_path_factory.mktemp("model")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    tok = Tokenizer.train([text], vocab_size=300)
    torch.manual_seed(0)
    save_model(GPT(GPTConfig(block_size=32, vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=16)), root / "model", tok)
    return root


SAMPLE = ["sample", "--prompt", "The model", "--max-new-tokens", "12", "--seed", "3", "--top-k", "20", "--device", "cpu", "--num-samples", "2"]


def test_sdist_holds_the_sources_and_wheels_build_with_and_without_a_compiler(dist):
    with tarfile.open(dist["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"pyproject.toml", "setup.py", "README.md", "gpt2/_bpe.c", "gpt2/_gemv.c", "gpt2/cli.py", "gpt2/evaluate/run.py"} <= names
    with_cc = zipfile.ZipFile(dist["cc"]).namelist()
    without = zipfile.ZipFile(dist["no-cc"]).namelist()
    assert [Path(n).name.split(".")[0] for n in extensions(with_cc)] == ["_bpe", "_gemv"]
    assert extensions(without) == [] and "gpt2/cli.py" in without
    metadata = zipfile.ZipFile(dist["cc"]).read(f"{NAME}-{VERSION}.dist-info/METADATA").decode()
    assert "Name: gpt2-lm" in metadata and "Requires-Dist: torch>=2.4" in metadata
    entry_points = zipfile.ZipFile(dist["cc"]).read(f"{NAME}-{VERSION}.dist-info/entry_points.txt").decode()
    assert "gpt2 = gpt2.cli:main" in entry_points


@pytest.mark.parametrize(
    "what, compiler",
    [("sdist", True), ("sdist", False), ("cc", True), ("no-cc", False)],
    ids=["sdist-with-cc", "sdist-without-cc", "wheel-with-cc", "wheel-without-cc"],
)
def test_installed_package_runs_in_a_clean_environment(dist, deps_view, tiny_model, tmp_path, what, compiler):
    bin_dir = clean_env(tmp_path / "venv", deps_view)
    install(bin_dir, dist[what], env=None if compiler else no_compiler_env(tmp_path))
    python = bin_dir / "python"
    env = {**os.environ, "GPT2_OFFLINE": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    where = run(python, "-c", "import gpt2, importlib.metadata as m; print(gpt2.__file__); print(m.version('gpt2-lm'))", env=env, cwd=tmp_path)
    module, version = where.stdout.split()
    assert Path(module).is_relative_to(tmp_path / "venv") and version == VERSION  # the installed copy, not the source tree
    has_c = run(python, "-c", "import importlib.util as u; print(all(u.find_spec(m) for m in ('gpt2._bpe', 'gpt2._gemv')))", env=env, cwd=tmp_path)
    assert has_c.stdout.strip() == str(compiler)

    helped = run(bin_dir / "gpt2", "--help", env=env, cwd=tmp_path)
    assert all(c in helped.stdout for c in ("tokenizer", "sample", "train", "eval", "convert"))

    # a tiny sample: the same text as the source tree's own command gives
    out = tmp_path / "installed.jsonl"
    run(bin_dir / "gpt2", *SAMPLE, "--model", tiny_model / "model", "--output", out, env=env, cwd=tmp_path)
    reference = tmp_path / "source.jsonl"
    r = run_cli(*SAMPLE, "--model", str(tiny_model / "model"), "--output", str(reference))
    assert r.returncode == 0, r.stderr
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert len(texts) == 2 and texts == [json.loads(line)["text"] for line in reference.read_text().splitlines()]

    # the tokenizer trainer: the C core or the Python one, the same vocabulary as the source tree's
    train = ["tokenizer", "train", "--input", str(tiny_model / "corpus.txt"), "--vocab-size", "400", "--out"]
    run(bin_dir / "gpt2", *train, tmp_path / "tok", env=env, cwd=tmp_path)
    assert run_cli(*train, str(tmp_path / "tok-source")).returncode == 0
    assert (tmp_path / "tok" / "bpe.json").read_bytes() == (tmp_path / "tok-source" / "bpe.json").read_bytes()
