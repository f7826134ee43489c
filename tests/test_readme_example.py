"""README's "Your own model and data" example, run verbatim: the two commands of its bash block, from a copy of
the repository's `examples/own_model/` (so the image folder, the cache and the run folder land in a temp dir),
with the venv the tests run in standing for `.venv/bin/`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from _proc import ROOT, cleanup, cli_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's own-model section has no bash block"
    return [shlex.split(line) for line in block.group(1).strip().splitlines()]


def test_readme_own_model_example_runs_verbatim(tmp_path: Path) -> None:
    commands = _commands()
    assert [c[0] for c in commands] == [".venv/bin/python", ".venv/bin/tfkd-search"]
    shutil.copytree(ROOT / "examples" / "own_model", tmp_path / "examples" / "own_model")
    venv = Path(sys.executable).parent
    env = cli_env({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    for cmd in commands:
        exe = venv / Path(cmd[0]).name
        proc = subprocess.Popen([str(exe), *cmd[1:]], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=900)
        finally:
            cleanup(env, proc.pid)
        assert proc.returncode == 0, (cmd, out[-3000:], err[-3000:])
    run = tmp_path / "tfkd_runs" / "own-model"
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 8 and set(trials["model.width"]) == {8, 16}
    fin = pd.read_parquet(run / "finalists.parquet")
    assert set(fin["status"]) == {"completed"} and len(fin) == 12
    rank1 = yaml.safe_load((run / "best" / "rank1.yaml").read_text())
    assert rank1["model"]["_target_"] == "my_net:small_cnn" and rank1["model"]["width"] in (8, 16)
    assert rank1["data"]["dataset"] == "imagefolder"
    assert any((tmp_path / "cache").rglob("*.npy")), "the decoded images were not cached"
    assert "finalists and baselines on fresh seeds [1, 2, 3]" in out
    assert os.path.isdir(tmp_path / "data" / "digits_images" / "train" / "0")
