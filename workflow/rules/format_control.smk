# Format-matched controls (beyond the paper, config format_control): a generated dataset re-stored
# as JPEG at the qualities, subsamplings and sizes of a real source's training images, shard by
# shard, so that mixtures and detectors compare with and without the PNG/JPEG difference (the
# tables of group format_control: `snakemake format_control`). Its own stage: it reads generated
# shards and a real index, and writes a new generated dataset that merge_generated indexes and
# generated_card describes like any other (generation/format_match.py).


rule format_profile:
    input:
        index_path("{source}"),
    output:
        format_profile_path("{source}"),
    log:
        LOGS / "format_control" / "{source}-profile.log",
    benchmark:
        BENCHMARKS / "format_control" / "{source}-profile.tsv"
    params:
        images=config["format_control"]["profile_images"],
        seed=config["seed"],
    conda:
        ENV
    shell:
        "python -m contamination format-profile --index {input:q} --source {wildcards.source:q}"
        " --images {params.images:q} --seed {params.seed:q} --out {output:q} > {log:q} 2>&1"


rule format_match_shard:
    wildcard_constraints:
        name=any_of(FORMAT_MATCHED),
    input:
        unpack(get_format_match_input),
    output:
        shard_path("{name}", "{shard}"),
    log:
        LOGS / "format_control" / "{name}" / "shard-{shard}.log",
    benchmark:
        BENCHMARKS / "format_control" / "{name}" / "shard-{shard}.tsv"
    params:
        spec=get_format_match_spec,
    conda:
        ENV
    shell:
        "python -m contamination format-match --spec {params.spec:q} --shard {input.shard:q}"
        " --profile {input.profile:q} --out {output:q} > {log:q} 2>&1"
