# Declarative mixtures (config `mixtures`) -> one Parquet manifest + JSON summary each.


rule mixture:
    input:
        unpack(mixture_input),
    output:
        manifest=RESULTS / "mixtures" / "{mixture}.parquet",
        summary=RESULTS / "mixtures" / "{mixture}.json",
    log:
        LOGS / "mixtures" / "{mixture}.log",
    params:
        spec=mixture_spec,
        input_arguments=mixture_arguments,
    conda:
        ENV
    shell:
        "python -m contamination mixture --spec {params.spec:q} {params.input_arguments}"
        " --out {output.manifest:q} --summary {output.summary:q} > {log:q} 2>&1"
