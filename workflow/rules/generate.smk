# Stable Diffusion generation: one job per fixed-size shard of a prompt table (a SLURM array on
# a cluster), then one merged index per generated dataset.


rule generate_shard:
    input:
        prompts=RESULTS / "prompts" / "{name}.parquet",
        pipeline=stable_diffusion_dir(),
    output:
        RESULTS / "generated" / "{name}" / "shard-{shard}.zip",
    log:
        LOGS / "generate" / "{name}" / "shard-{shard}.log",
    params:
        settings=generation_settings(),
        runtime=runtime_json("generation"),
    conda:
        ENV
    shell:
        "python -m contamination generate --prompts {input.prompts:q} --pipeline {input.pipeline:q}"
        " --shard {wildcards.shard:q} --settings {params.settings:q} --runtime {params.runtime:q} --out {output:q} > {log:q} 2>&1"


rule merge_generated:
    input:
        generated_shards,
    output:
        RESULTS / "generated" / "{name}" / "index.parquet",
    log:
        LOGS / "generate" / "{name}" / "merge.log",
    conda:
        ENV
    shell:
        "python -m contamination merge-shards {input:q} --out {output:q} > {log:q} 2>&1"
