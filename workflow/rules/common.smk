import sys
from pathlib import Path

from chunkflow.errors import ChunkflowError
from chunkflow.app.snakemake_adapter import prepare

# In the main snakemake process only (not in a job's re-parse, e.g. on a SLURM node), before the
# DAG is built: check the model on zero patches, cached by its digest (WorkflowRun.check_model),
# and an existing output against it; refuse an output holding another run's results, and set
# aside the done-markers that do not count, so that Snakemake computes those blocks
# (WorkflowRun.reconcile); name the settings that changed since the output was made
# (WorkflowRun.settings_note). With the run's state in a bucket (--default-storage-prefix
# s3://…), refuse an output that is gone while the bucket's state records it
# (WorkflowRun.check_state_in_bucket; reconcile sees the local state dir only).
try:
    # A job's re-parse (e.g. a SLURM job) reads the plan's facts that the main process
    # recorded, and plans nothing: the job's own command parses the config and plans once.
    RUN = prepare(config, main=workflow.is_main_process)
    if workflow.is_main_process:
        RUN.check_model()
        if (prefix := workflow.storage_settings.default_storage_prefix or "").startswith("s3://"):
            s3 = workflow.storage_provider_settings.get("s3")
            endpoint = getattr(s3 and s3.get_settings(), "endpoint_url", None)
            if warning := RUN.check_state_in_bucket(prefix, endpoint):
                sys.stderr.write(f"chunkflow: warning: {warning}\n")
        for warning in RUN.reconcile():
            sys.stderr.write(f"chunkflow: warning: {warning}\n")
        if note := RUN.settings_note():
            sys.stderr.write(f"chunkflow: {note}\n")
except ChunkflowError as err:
    sys.stderr.write(f"chunkflow: error: {err}\n")
    sys.exit(1)

# Each rule's code is a script in scripts/, given as params.script and run through `shell:` by
# `python` (prepare() put the bin folder of the Python that runs Snakemake first on PATH). Editing
# a script reruns no finished job: its content is no input, and the shell command's text
# (Snakemake's "code" rerun trigger) names it only as {params.script}. The path is a Path, not a
# str: Snakemake's params trigger records plain values only (str, int, list, ...), so moving or
# deploying the workflow elsewhere reruns nothing either. tests/test_workflow.py checks both.
SCRIPTS = Path(workflow.current_basedir).parent / "scripts"


wildcard_constraints:
    block=r"z\d+_y\d+_x\d+",
