# Tables 3 and 10: improved DDPM trained on the 64x64 version of each mixture a table asks for,
# sampled in shards, scored by FID and precision/recall against the 64x64 reference sets. The
# training job runs one process per GPU (torchrun) when the profile gives it GPUs; stopped by a
# signal it checkpoints and exits 75, and its retry resumes from results/<run>/checkpoints/.
EXPERIMENTS.add("iddpm")


rule image_array:
    input:
        RESULTS / "mixtures" / "{mixture}.parquet",
    output:
        RESULTS / "images" / "{mixture}-{size}px.npy",
    log:
        LOGS / "images" / "{mixture}-{size}px.log",
    params:
        runtime_arguments=image_array_runtime_arguments,
        option_arguments=image_set_arguments,
    conda:
        ENV
    shell:
        "python -m contamination image-array --manifest {input:q} --size {wildcards.size:q} {params.option_arguments}"
        " {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule iddpm_train:
    input:
        images=iddpm_images,
        manifest=RESULTS / "mixtures" / "{mixture}.parquet",
    output:
        model=directory(iddpm_run_dir("{mixture}") / "model"),
        status=iddpm_run_dir("{mixture}") / "training.json",
    log:
        LOGS / "iddpm" / "{mixture}" / "train.log",
    params:
        spec=iddpm_spec(iddpm_recipe.TRAIN_SPEC_KEYS),
        runtime=runtime_json("iddpm", iddpm_recipe.TRAIN_SPEC_KEYS),
        checkpoints=iddpm_checkpoint_dir,
        launcher=torch_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} iddpm-train --spec {params.spec:q} --runtime {params.runtime:q} --images {input.images:q}"
        " --manifest {input.manifest:q} --checkpoint-dir {params.checkpoints:q} --out {output.model:q}"
        " --status {output.status:q} > {log:q} 2>&1"


rule iddpm_sample:
    input:
        model=iddpm_run_dir("{mixture}") / "model",
        status=iddpm_run_dir("{mixture}") / "training.json",
    output:
        iddpm_run_dir("{mixture}") / "samples" / "shard-{shard}.npy",
    log:
        LOGS / "iddpm" / "{mixture}" / "sample-{shard}.log",
    params:
        spec=iddpm_spec(iddpm_recipe.SAMPLE_SPEC_KEYS),
        runtime=runtime_json("iddpm", iddpm_recipe.SAMPLE_SPEC_KEYS),
    conda:
        ENV
    shell:
        "python -m contamination iddpm-sample --spec {params.spec:q} --runtime {params.runtime:q} --model {input.model:q}"
        " --status {input.status:q} --shard {wildcards.shard:q} --out {output:q} > {log:q} 2>&1"


rule iddpm_sample_features:
    input:
        samples=iddpm_sample_shards,
        extractor=inception_weights(),
    output:
        features_path("iddpm", "{mixture}"),
    log:
        LOGS / "features" / "iddpm" / "{mixture}.log",
    params:
        setting_arguments=feature_arguments,
        runtime_arguments=feature_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination features --images {input.samples:q} --extractor {input.extractor:q}"
        " {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"


rule iddpm_fidelity:
    input:
        unpack(iddpm_fidelity_input),
    output:
        metrics_path("iddpm", IDDPM_MODEL, "{mixture}"),
    log:
        LOGS / "iddpm" / "{mixture}" / "fidelity.log",
    params:
        reference_arguments=reference_arguments,
        setting_arguments=fidelity_arguments(),
        runtime_arguments=fidelity_runtime_arguments,
    conda:
        ENV
    shell:
        "python -m contamination fidelity --kind samples --generated {input.generated:q} {params.reference_arguments}"
        " --training {input.status:q} {params.setting_arguments} {params.runtime_arguments} --out {output:q} > {log:q} 2>&1"
