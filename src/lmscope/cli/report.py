"""`lmscope report DIR... --out OUT`: one HTML report rebuilt from saved result directories."""

from __future__ import annotations

from typing import Annotated

import typer

from lmscope.cli.common import JsonFlag, checked_out_dir, out, print_json


def report(dirs: Annotated[list[str], typer.Argument(help="Result directories (each holding a result.json written "
                                                          "by an lmscope command), drawn in this order.")],
           out_dir: Annotated[str, typer.Option("--out", callback=checked_out_dir,
                                                help="Directory for report.html and result.json.")],
           title: Annotated[str, typer.Option(help="The page's title.")] = "lmscope report",
           overwrite: Annotated[bool, typer.Option(help="Replace report.html/result.json if they exist.")] = False,
           as_json: JsonFlag = False) -> None:
    """Rebuild one HTML report from saved results: one section per directory, drawn from its result.json.

    Example: lmscope report runs/ranking runs/mediation --out runs/report && open runs/report/report.html
    """
    from pathlib import Path

    from lmscope.fileio import check_writable
    from lmscope.report.rebuild import rebuild_report
    from lmscope.results import HTML_NAME, RESULT_NAME

    for name in (HTML_NAME, RESULT_NAME):  # refused before any result is read
        check_writable(Path(out_dir) / name, overwrite=overwrite)
    built = rebuild_report(dirs, title=title)
    paths = built.write(out_dir, overwrite=overwrite)
    summary = {"report": str(paths["html"]), "result": str(paths["json"]),
               "sections": [{"key": s.key, "title": s.title} for s in built.sections]}
    if as_json:
        print_json(summary)
        return
    out.print(f"report  {summary['report']}", markup=False, highlight=False)
    for s in built.sections:
        out.print(f"  {s.key}: {s.title}", markup=False, highlight=False)
