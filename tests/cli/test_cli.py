"""The command line: instant help, one-line errors with exit 2, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def fusekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from fusekit.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_help_and_strategies_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from fusekit.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['strategies'])\n"
        "assert r.exit_code == 0, r.output\n"
        "h = CliRunner().invoke(app, ['--help'])\n"
        "assert h.exit_code == 0\n"
        "print(r.output)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("NO-TORCH")
    for tag in ("calm", "fusellm", "block_expansion", "depth_upscaling"):
        assert tag in out.stdout


def test_validate_reports_each_problem_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"strategy: block_expansion\nmodel: {tmp_path / 'missing'}\ngroupz: 2\n")
    res = fusekit("validate", str(bad))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert all(line.startswith(f"fusekit: error: {bad}: ") for line in lines), res.stderr
    assert any("groupz" in line for line in lines) and any("model" in line for line in lines)
    assert "Traceback" not in res.stderr


def test_validate_unknown_strategy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: soup\n")
    res = fusekit("validate", str(bad))
    assert res.returncode == 2 and "unknown strategy 'soup'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_run_without_output_is_a_user_error(tmp_path: Path) -> None:
    cfg = tmp_path / "m"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (cfg / "model.safetensors").write_bytes(b"")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"strategy: block_expansion\nmodel: {cfg}\ngroups: 2\n")
    res = fusekit("run", str(recipe))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("fusekit: error: ")
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["fuse", "--strategy", "calm", "--remove", "2", "-o", "x"], "--remove"),
        (["fuse", "--strategy", "nonsense", "-o", "x"], "unknown strategy"),
        (
            ["fuse", "--strategy", "block-expansion", "--model", "nowhere", "--groups", "2"],
            "nowhere",
        ),
    ],
)
def test_fuse_option_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    res = fusekit(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_run_summary_prints_a_strategy_table_once(capsys) -> None:
    from fusekit.cli.recipes import print_summary
    from fusekit.result import RunResult

    table = "| data | anchor | calm |\n|---|---:|---:|\n| kv | 1.0 | 90.0 |"
    evaluation = [{"model": "m", "data": "kv", "metric": "exact_match", "value": 0.9}]

    def result(strategy: str, **fields):
        return RunResult(output="out", strategy=strategy, recipe={}, plan={}, inputs={},
                         versions={}, **fields)  # fmt: skip

    print_summary(result("calm", tables=table, evaluation=evaluation))
    out = capsys.readouterr().out
    assert out.count("| kv | 1.0 | 90.0 |") == 1 and "exact_match" not in out
    print_summary(result("finetune", evaluation=evaluation))
    assert "exact_match" in capsys.readouterr().out
