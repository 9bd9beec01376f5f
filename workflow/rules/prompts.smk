# One prompt table per generated dataset: a row per image to make, with its own seed.


rule prompts:
    input:
        unpack(get_prompts_input),
    output:
        prompts_path("{name}"),
    log:
        LOGS / "prompts" / "{name}.log",
    benchmark:
        BENCHMARKS / "prompts" / "{name}.tsv"
    params:
        spec=get_prompts_spec,
    conda:
        ENV
    shell:
        "python -m contamination prompts --spec {params.spec:q} --index {input.index:q}"
        " --out {output:q} > {log:q} 2>&1"
