localrules:
    create_output,
    finish_output,
    summary,
    verify,


# The model file is no input of any rule: its content is in the fingerprint (the markers' path),
# and Snakemake fails a job whose input is dated after its output (a model copied from a host
# whose clock runs ahead would fail every job). Its existence is checked when planning.
rule create_output:
    output:
        RUN.output_record,
    params:
        script=SCRIPTS / "create_output.py",
        config=RUN.config_path,
    log:
        RUN.log("create_output"),
    shell:
        "python {params.script:q} --config {params.config} --record {output} > {log} 2>&1"


# One rule for every block: its output is the block's done-marker, so each block is a target of
# its own, and SLURM job arrays (which batch by rule) take all of them. A block job streams its
# block through memory piece by piece: its memory follows from the piece size, its runtime from
# the block's voxels (see chunkflow/app/snakemake_adapter.py). Small blocks can share a SLURM job:
# --groups infer_block=blocks --group-components blocks=<n>.
rule infer_block:
    # Each job reads the model at model.path, which must exist where it runs.
    input:
        ancient(RUN.output_record),
    output:
        RUN.marker_pattern,
    params:
        script=SCRIPTS / "infer_block.py",
        config=RUN.config_path,
        fingerprint=RUN.fingerprint,
    threads: RUN.threads
    resources:
        mem_mb=RUN.job_mem_mb,
        runtime=lambda wildcards, attempt: RUN.job_runtime_min * attempt,
    log:
        RUN.log("infer_block", "{block}"),
    shell:
        "python {params.script:q} --config {params.config}"
        " --expect-fingerprint {params.fingerprint} {output} > {log} 2>&1"


# Only formats that assemble their blocks ask for it (rule all): HDF5 builds its virtual dataset.
rule finish_output:
    input:
        expand(RUN.marker_pattern, block=RUN.block_ids),
    output:
        RUN.finish_record,
    params:
        script=SCRIPTS / "finish_output.py",
        config=RUN.config_path,
    log:
        RUN.log("finish_output"),
    shell:
        "python {params.script:q} --config {params.config} --record {output} > {log} 2>&1"


# The summary and the HTML report (which reads a slice of the output: after finish_output).
rule summary:
    input:
        expand(RUN.marker_pattern, block=RUN.block_ids),
        RUN.finish_targets,
    output:
        json=RUN.summary_json,
        text=RUN.summary_text,
        report=RUN.report_html,
    params:
        script=SCRIPTS / "summary.py",
        config=RUN.config_path,
    log:
        RUN.log("summary"),
    shell:
        "python {params.script:q} --config {params.config} --json {output.json}"
        " --text {output.text} --report {output.report} > {log} 2>&1"


# Only with `verify: true` (rule all asks for its record): re-read every finished block once the
# output is whole and check it against its done-marker. A damaged block's marker is renamed
# *.invalid and the rule fails, so the next run recomputes exactly those blocks.
rule verify:
    input:
        RUN.finished_targets,
    output:
        RUN.verify_record,
    params:
        script=SCRIPTS / "verify.py",
        config=RUN.config_path,
    threads: 4
    log:
        RUN.log("verify"),
    shell:
        "python {params.script:q} --config {params.config} --jobs {threads}"
        " --record {output} > {log} 2>&1"


onsuccess:
    if Path(RUN.summary_text).exists():
        print(Path(RUN.summary_text).read_text())
