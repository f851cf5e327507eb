"""`snakemake --lint` on the workflow finds nothing but the one lint we decline, on purpose.

The declined lint asks for a conda environment or container per rule. Every rule runs the
`chunkflow` command of the environment Snakemake itself runs in (the package is the logic), so a
per-rule environment would have to install chunkflow again and would rerun every finished block
whenever its file changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DECLINED = "Specify a conda environment or container for each rule."


def test_snakemake_lint_reports_only_the_declined_lint(tmp_path: Path) -> None:
    from chunkflow.app.demo import write_demo

    write_demo(tmp_path / "resources/demo")
    (tmp_path / "config.yaml").write_text((REPO / "config/config.yaml").read_text())
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    result = subprocess.run(
        [
            snakemake,
            "-s",
            str(REPO / "workflow/Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--lint",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    report = result.stdout + result.stderr
    assert "Traceback" not in report, report
    lints = re.findall(r"^    \* (.+?):?$", report, flags=re.MULTILINE)
    assert lints, report  # the lint ran on the rules
    assert set(lints) == {DECLINED}, report
    assert not list(tmp_path.glob("results/*")), "linting wrote an output"
