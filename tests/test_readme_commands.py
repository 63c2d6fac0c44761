"""Every shell command in the README's code blocks runs as written, so the README cannot rot.

Each ```bash block runs in its own temporary folder (``.venv`` and ``src`` linked in, so paths read
as in a clone), its commands in order (a block's later commands use what its earlier ones wrote).
Commands are shrunk only through options the README or ``--help`` documents (``--epochs``,
``--trials``, ``--option n=...``, ``--n-boot``, ``--quick``), listed in ``SHRINK``; commands that
cannot run here are listed in ``EXCLUDED`` with the reason. A command that is in neither list runs
exactly as written; a command the README no longer has makes the lists' test fail, so the lists
stay honest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV = Path(sys.executable).parent.parent

# command prefix (as the README writes it, after joining continuation lines) -> why it is not run
EXCLUDED = {
    "make demo": "the whole demo benchmark (minutes); `medequity demo` has its own tests",
    "make test": "the test suite itself (this test is part of it)",
    ".venv/bin/medequity models check dinov2-vitb14 ~/weights/": "needs your downloaded weight files; "
    "tests/models cover the command on random weights in the published layouts",
    ".venv/bin/medequity models check biomedclip ~/weights/": "needs your downloaded weight files (see above)",
    ".venv/bin/medequity models convert-openai ~/weights/": "needs OpenAI's TorchScript file, checked by SHA-256",
    ".venv/bin/medequity bench run fm.yaml": "fm.yaml names your weight files (~/weights/...)",
    ".venv/bin/medequity audit masks.csv": "your own masks: masks.csv and FOLDER are placeholders",
    ".venv/bin/medequity bench run src/medequity/bench/specs/seg-methods.yaml": "10 decoder trainings after the tiny "
    "SAM's pre-training (minutes); tests/bench/test_segmentation_methods_bench.py loads this spec and runs the same "
    "pipeline (seg_decoder x ERM/GroupDRO/FEBS grid, 2 seeds) shrunken",
}

# command prefix -> (old, new) argument replacements or additions (old None: appended), documented options only
SHRINK: dict[str, list[tuple[str | None, str]]] = {
    ".venv/bin/medequity train --option preset=cxr-sex-prevalence": [
        ("--epochs 10", "--epochs 1"), (None, "--option n=400 --n-boot 50")],
    ".venv/bin/medequity fairdi ablation": [("--epochs 5", "--epochs 1"), (None, "--option n=300")],
    ".venv/bin/medequity fairtune search": [("--epochs 5", "--epochs 1"), ("--trials 8", "--trials 2"),
                                            (None, "--option n=400 --n-boot 50")],
    ".venv/bin/medequity train --option preset=cxr-sex-shortcut": [
        ("--epochs 5", "--epochs 1"), (None, "--option n=400 --n-boot 50")],
    ".venv/bin/medequity validate fair-diagnosis --quick": [(None, "--preset cxr-sex-prevalence --no-baselines")],
    ".venv/bin/medequity validate fairtune --quick": [(None, "--part fig1")],
    ".venv/bin/medequity audit --example": [(None, "--n-boot 100 --n-permutations 100")],
    ".venv/bin/medequity audit predictions.csv": [(None, "--n-boot 100 --n-permutations 100")],
    ".venv/bin/medequity audit cxr.csv": [(None, "--n-boot 100 --n-permutations 100")],
    ".venv/bin/medequity audit --example --task segmentation": [(None, "--n-boot 100 --n-permutations 100")],
}


def _without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a shell comment (outside quotes, after a blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def bash_blocks() -> list[list[str]]:
    """The README's ```bash blocks, each a list of shell commands (continuation lines joined as the
    shell joins them, comments dropped), quoting kept as written."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        commands, current = [], ""
        for line in body.splitlines():
            code = _without_comment(line)
            if code.endswith("\\"):
                current += code[:-1]
                continue
            current += code
            if current.strip():
                commands.append(" ".join(current.split()) if "\"" not in current else current.strip())
            current = ""
        blocks.append(commands)
    return blocks


def _entry(table: dict, command: str):
    matches = [prefix for prefix in table if command.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


def shrunk(command: str) -> str:
    for old, new in _entry(SHRINK, command) or []:
        if old is None:
            command += " " + new
        else:
            assert old in command, f"SHRINK expects {old!r} in the README command {command!r}"
            command = command.replace(old, new)
    return command


BLOCKS = bash_blocks()


def test_every_command_is_run_or_excluded_with_a_reason_and_the_lists_are_current():
    commands = [c for block in BLOCKS for c in block]
    assert len(commands) >= 15  # the parser found the README's commands
    for prefix in (*EXCLUDED, *SHRINK):
        assert any(c.startswith(prefix) for c in commands), f"{prefix!r} is no longer in the README: update the lists"
    for command in commands:
        assert command.startswith((".venv/bin/medequity ", ".venv/bin/python ", "make ")), command
        assert not (_entry(EXCLUDED, command) and _entry(SHRINK, command)), command
    assert all(reason.strip() for reason in EXCLUDED.values())


def _multilabel_table(folder: Path) -> None:
    """``cxr.csv`` as the README says to make it: its multi-label Python example, then ``table.to_csv``."""
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
                  if "for finding in" in b and "table" in b]
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(example + "\ntable.to_csv('cxr.csv', index=False)\n", str(README), "exec"), {})  # noqa: S102
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One feature/pre-training cache for every block, as for a user who runs the README in one folder:
    the tiny SAM and the small CNN are pre-trained once (each block still runs in its own folder)."""
    return tmp_path_factory.mktemp("readme-cache")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b],
                         ids=[re.sub(r"\W+", "-", b[0].split(" ", 1)[-1])[:40] for b in BLOCKS if b])
def test_readme_block_runs(block, tmp_path, shared_cache, capsys):
    (tmp_path / ".venv").symlink_to(VENV)
    (tmp_path / "src").symlink_to(ROOT / "src")
    if any("cxr.csv" in c for c in block):
        _multilabel_table(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160", "MEDEQUITY_CACHE": str(shared_cache)}
    for command in block:
        if _entry(EXCLUDED, command):
            continue
        run = shrunk(command)
        done = subprocess.run(["bash", "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"README command failed ({done.returncode}): {run}\n{output[-4000:]}"
        assert "Traceback" not in output, f"{run}\n{output[-4000:]}"
