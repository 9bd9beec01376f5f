# Tables 3 and 10: improved DDPM trained on the 64x64 version of each mixture a table asks for
# (gathered from the 64x64 images of each dataset it draws from, prepared once: image_cache.py),
# sampled in shards, scored by FID and precision/recall against the 64x64 reference sets. The
# training job runs one process per GPU (torchrun) when the profile gives it GPUs; stopped by a
# signal it checkpoints and exits 75, and its retry resumes from results/<run>/checkpoints/.


rule image_cache:
    input:
        unpack(get_image_cache_input),
    output:
        images=image_cache_path("{dataset}", "{size}"),
        uris=image_cache_path("{dataset}", "{size}", "parquet"),
    wildcard_constraints:
        dataset=any_of([*cfg.TRAINING_SOURCES, *GENERATED, *FORMAT_MATCHED]),
    log:
        LOGS / "images" / "cache" / "{dataset}-{size}px.log",
    benchmark:
        BENCHMARKS / "images" / "cache" / "{dataset}-{size}px.tsv"
    params:
        setting_arguments=get_image_cache_arguments,
        runtime_arguments=get_image_cache_runtime_arguments,
        option_arguments=get_image_set_arguments,
    conda:
        ENV
    shell:
        "python -m contamination image-cache --index {input.index:q} {params.setting_arguments} --size {wildcards.size:q}"
        " {params.option_arguments} {params.runtime_arguments} --out {output.images:q} --out-uris {output.uris:q}"
        " > {log:q} 2>&1"


rule image_array:
    input:
        unpack(get_image_array_input),
    output:
        image_array_path("{mixture}", "{size}"),
    log:
        LOGS / "images" / "{mixture}-{size}px.log",
    benchmark:
        BENCHMARKS / "images" / "{mixture}-{size}px.tsv"
    params:
        cache_arguments=get_image_array_cache_arguments,
    conda:
        ENV
    shell:
        "python -m contamination gather-rows --manifest {input.manifest:q} {params.cache_arguments} --out {output:q}"
        " > {log:q} 2>&1"


rule iddpm_train:
    input:
        images=get_iddpm_images,
        manifest=manifest_path("{mixture}"),
    output:
        model=directory(run_dir("iddpm", IDDPM_MODEL, "{mixture}") / "model"),
        status=run_dir("iddpm", IDDPM_MODEL, "{mixture}") / "training.json",
    log:
        LOGS / "iddpm" / "{mixture}" / "train.log",
    benchmark:
        BENCHMARKS / "iddpm" / "{mixture}" / "train.tsv"
    params:
        spec=get_iddpm_spec(iddpm_recipe.TRAIN_SPEC_KEYS),
        runtime=get_runtime("iddpm", iddpm_recipe.TRAIN_SPEC_KEYS),
        checkpoints=get_iddpm_checkpoints,
        launcher=get_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} iddpm-train --spec {params.spec:q} --runtime {params.runtime:q} --images {input.images:q}"
        " --manifest {input.manifest:q} --checkpoint-dir {params.checkpoints:q} --out {output.model:q}"
        " --status {output.status:q} > {log:q} 2>&1"


rule iddpm_sample:
    input:
        model=run_dir("iddpm", IDDPM_MODEL, "{mixture}") / "model",
        status=run_dir("iddpm", IDDPM_MODEL, "{mixture}") / "training.json",
    output:
        run_dir("iddpm", IDDPM_MODEL, "{mixture}") / "samples" / "shard-{shard}.npy",
    log:
        LOGS / "iddpm" / "{mixture}" / "sample-{shard}.log",
    benchmark:
        BENCHMARKS / "iddpm" / "{mixture}" / "sample-{shard}.tsv"
    params:
        spec=get_iddpm_spec(iddpm_recipe.SAMPLE_SPEC_KEYS),
        runtime=get_runtime("iddpm", iddpm_recipe.SAMPLE_SPEC_KEYS),
    conda:
        ENV
    shell:
        "python -m contamination iddpm-sample --spec {params.spec:q} --runtime {params.runtime:q} --model {input.model:q}"
        " --status {input.status:q} --shard {wildcards.shard:q} --out {output:q} > {log:q} 2>&1"


rule iddpm_sample_features:
    input:
        samples=get_iddpm_sample_shards,
        extractor=get_model("inception"),
    output:
        features_path("iddpm", "{mixture}"),
    log:
        LOGS / "features" / "iddpm" / "{mixture}.log",
    benchmark:
        BENCHMARKS / "features" / "iddpm" / "{mixture}.tsv"
    params:
        setting_arguments=get_feature_arguments,
        runtime_arguments=get_feature_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --images {input.samples:q} --extractor {input.extractor:q}"
        " {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule iddpm_fidelity:
    input:
        unpack(get_iddpm_fidelity_input),
    output:
        metrics_path("iddpm", IDDPM_MODEL, "{mixture}"),
    log:
        LOGS / "iddpm" / "{mixture}" / "fidelity.log",
    benchmark:
        BENCHMARKS / "iddpm" / "{mixture}" / "fidelity.tsv"
    params:
        reference_arguments=get_reference_arguments,
        setting_arguments=get_fidelity_arguments(),
        runtime_arguments=get_fidelity_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination fidelity --kind samples --generated {input.generated:q} {params.reference_arguments}"
        " --training {input.status:q} {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"
