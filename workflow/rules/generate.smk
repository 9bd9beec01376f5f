# Stable Diffusion generation: one job per fixed-size shard of a prompt table (a SLURM array on
# a cluster), then one merged index per generated dataset.


rule generate_shard:
    input:
        prompts=prompts_path("{name}"),
        pipeline=get_model("stable_diffusion"),
    output:
        shard_path("{name}", "{shard}"),
    log:
        LOGS / "generate" / "{name}" / "shard-{shard}.log",
    params:
        settings=get_settings("generation"),
        runtime=get_runtime("generation"),
    conda:
        ENV
    shell:
        "python -m contamination generate --prompts {input.prompts:q} --pipeline {input.pipeline:q}"
        " --shard {wildcards.shard:q} --settings {params.settings:q} --runtime {params.runtime:q} --out {output:q} > {log:q} 2>&1"


rule merge_generated:
    input:
        get_generated_shards,
    output:
        generated_index_path("{name}"),
    log:
        LOGS / "generate" / "{name}" / "merge.log",
    conda:
        ENV
    shell:
        "python -m contamination merge-shards {input:q} --out {output:q} > {log:q} 2>&1"
