"""The CLI: every command's --json output, the demo end to end, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "zoo:gpt2-tiny", "--json")
    info = json.loads(out)
    assert code == 0 and info["family"] == "gpt2" and info["n_layers"] == 4
    assert "blocks.3.mlp.hook_post" in info["hook_names"]


def test_info_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "zoo:llama-tiny")
    assert code == 0 and "llama" in out and "mlp.hook_post" in out


def test_zoo_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "zoo", "list", "--json")
    rows = json.loads(out)
    zoo = [r for r in rows if r["kind"] == "zoo"]
    assert code == 0 and [r["name"] for r in zoo] == ["gpt2-tiny", "neox-tiny", "llama-tiny", "crate-tiny",
                                                       "gpt2-tiny-relu"]
    assert all(r["location"] != "not trained" for r in zoo)
    assert [r["name"] for r in rows if r["kind"] == "real"] == ["real:smollm2-135m", "real:gemma3-270m"]
    code, out, _ = run(capsys, "zoo", "path", "gpt2-tiny", "--json")
    assert code == 0 and (Path(json.loads(out)["path"]) / "config.json").exists()
    code, out, _ = run(capsys, "zoo", "list")
    assert code == 0 and "neox-tiny" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "./no/such/model"], "no such directory"),
        (["info", "zoo:nope"], "unknown; the zoo has"),
        (["zoo", "path", "nope"], "unknown"),
        (["zoo", "train", "nope"], "unknown"),
    ],
)
def test_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _out, err = run(capsys, *argv)
    assert code == 2 and message in err
    assert err.startswith("lmscope: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_option_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "info", "--bogus")
    assert code == 2 and "No such option" in err


def test_ctrl_c_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lmscope import HookedModel

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(HookedModel, "from_pretrained", stop)
    code, _, err = run(capsys, "info", "zoo:gpt2-tiny")
    assert code == 130 and err.strip().splitlines()[-1].startswith("lmscope: interrupted (files are written")


def test_cli_sets_a_passive_openmp_wait_policy_before_torch_loads() -> None:
    import os
    import subprocess
    import sys

    code = "import lmscope.cli, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "PASSIVE"
    kept = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, check=True).stdout
    assert kept.split()[0] == "ACTIVE"  # a user's own choice wins


@pytest.mark.parametrize("argv", [
    ["demo"], ["data", "synthetic"], ["zoo", "train", "gpt2-tiny"], ["whitebox", "compare"], ["whitebox", "train"],
    ["extract", "zoo:gpt2-tiny", "--corpus", "synthetic", "--points", "mlp"],
    ["autointerp", "score", "--model", "zoo:gpt2-tiny"], ["dict", "eval", "some-dir"],
    ["dict", "train", "zoo:gpt2-tiny"], ["circuit", "zoo:gpt2-tiny", "--transcoders", "t", "--prompt", "p",
                                         "--target", "logit:1"],
    ["heads", "detect", "zoo:gpt2-tiny"], ["heads", "wild", "zoo:gpt2-tiny"],
    ["neurons", "rank", "store", "--labels", "l.txt"], ["mediate", "zoo:gpt2-tiny"],
    ["patch", "zoo:gpt2-tiny", "--base", "a", "--source", "b"],
])
def test_an_output_directory_that_is_a_file_is_refused_first(argv: list[str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "mine.txt"
    a_file.write_text("keep")
    code, _, err = run(capsys, *argv, "--out", str(a_file))
    assert code == 2 and "is a file, expected a directory" in err and "Traceback" not in err, err
    assert a_file.read_text() == "keep"


def test_usage_errors_are_one_line_and_a_bare_group_shows_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "heads", "wild", "zoo:gpt2-tiny", "--batch-size", "ten")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("lmscope: error: Invalid value for '--batch-size'") and "`lmscope heads wild --help`" in err
    code, out, err = run(capsys, "neurons")
    assert code == 2 and err == "" and all(c in out for c in ("rank", "evaluate", "top-examples", "ablate"))
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(c in out for c in ("extract", "patch", "report", "autointerp"))


def test_summaries_and_errors_are_never_wrapped_at_the_terminal_width(capsys: pytest.CaptureFixture[str]) -> None:
    """A long summary or error stays one line (rich would hard-wrap it at the terminal width: a path in the line
    then split 'top-20 ablated' across two lines and broke greps)."""
    from lmscope.cli.common import err, out

    line = "x" * 300 + " top-20 ablated " + "y" * 300
    out.print(line, markup=False)
    err.print(line, markup=False)
    captured = capsys.readouterr()
    assert captured.out == line + "\n" and captured.err == line + "\n"
