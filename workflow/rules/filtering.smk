# Beyond the paper: detect the generated images of a contaminated mixture, drop them, retrain on
# the rest (src/contamination/experiments/filtering.py). For each mixture of config
# filtering.mixtures: the images its detectors learn from, from outside the mixture, and its own
# (detector_set); their features, once per extractor (detector_features); per detector the
# filtered manifest mixtures/<mixture>-filtered-<detector>.parquet and the run's metrics
# (filter_mixture). Experiments train on a filtered manifest as on any mixture (classify.smk).
# `snakemake filtering` builds the tables that use filtering, with their report pages and plots.


rule detector_set:
    input:
        unpack(get_detector_set_input),
    output:
        detector_set_path("{mixture}"),
    log:
        LOGS / "filtering" / "{mixture}" / "detector_set.log",
    benchmark:
        BENCHMARKS / "filtering" / "{mixture}" / "detector_set.tsv"
    wildcard_constraints:
        mixture="|".join(config["filtering"]["mixtures"]),
    params:
        spec=get_detector_set_spec,
    conda:
        ENV
    shell:
        "python -m contamination detector-set --spec {params.spec:q} --manifest {input.manifest:q}"
        " --base {input.base:q} --by {input.by:q} --out {output:q} > {log:q} 2>&1"


rule detector_features:
    input:
        unpack(get_detector_features_input),
    output:
        detector_features_path("{mixture}", "{features}"),
    log:
        LOGS / "filtering" / "{mixture}" / "{features}.log",
    benchmark:
        BENCHMARKS / "filtering" / "{mixture}" / "{features}.tsv"
    wildcard_constraints:
        mixture="|".join(config["filtering"]["mixtures"]),
        features="|".join(filtering.feature_kinds(config)),
    params:
        spec=get_detector_features_spec,
        runtime=get_runtime("filtering", filtering.FEATURE_KEYS),
    conda:
        ENV
    shell:
        "python -m contamination detector-features --spec {params.spec:q} --runtime {params.runtime:q}"
        " --items {input.detector_set:q} --model {input.model:q} --out {output:q} > {log:q} 2>&1"


rule filter_mixture:
    input:
        unpack(get_filter_input),
    output:
        manifest=filtered_manifest_path("{mixture}", "{detector}"),
        summary=filtered_manifest_path("{mixture}", "{detector}").with_suffix(".json"),
        scores=run_dir("filter", "{detector}", "{mixture}") / "scores.parquet",
        metrics=metrics_path("filter", "{detector}", "{mixture}"),
    log:
        LOGS / "filtering" / "{mixture}" / "{detector}.log",
    benchmark:
        BENCHMARKS / "filtering" / "{mixture}" / "{detector}.tsv"
    wildcard_constraints:
        mixture="|".join(config["filtering"]["mixtures"]),
        detector="|".join(config["filtering"]["detectors"]),
    params:
        spec=get_filter_spec,
        runtime=get_runtime("filtering", filtering.FILTER_KEYS),
    conda:
        ENV
    shell:
        "python -m contamination filter --spec {params.spec:q} --runtime {params.runtime:q} --items {input.detector_set:q}"
        " --features {input.features:q} --manifest {input.manifest:q} --model {input.model:q}"
        " --out-manifest {output.manifest:q} --out-summary {output.summary:q} --out-scores {output.scores:q}"
        " --out-metrics {output.metrics:q} > {log:q} 2>&1"


rule filtering:
    input:
        get_filtering_outputs(),
    localrule: True
    default_target: False
