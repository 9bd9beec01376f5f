# Declarative mixtures (config `mixtures`) -> one Parquet manifest + JSON summary each.


rule mixture:
    input:
        unpack(get_mixture_input),
    output:
        manifest=manifest_path("{mixture}"),
        summary=manifest_path("{mixture}").with_suffix(".json"),
    log:
        LOGS / "mixtures" / "{mixture}.log",
    benchmark:
        BENCHMARKS / "mixtures" / "{mixture}.tsv"
    wildcard_constraints:
        mixture="|".join(MIXTURES),  # not the filtered ones: filtering.smk makes those
    params:
        spec=get_mixture_spec,
        input_arguments=get_mixture_arguments,
    conda:
        ENV
    shell:
        "python -m contamination mixture --spec {params.spec:q} {params.input_arguments}"
        " --out {output.manifest:q} --summary {output.summary:q} > {log:q} 2>&1"
