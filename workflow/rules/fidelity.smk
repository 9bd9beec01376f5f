# Inception features, one .npy per (image set, extractor) under results/<run>/features/inception/,
# and Table 4: the precision and recall of datasets themselves against ImageNet val. IDDPM's
# metrics (Tables 3, 10) read the same feature files (iddpm.smk). The dinov2_* rules do the same
# on DINOv2 features (features/dinov2/, model dinov2_features: FD_DINOv2 too) for the tables
# that name that model.


rule index_features:
    input:
        index=index_path("{source}"),
        extractor=get_model("inception"),
    output:
        features_path("index", "{source}-{split}-{size}px"),
    log:
        LOGS / "features" / "index" / "{source}-{split}-{size}px.log",
    benchmark:
        BENCHMARKS / "features" / "index" / "{source}-{split}-{size}px.tsv"
    params:
        setting_arguments=get_feature_arguments,
        runtime_arguments=get_feature_runtime_arguments,
        option_arguments=get_image_set_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --index {input.index:q} --split {wildcards.split:q} --size {wildcards.size:q}"
        " {params.option_arguments} --extractor {input.extractor:q} {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule mixture_features:
    input:
        manifest=manifest_path("{mixture}"),
        extractor=get_model("inception"),
    output:
        features_path("mixtures", "{mixture}-{size}px"),
    log:
        LOGS / "features" / "mixtures" / "{mixture}-{size}px.log",
    benchmark:
        BENCHMARKS / "features" / "mixtures" / "{mixture}-{size}px.tsv"
    params:
        setting_arguments=get_feature_arguments,
        runtime_arguments=get_feature_runtime_arguments,
        option_arguments=get_image_set_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --manifest {input.manifest:q} --size {wildcards.size:q}"
        " {params.option_arguments} --extractor {input.extractor:q} {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule dataset_fidelity:
    input:
        unpack(get_dataset_fidelity_input),
    output:
        metrics_path("fidelity", FIDELITY_MODEL, "{mixture}"),
    log:
        LOGS / "fidelity" / "{mixture}.log",
    benchmark:
        BENCHMARKS / "fidelity" / "{mixture}.tsv"
    params:
        reference_arguments=get_reference_arguments,
        setting_arguments=get_dataset_fidelity_arguments(),
        runtime_arguments=get_fidelity_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination fidelity --kind dataset --generated {input.generated:q} {params.reference_arguments}"
        " {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule dinov2_index_features:
    input:
        index=index_path("{source}"),
        extractor=lambda wildcards: get_model("dinov2"),
    output:
        features_path("index", "{source}-{split}-{size}px", "dinov2"),
    log:
        LOGS / "features" / "dinov2" / "index" / "{source}-{split}-{size}px.log",
    benchmark:
        BENCHMARKS / "features" / "dinov2" / "index" / "{source}-{split}-{size}px.tsv"
    params:
        runtime_arguments=get_feature_runtime_arguments,
        option_arguments=get_image_set_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --encoder dinov2 --index {input.index:q} --split {wildcards.split:q}"
        " --size {wildcards.size:q} {params.option_arguments} --extractor {input.extractor:q}"
        " {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule dinov2_mixture_features:
    input:
        manifest=manifest_path("{mixture}"),
        extractor=lambda wildcards: get_model("dinov2"),
    output:
        features_path("mixtures", "{mixture}-{size}px", "dinov2"),
    log:
        LOGS / "features" / "dinov2" / "mixtures" / "{mixture}-{size}px.log",
    benchmark:
        BENCHMARKS / "features" / "dinov2" / "mixtures" / "{mixture}-{size}px.tsv"
    params:
        runtime_arguments=get_feature_runtime_arguments,
        option_arguments=get_image_set_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --encoder dinov2 --manifest {input.manifest:q} --size {wildcards.size:q}"
        " {params.option_arguments} --extractor {input.extractor:q} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule dinov2_dataset_fidelity:
    input:
        unpack(get_dinov2_fidelity_input),
    output:
        metrics_path("fidelity", DINOV2_MODEL, "{mixture}"),
    log:
        LOGS / "fidelity" / DINOV2_MODEL / "{mixture}.log",
    benchmark:
        BENCHMARKS / "fidelity" / DINOV2_MODEL / "{mixture}.tsv"
    params:
        reference_arguments=get_reference_arguments,
        setting_arguments=get_dinov2_fidelity_arguments(),
        runtime_arguments=get_fidelity_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination fidelity --kind dataset --generated {input.generated:q} {params.reference_arguments}"
        " {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"
