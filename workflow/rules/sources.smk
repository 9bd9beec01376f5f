# Real datasets on disk -> one Parquet index per source (formats.py documents the columns).
# The configured roots are only ever inputs. With synthetic.enabled (the smoke run) the indexes
# read the tiny datasets smoke.smk writes under RESULTS/synthetic/ instead.


rule imagenet_classes:
    input:
        unpack(get_classes_input),
    output:
        CLASS_TABLE,
    log:
        LOGS / "index" / "imagenet_classes.log",
    benchmark:
        BENCHMARKS / "index" / "imagenet_classes.tsv"
    params:
        arguments=get_classes_arguments(),
    conda:
        ENV
    shell:
        "python -m contamination classes --root {input.root:q} {params.arguments} --out {output:q} > {log:q} 2>&1"


rule index_source:
    input:
        unpack(get_index_input),
    output:
        index=index_path("{source}"),
        report=index_path("{source}").with_suffix(".report.json"),
    log:
        LOGS / "index" / "{source}.log",
    benchmark:
        BENCHMARKS / "index" / "{source}.tsv"
    params:
        arguments=get_index_arguments,
        class_arguments=get_index_class_arguments,
    threads: 2
    conda:
        ENV
    shell:
        "python -m contamination index {wildcards.source:q} --root {input.root:q} {params.class_arguments}"
        " {params.arguments} --workers {threads} --out {output.index:q} --report {output.report:q}"
        " > {log:q} 2>&1"
