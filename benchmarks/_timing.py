"""The one timing and reporting helper every benchmark in `benchmarks/` uses, so that every figure is taken the
same way and a skeptic can check one function instead of six.

- `interleaved(variants, rounds)`: after `warmup` untimed calls of every variant, `rounds` rounds in which each
  variant runs once (or the median of `reps` runs), the order rotated each round (A,B then B,A...) so drift and
  other jobs hit all sides alike. `setup[name]()` runs untimed before every call of `name`: that is where a
  benchmark puts state back to equal (outputs removed, caches cleared on both sides).
- `Timing`: seconds per round of each variant; `stats(name)` is min / median / max; `ratio(slow, fast)` is the
  ratio of the medians (how many times faster `fast` is), `round_ratios` the per-round ratios (their spread).
- `Recorder`: the environment of a run (torch, transformers, anchor versions, threads, OMP_WAIT_POLICY, device,
  load average at start and end) and the headline rows that `run_all` turns into the README's table.
- `common_args` / `load_model`: `--device cpu|cuda`, `--model zoo|smollm2`, `--rounds` (>= 5 unless `--quick`),
  `--json`, `--out`; real mode loads /work/real/smollm2-135m if present, else `real:smollm2-135m`, else refuses.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_ROUNDS = 5
SMOLLM2_DIR = Path(os.environ.get("LMSCOPE_SMOLLM2_DIR", "/work/real/smollm2-135m"))
SMOLLM2_REAL = "real:smollm2-135m"


@dataclass
class Timing:
    """Seconds per round of each variant (rounds interleaved), and the statistics a table reports."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def stats(self, name: str) -> dict[str, float]:
        """min / median / max seconds of `name` over its rounds, and how many rounds."""
        s = self.seconds[name]
        return {"min": min(s), "median": statistics.median(s), "max": max(s), "rounds": len(s)}

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, slow: str, fast: str) -> float:
        """median(slow) / median(fast): how many times faster `fast` is than `slow` (> 1: faster)."""
        return self.median(slow) / self.median(fast)

    def round_ratios(self, slow: str, fast: str) -> list[float]:
        """The same ratio in each round (the two ran back to back in it), to show its spread."""
        return [b / a for a, b in zip(self.seconds[fast], self.seconds[slow], strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "stats": {n: self.stats(n) for n in self.seconds}}


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, *, reps: int = 1, warmup: int = 1,
                setup: dict[str, Callable[[], Any]] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time every variant for `rounds` interleaved rounds (module docstring); warm-up calls are not timed.

    Within a round a variant's figure is the median of its `reps` calls (calls of all variants interleaved too).
    `setup[name]()` runs before every call of `name`, warm-up included, and is not timed.
    """
    if rounds < 1 or reps < 1:
        raise ValueError(f"rounds and reps must be >= 1, got {rounds}, {reps}")
    setup = setup or {}
    names = list(variants)
    noop: Callable[[], Any] = lambda: None  # noqa: E731

    def call(name: str) -> float:
        setup.get(name, noop)()
        start = clock()
        variants[name]()
        return clock() - start

    for _ in range(warmup):
        for name in names:
            call(name)
    out: dict[str, list[float]] = {n: [] for n in names}
    turn = 0
    for _ in range(rounds):
        samples: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(reps):
            k = turn % len(names)
            for name in names[k:] + names[:k]:
                samples[name].append(call(name))
            turn += 1
        for name in names:
            out[name].append(statistics.median(samples[name]))
    return Timing(out)


def versions(dists: Iterable[str]) -> dict[str, str]:
    """Installed versions of `dists` ("not installed" where absent)."""
    out = {}
    for d in dists:
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = "not installed"
    return out


def installed(dist: str, module: str | None = None) -> bool:
    """Whether the anchor `dist` is installed and its module imports."""
    try:
        md.version(dist)
        __import__(module or dist.replace("-", "_"))
        return True
    except Exception:  # an anchor that does not import is absent
        return False


class Recorder:
    """A benchmark run's environment, headline rows and details; `write` puts them in one JSON file."""

    def __init__(self, benchmark: str, args: argparse.Namespace | None = None, anchors: Iterable[str] = ()) -> None:
        import torch

        self.benchmark = benchmark
        self.meta: dict[str, Any] = {
            "benchmark": benchmark, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average_start": list(os.getloadavg()), "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "versions": versions(["transformers", "lmscope", *anchors]),
        }
        if args is not None:
            self.meta["args"] = {k: v for k, v in vars(args).items() if k not in ("json", "out")}
            device = getattr(args, "device", "cpu")
            if device == "cuda" and torch.cuda.is_available():
                self.meta["gpu"] = torch.cuda.get_device_name(0)
        self.rows: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}

    def row(self, comparison: str, *, model: str, lmscope: str, anchor: str, ratio: float | None,
            spread: list[float] | None = None, quality: str = "", note: str = "") -> dict[str, Any]:
        """A headline row: what is compared, each side's figure as text, lmscope's speed-up (> 1: faster) with
        its per-round spread, and the quality beside it (a speed figure means little without it)."""
        r = {"benchmark": self.benchmark, "comparison": comparison, "model": model, "lmscope": lmscope,
             "anchor": anchor, "ratio": ratio, "ratio_min": min(spread) if spread else None,
             "ratio_max": max(spread) if spread else None, "quality": quality, "note": note}
        self.rows.append(r)
        return r

    def timing_row(self, comparison: str, t: Timing, slow: str, fast: str, *, model: str, unit: str = "s",
                   work: float | None = None, quality: str = "", note: str = "") -> dict[str, Any]:
        """A row from a Timing: `fast` is lmscope's variant, `slow` the anchor's; figures as median seconds, or as
        `work / median seconds` (e.g. tokens/s) when `work` is given."""
        def fig(name: str) -> str:
            s = t.stats(name)
            if work is None:
                return f"{s['median']:.3g} s ({s['min']:.3g}–{s['max']:.3g})"
            return f"{work / s['median']:,.0f} {unit} ({work / s['max']:,.0f}–{work / s['min']:,.0f})"

        return self.row(comparison, model=model, lmscope=fig(fast), anchor=fig(slow), ratio=t.ratio(slow, fast),
                        spread=t.round_ratios(slow, fast), quality=quality, note=note)

    def to_dict(self) -> dict[str, Any]:
        self.meta["load_average_end"] = list(os.getloadavg())
        self.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"meta": self.meta, "rows": self.rows, "details": self.details}

    def finish(self, args: argparse.Namespace, text: Callable[[], None] | None = None) -> dict[str, Any]:
        """Print (JSON with --json, else `text()` and the headline rows), and write --out atomically."""
        out = self.to_dict()
        if args.out:
            write_json(Path(args.out), out)
        if args.json:
            print(json.dumps(out, indent=2, default=str))
        else:
            if text is not None:
                text()
            print(render_rows(self.rows, self.meta))
        return out


def write_json(path: Path, obj: Any) -> None:
    """Write JSON to `path` atomically (a temporary file in the same directory, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fmt_ratio(r: dict[str, Any]) -> str:
    if r.get("ratio") is None:
        return "—"
    text = f"{r['ratio']:.2f}x"
    if r.get("ratio_min") is not None and r.get("ratio_max") is not None:
        text += f" ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})"
    return text


def render_rows(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """The headline rows as a markdown table (lmscope's speed-up: median ratio, per-round min–max)."""
    lines = ["| benchmark | comparison | model | lmscope | anchor | lmscope speed-up | quality |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["benchmark"], r["comparison"], r["model"], r["lmscope"], r["anchor"], fmt_ratio(r),
                 (r.get("quality") or "") + (f"; {r['note']}" if r.get("note") else "")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if meta:
        la, lb = meta.get("load_average_start"), meta.get("load_average_end")
        load = f"load {la[0]:.2f} -> {lb[0]:.2f}" if la and lb else ""
        lines.append(f"\n(torch {meta.get('torch')}, {meta.get('threads')} threads, {load})")
    return "\n".join(lines)


# --- command-line pieces shared by the benchmarks ---------------------------------------------------------
def common_args(parser: argparse.ArgumentParser, *, models: tuple[str, ...] | None = ("zoo", "smollm2")) -> None:
    """--device, --model, --rounds, --quick, --json, --out. `models=None`: --model also takes any lmscope MODEL."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", choices=models, default=models[0] if models else "zoo",
                        help="zoo: lmscope's tiny models (and random-init sizes); smollm2: SmolLM2-135M-Instruct"
                        + ("" if models else "; or any lmscope MODEL (zoo:NAME, real:NAME, a directory)"))
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"interleaved rounds (>= {MIN_ROUNDS})")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, small sizes (figures not kept)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", help="also write the result JSON here (atomically)")


def check_args(args: argparse.Namespace) -> int:
    """The number of rounds to run: 1 with --quick; otherwise --rounds, refused below MIN_ROUNDS. Also checks
    --device cuda has a GPU and sets 2 CPU threads (the machine these figures are for)."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    if not args.quick and args.rounds < MIN_ROUNDS:
        raise SystemExit(f"--rounds: expected at least {MIN_ROUNDS} (got {args.rounds}); use --quick for a smoke run")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    return 1 if args.quick else args.rounds


def load_model(which: str, device: str = "cpu") -> Any:
    """lmscope's HookedModel for `zoo:gpt2-tiny`, a zoo name, or `smollm2` (module docstring); exits 2 cleanly
    when SmolLM2 is in neither place."""
    from lmscope import HookedModel
    from lmscope.errors import InputError

    if which == "zoo":
        which = "zoo:gpt2-tiny"
    if which != "smollm2":
        return HookedModel.from_pretrained(which, device=device)
    if (SMOLLM2_DIR / "config.json").exists():
        return HookedModel.from_pretrained(str(SMOLLM2_DIR), device=device)
    try:
        return HookedModel.from_pretrained(SMOLLM2_REAL, device=device)
    except InputError as err:
        print(f"--model smollm2: neither {SMOLLM2_DIR} nor {SMOLLM2_REAL} is available ({err})", file=sys.stderr)
        raise SystemExit(2) from None


def prose(n: int, *, min_words: int = 8, path: str = "/work/real/prose.txt") -> list[str]:
    """The first `n` lines of real English prose of at least `min_words` words (real-model benchmarks)."""
    p = Path(os.environ.get("LMSCOPE_PROSE", path))
    if not p.exists():
        raise SystemExit(f"{p}: no prose file for real-model benchmarks (set LMSCOPE_PROSE)")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if len(ln.split()) >= min_words]
    if len(lines) < n:
        raise SystemExit(f"{p}: {len(lines)} lines of >= {min_words} words, {n} needed")
    return lines[:n]
