# Recursive contamination (beyond the paper; experiments/recursion.py, config/README.md `recursion`).
# Generation 0 is the IDDPM run on recursion.base (iddpm.smk). Generation k >= 1 of a policy trains
# the same recipe on the base's image array mixed with earlier generations' samples; every
# generation samples recursion.sample_count images, scored against iddpm.references. A generation
# is a wildcard, so the dry run shows the chain, and `snakemake recursion -R <its mixture.npy>`
# rebuilds one generation and those after it.


rule recursion_mixture:
    input:
        unpack(get_recursion_mixture_input),
    output:
        images=recursion_path("{policy}", "{generation}") / "mixture.npy",
        origins=recursion_path("{policy}", "{generation}") / "mixture.parquet",
        summary=recursion_path("{policy}", "{generation}") / "mixture.json",
    wildcard_constraints:
        policy="|".join(recursion.POLICIES),
        generation=r"[1-9]\d*",
    log:
        LOGS / "recursion" / "{policy}" / "generation-{generation}" / "mixture.log",
    benchmark:
        BENCHMARKS / "recursion" / "{policy}" / "generation-{generation}" / "mixture.tsv"
    params:
        spec=get_recursion_mixture_spec,
        sources=get_recursion_sources_argument,
    conda:
        ENV
    shell:
        "python -m contamination recursion-mixture --spec {params.spec:q} --real {input.real:q} --sources {params.sources:q}"
        " --out-images {output.images:q} --out-origins {output.origins:q} --out-summary {output.summary:q} > {log:q} 2>&1"


rule recursion_train:
    input:
        images=recursion_path("{policy}", "{generation}") / "mixture.npy",
        summary=recursion_path("{policy}", "{generation}") / "mixture.json",
    output:
        model=directory(recursion_path("{policy}", "{generation}") / "model"),
        status=recursion_path("{policy}", "{generation}") / "training.json",
    wildcard_constraints:
        policy="|".join(recursion.POLICIES),
        generation=r"[1-9]\d*",
    log:
        LOGS / "recursion" / "{policy}" / "generation-{generation}" / "train.log",
    benchmark:
        BENCHMARKS / "recursion" / "{policy}" / "generation-{generation}" / "train.tsv"
    params:
        spec=get_iddpm_spec(iddpm_recipe.TRAIN_SPEC_KEYS),
        runtime=get_runtime("iddpm", iddpm_recipe.TRAIN_SPEC_KEYS),
        checkpoints=get_recursion_checkpoints,
        launcher=get_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} iddpm-train --spec {params.spec:q} --runtime {params.runtime:q} --images {input.images:q}"
        " --manifest {input.summary:q} --data-status {input.summary:q} --checkpoint-dir {params.checkpoints:q}"
        " --out {output.model:q} --status {output.status:q} > {log:q} 2>&1"


rule recursion_sample:
    input:
        unpack(get_recursion_model),
    output:
        recursion_path("{policy}", "{generation}") / "samples" / "shard-{shard}.npy",
    log:
        LOGS / "recursion" / "{policy}" / "generation-{generation}" / "sample-{shard}.log",
    benchmark:
        BENCHMARKS / "recursion" / "{policy}" / "generation-{generation}" / "sample-{shard}.tsv"
    params:
        spec=get_recursion_sample_spec(),
        runtime=get_runtime("iddpm", iddpm_recipe.SAMPLE_SPEC_KEYS),
    conda:
        ENV
    shell:
        "python -m contamination iddpm-sample --spec {params.spec:q} --runtime {params.runtime:q} --model {input.model:q}"
        " --status {input.status:q} --shard {wildcards.shard:q} --out {output:q} > {log:q} 2>&1"


rule recursion_sample_features:
    input:
        samples=get_recursion_sample_shards,
        extractor=get_model("inception"),
    output:
        features_path("recursion", "{policy}/generation-{generation}"),
    log:
        LOGS / "features" / "recursion" / "{policy}" / "generation-{generation}.log",
    benchmark:
        BENCHMARKS / "features" / "recursion" / "{policy}" / "generation-{generation}.tsv"
    params:
        setting_arguments=get_feature_arguments,
        runtime_arguments=get_feature_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --images {input.samples:q} --extractor {input.extractor:q}"
        " {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule recursion_fidelity:
    input:
        unpack(get_recursion_fidelity_input),
    output:
        recursion_path("{policy}", "{generation}") / "metrics.json",
    log:
        LOGS / "recursion" / "{policy}" / "generation-{generation}" / "fidelity.log",
    benchmark:
        BENCHMARKS / "recursion" / "{policy}" / "generation-{generation}" / "fidelity.tsv"
    params:
        reference_arguments=get_reference_arguments,
        setting_arguments=get_fidelity_arguments(),
        runtime_arguments=get_fidelity_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination fidelity --kind samples --generated {input.generated:q} {params.reference_arguments}"
        " --training {input.status:q} {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule recursion_table:
    input:
        unpack(get_recursion_table_input),
    output:
        csv=table_path(recursion.TABLE),
        provenance=table_path(recursion.TABLE, "provenance.json"),
    log:
        LOGS / "tables" / f"{recursion.TABLE}.log",
    benchmark:
        BENCHMARKS / "tables" / f"{recursion.TABLE}.tsv"
    params:
        spec=get_recursion_table_spec,
        cells=get_recursion_table_cells_argument,
    conda:
        ENV
    shell:
        "python -m contamination recursion-table --spec {params.spec:q} --cells {params.cells:q}"
        " --out {output.csv:q} --provenance {output.provenance:q} > {log:q} 2>&1"


rule recursion_plot:
    input:
        table_path(recursion.TABLE),
    output:
        report(
            recursion_figure_path("{policy}"),
            caption="../report/recursion_plot.rst",
            category="Recursion",
            labels={"policy": "{policy}", "content": "metrics against generation"},
        ),
    wildcard_constraints:
        policy="|".join(recursion.POLICIES),
    log:
        LOGS / "report" / "recursion-{policy}.log",
    benchmark:
        BENCHMARKS / "report" / "recursion-{policy}.tsv"
    conda:
        ENV
    shell:
        "python -m contamination recursion-plot --table {input:q} --policy {wildcards.policy:q} --out {output:q} > {log:q} 2>&1"


rule recursion_report:
    input:
        table=table_path(recursion.TABLE),
        provenance=table_path(recursion.TABLE, "provenance.json"),
        plots=[recursion_figure_path(policy) for policy in RECURSION["policies"]],
    output:
        report(
            table_page_path(recursion.TABLE),
            caption="../report/recursion.rst",
            category="Recursion",
            labels={"policy": "all", "content": "table, plots and provenance"},
        ),
    log:
        LOGS / "report" / "recursion.log",
    benchmark:
        BENCHMARKS / "report" / "recursion.tsv"
    conda:
        ENV
    shell:
        "python -m contamination recursion-report --table {input.table:q} --provenance {input.provenance:q}"
        " --plots {input.plots:q} --out {output:q} > {log:q} 2>&1"


rule recursion:
    input:
        get_recursion_outputs(),
    localrule: True
