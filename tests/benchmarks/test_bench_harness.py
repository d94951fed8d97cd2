"""The benchmark harness on fake timings: interleaving, statistics, the table run_all builds, README regeneration.

Timings go in benchmarks, never in tests: here a fake clock makes every duration known, so the statistics and
the order of calls have exact answers.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _timing  # noqa: E402
import run_all  # noqa: E402


class FakeClock:
    """A clock that only moves when a variant says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_interleaved_rotates_order_excludes_warmup_and_setup() -> None:
    clock, calls = FakeClock(), []
    durations = {"a": iter([50.0, 1, 2, 3, 4, 10]), "b": iter([70.0, 3, 6, 9, 12, 30])}  # first: the warm-up

    def variant(name: str):
        def run() -> None:
            calls.append(name)
            clock.now += next(durations[name])
        return run

    def setup() -> None:
        calls.append("setup")
        clock.now += 1000.0  # untimed work (removing outputs, clearing caches)

    t = _timing.interleaved({"a": variant("a"), "b": variant("b")}, 5, setup={"b": setup}, clock=clock)
    assert t.seconds == {"a": [1, 2, 3, 4, 10], "b": [3, 6, 9, 12, 30]}
    runs = [c for c in calls if c != "setup"]
    assert runs == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotated rounds
    assert calls.count("setup") == 6  # before every call of b, warm-up included
    assert t.stats("a") == {"min": 1, "median": 3, "max": 10, "rounds": 5}
    assert t.ratio("b", "a") == 3.0  # median 9 / median 3: a is 3x faster
    assert t.round_ratios("b", "a") == [3.0] * 5


def test_interleaved_reps_take_the_median_of_each_round() -> None:
    clock = FakeClock()
    took = iter([0.0, 5, 1, 3, 2, 9, 4])  # warm-up 0, round 1: 5, 1, 3 -> 3; round 2: 2, 9, 4 -> 4

    def run() -> None:
        clock.now += next(took)

    t = _timing.interleaved({"x": run}, 2, reps=3, clock=clock)
    assert t.seconds == {"x": [3, 4]}
    with pytest.raises(ValueError, match="rounds and reps must be >= 1"):
        _timing.interleaved({"x": run}, 0)


def test_timing_row_and_markdown_table() -> None:
    rec = _timing.Recorder("capture")
    t = _timing.Timing({"anchor": [2.0, 4.0, 3.0, 2.5, 3.5], "lmscope": [1.0, 2.0, 1.0, 1.0, 2.0]})
    row = rec.timing_row("capture all MLPs", t, "anchor", "lmscope", model="m", unit="tok/s", work=1000,
                         quality="equal")
    assert row["ratio"] == 3.0  # median 3.0 / median 1.0
    assert (row["ratio_min"], row["ratio_max"]) == (1.75, 3.0)  # per round: 2, 2, 3, 2.5, 1.75
    assert row["lmscope"] == "1,000 tok/s (500–1,000)"  # median, then slowest–fastest round
    assert row["anchor"] == "333 tok/s (250–500)"
    md = _timing.render_rows(rec.rows)
    assert "| capture | capture all MLPs | m | 1,000 tok/s (500–1,000) | 333 tok/s (250–500) | 3.00x (1.75–3.00) |" \
        in md
    none = _timing.render_rows([{**row, "ratio": None, "quality": "a|b"}])
    assert "| — | a\\|b |" in none  # no ratio: a dash; a '|' in a cell is escaped, so it cannot break the table


def test_check_args_refuses_fewer_than_five_rounds() -> None:
    parser = argparse.ArgumentParser()
    _timing.common_args(parser)
    with pytest.raises(SystemExit, match="--rounds: expected at least 5"):
        _timing.check_args(parser.parse_args(["--rounds", "3"]))
    assert _timing.check_args(parser.parse_args(["--rounds", "3", "--quick"])) == 1
    assert _timing.check_args(parser.parse_args([])) == 5


def fake_results() -> dict:
    ok = {"name": "heads", "status": "ok", "result": {
        "meta": {"versions": {"transformer-lens": "4.3.0", "lmscope": "0.1.0"}, "load_average_start": [1.5],
                 "load_average_end": [2.5]},
        "rows": [{"benchmark": "heads", "comparison": "succession", "model": "zoo", "lmscope": "1 s",
                  "anchor": "4 s", "ratio": 4.0, "ratio_min": 3.5, "ratio_max": 4.5, "quality": "equal"}]}}
    skipped = {"name": "neurox-zoo", "status": "skipped: no venv /x/neurox"}
    return {"meta": {"started": "2026-12-06 03:00 UTC", "commit": "a" * 40, "quick": False, "cpus": 2,
                     "torch": "2.13.0", "threads": 2}, "benchmarks": [ok, skipped]}


def test_run_all_table_names_versions_load_and_what_did_not_run() -> None:
    md = run_all.markdown(fake_results())
    assert "lmscope at aaaaaaaaaaaa;" in md
    assert "anchors: transformer-lens 4.3.0)" in md
    assert "load average 1.5–2.5" in md
    assert "| heads | succession | zoo | 1 s | 4 s | 4.00x (3.50–4.50) | equal |" in md
    assert "| neurox-zoo | not run |  |  |  | — | skipped: no venv /x/neurox |" in md
    assert "| atp-zoo | not run |  |  |  | — | not in this results file |" in md  # in the plan, never run
    assert md.count("| heads |") == 1
    twice = fake_results()
    twice["benchmarks"].append({**twice["benchmarks"][0], "name": "heads-again"})
    assert run_all.markdown(twice).count("| heads | succession |") == 1  # one comparison listed once


def test_update_readme_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{run_all.START}\nold table\n{run_all.END}\nafter\n")
    run_all.update_readme(readme, "new table\n")
    assert readme.read_text() == f"# title\n\nbefore\n{run_all.START}\nnew table\n{run_all.END}\nafter\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    with pytest.raises(SystemExit, match="^" + re.escape(f"{plain}: no '{run_all.START}' ... '{run_all.END}' markers "
                                                         "around the benchmark table") + "$"):
        run_all.update_readme(plain, "t")
    assert plain.read_text() == "no markers\n"


def test_merge_keeps_plan_order_and_newest_run() -> None:
    old = [{"name": "heads", "v": 1}, {"name": "capture-zoo-tl", "v": 1}]
    new = [{"name": "heads", "v": 2}, {"name": "atp-zoo", "v": 2}]
    merged = run_all.merge(old, new)
    assert [(b["name"], b["v"]) for b in merged] == [("capture-zoo-tl", 1), ("heads", 2), ("atp-zoo", 2)]


def test_run_all_refuses_to_overwrite_and_unknown_names(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("{}")
    with pytest.raises(SystemExit, match="^" + re.escape(f"{out}: exists; pass --overwrite to replace it (or --update)")
                                         + "$"):
        run_all.main(["--only", "heads", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"^--only: unknown \['nope'\]; expected some of \['capture-zoo-tl', "):
        run_all.main(["--only", "nope", "--out", str(tmp_path / "n.json")])
    assert out.read_text() == "{}"


def test_log_interp_reads_the_curve_at_a_matched_l0() -> None:
    import bench_dictionary

    pts = [(10.0, 0.5, 100.0), (40.0, 0.1, 50.0), (80.0, 0.05, 40.0)]
    fvu, tps = bench_dictionary.log_interp(pts, 20.0)  # halfway between 10 and 40 in log L0
    assert math.isclose(fvu, 0.3) and math.isclose(tps, 75.0)
    assert bench_dictionary.log_interp(pts, 5.0) is None  # below the curve: not bracketed, no figure
