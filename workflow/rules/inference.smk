localrules:
    create_output,
    finish_output,
    summary,


rule create_output:
    input:
        model=ancient(config["model"]["path"]),
    output:
        RUN.output_record,
    params:
        config=RUN.config_path,
    log:
        RUN.log("create_output"),
    shell:
        "chunkflow create-output --config {params.config} --record {output} > {log} 2>&1"


# One rule per job: its outputs are the done-markers of its blocks (blocks_per_job of them), so
# each block stays a target of its own. The job's blocks are named by its outputs, and the shell
# command is the same for every job: regrouping blocks reruns nothing.
JOB_MEM_MB = RUN.job_mem_mb()  # once, not once per rule


for job_blocks in RUN.job_groups:

    rule:
        name:
            f"infer_{job_blocks[0]}"
        input:
            ancient(RUN.output_record),
            model=ancient(config["model"]["path"]),
        output:
            [RUN.marker(block) for block in job_blocks],
        params:
            config=RUN.config_path,
            fingerprint=RUN.fingerprint,
        threads: RUN.plan.settings.inference.threads
        resources:
            mem_mb=JOB_MEM_MB,
        log:
            RUN.log("infer_block", job_blocks[0]),
        shell:
            "chunkflow run-block --config {params.config} --expect-fingerprint {params.fingerprint}"
            " {output} > {log} 2>&1"


# Only formats that assemble their blocks ask for it (rule all): HDF5 builds its virtual dataset.
rule finish_output:
    input:
        expand(RUN.marker_pattern, block=RUN.block_ids),
    output:
        RUN.finish_record,
    params:
        config=RUN.config_path,
    log:
        RUN.log("finish_output"),
    shell:
        "chunkflow finish-output --config {params.config} --record {output} > {log} 2>&1"


rule summary:
    input:
        expand(RUN.marker_pattern, block=RUN.block_ids),
    output:
        json=RUN.summary_json,
        text=RUN.summary_text,
    params:
        config=RUN.config_path,
    log:
        RUN.log("summary"),
    shell:
        "chunkflow summary --config {params.config} --json {output.json} --text {output.text}"
        " > {log} 2>&1"


onsuccess:
    if Path(RUN.summary_text).exists():
        print(Path(RUN.summary_text).read_text())
