"""mkdocs hooks: pages made from the project itself at build time, so they cannot go stale.

- `cli.md`: the CLI reference, generated from the Typer app;
- `reports/*.md`: the measured reports, as the benchmarks wrote them;
- `changelog.md`: CHANGELOG.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


def cli_reference() -> str:
    """Markdown for every command of `duration`, from the app itself."""
    import typer
    from typer.cli import get_docs_for_click

    from duration.cli import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command)
    ctx.obj = {}
    return get_docs_for_click(obj=command, ctx=ctx, name="duration", title="CLI reference")


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    for report in sorted((ROOT / "reports").glob("*.md")):
        files.append(File.generated(config, f"reports/{report.name}", abs_src_path=str(report)))
    files.append(File.generated(config, "changelog.md", abs_src_path=str(ROOT / "CHANGELOG.md")))
    return files
