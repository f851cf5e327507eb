"""Rule summary: aggregate the blocks' done-markers into summary.json, summary.txt and the
HTML report."""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from chunkflow.config import load
from chunkflow.entry import run_main
from chunkflow.markers import read_markers
from chunkflow.plan import make_plan
from chunkflow.report import write_report
from chunkflow.summary import format_summary, summarize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the run's config YAML (params.config)")
    p.add_argument("--json", required=True, help="the summary as JSON (output.json)")
    p.add_argument("--text", required=True, help="the summary as text (output.text)")
    p.add_argument("--report", required=True, help="the HTML report (output.report)")
    args = p.parse_args()

    # the markers are read beside the summary: the state dir, or its local storage copy
    plan = make_plan(replace(load(args.config), state_dir=str(Path(args.json).parent)))
    done = read_markers(plan.settings.state_dir, plan.block_ids, plan.fingerprint)[0]
    summary = summarize(plan, done)
    text = format_summary(summary)
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    Path(args.text).write_text(text + "\n")
    write_report(plan, done, args.report)
    print(text)


if __name__ == "__main__":
    sys.exit(run_main(main))
