"""install.sh's arguments, read through its --dry-run (which prints the commands and runs none):
--cuda swaps the CPU torch pin for PyPI's CUDA build plus the CUDA 12 libraries CTranslate2 loads;
without it the commands are today's. Nothing is downloaded here (and no GPU was there)."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "install.sh"


def dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=60)


def commands(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_without_cuda_the_cpu_pin_as_before():
    run = commands(dry_run())
    assert ".venv/bin/pip install -q --no-compile torch==2.13.0" in run
    assert not any("nvidia-" in c or "uninstall" in c or "PIP_FIND_LINKS" in c for c in run)
    assert any(c.startswith(".venv/bin/pip install -q --no-compile -e .[test]") for c in run)


def test_cuda_installs_the_cuda_torch_build_first_then_everything_else():
    run = commands(dry_run("--cuda"))
    torch_at = run.index("env PIP_FIND_LINKS= .venv/bin/pip install -q --no-compile --no-cache-dir torch==2.13.0")
    assert run.index(".venv/bin/pip uninstall -q -y torch") < torch_at  # a CPU build would satisfy the pin
    assert ".venv/bin/pip install -q --no-compile torch==2.13.0" not in run
    assert any("nvidia-cublas-cu12" in c and "nvidia-cudnn-cu12==9.*" in c for c in run)
    rest = [c for c in run[torch_at:] if "-e .[test]" in c or "npm ci" in c or "funasr-client" in c]
    assert len(rest) == 3
    assert "get_cuda_device_count" in run[-1]  # says what torch and CTranslate2 see


def test_bytecode_is_compiled_once_on_every_core_after_the_packages_are_in():
    for args in ((), ("--cuda",)):
        run = commands(dry_run(*args))
        installs = [i for i, c in enumerate(run) if " install " in c and c.split()[0].endswith("pip")]
        installs += [i for i, c in enumerate(run) if c.startswith("env PIP_FIND_LINKS=")]
        assert installs and all("--no-compile" in run[i] for i in installs)  # pip compiles one file at a time
        compile_at = next(i for i, c in enumerate(run) if "-m compileall" in c)
        assert "-j 0" in run[compile_at] and compile_at > max(installs)


def test_an_unknown_argument_is_refused_with_the_usage_line():
    result = dry_run("--gpu")
    assert result.returncode == 2 and "usage: ./install.sh [--cuda] [--dry-run]" in result.stderr


def kept_venv_key(folder: Path) -> str:
    """install.sh's key for a kept .venv (--keep-venv), computed in `folder` by its own functions."""
    functions = "sed -n '/^pyproject_install_tables()/,/^}/p;/^kept_venv_key()/,/^}/p' install.sh"
    result = subprocess.run(
        ["bash", "-c", f'eval "$({functions})"; CUDA=0; kept_venv_key'],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and len(result.stdout.strip()) == 16, result.stderr
    return result.stdout.strip()


def test_the_kept_venv_is_keyed_by_what_pip_installs_not_by_tool_settings(tmp_path):
    root = SCRIPT.parent
    (tmp_path / "install.sh").write_text(SCRIPT.read_text())
    pyproject = (root / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject)
    key = kept_venv_key(tmp_path)
    assert kept_venv_key(tmp_path) == key

    # pytest's, ruff's and mypy's settings do not change what the .venv holds
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('addopts = "', 'addopts = "-x ', 1))
    assert 'addopts = "-x ' in (tmp_path / "pyproject.toml").read_text()
    assert kept_venv_key(tmp_path) == key
    # a dependency does
    assert '"aiohttp>=3.13"' in pyproject
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"aiohttp>=3.13"', '"aiohttp>=3.14"'))
    assert kept_venv_key(tmp_path) != key
    # and so does the script
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "install.sh").write_text(SCRIPT.read_text() + "\n# changed\n")
    assert kept_venv_key(tmp_path) != key
