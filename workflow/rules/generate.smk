# Text-to-image generation: one job per fixed-size shard of a prompt table (a SLURM array on
# a cluster) with the dataset's generator (generation/generators.py), then one merged index and
# one card per generated dataset (format-matched copies too: format_control.smk makes their shards).


rule generate_shard:
    wildcard_constraints:
        name=any_of(GENERATED),
    input:
        prompts=prompts_path("{name}"),
        pipeline=get_generator_pipeline,
    output:
        shard_path("{name}", "{shard}"),
    log:
        LOGS / "generate" / "{name}" / "shard-{shard}.log",
    benchmark:
        BENCHMARKS / "generate" / "{name}" / "shard-{shard}.tsv"
    params:
        settings=get_generation_settings,
        runtime=get_generation_runtime,
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
    benchmark:
        BENCHMARKS / "generate" / "{name}" / "merge.tsv"
    conda:
        ENV
    shell:
        "python -m contamination merge-shards {input:q} --out {output:q} > {log:q} 2>&1"


rule generated_card:
    input:
        index=generated_index_path("{name}"),
        shards=get_generated_shards,
    output:
        json=card_json_path("{name}"),
        readme=card_readme_path("{name}"),
    log:
        LOGS / "generate" / "{name}" / "card.log",
    benchmark:
        BENCHMARKS / "generate" / "{name}" / "card.tsv"
    params:
        settings=get_card_settings,
    conda:
        ENV
    shell:
        "python -m contamination generated-card --settings {params.settings:q} --index {input.index:q}"
        " --shards {input.shards:q} --out-json {output.json:q} --out-readme {output.readme:q} > {log:q} 2>&1"
