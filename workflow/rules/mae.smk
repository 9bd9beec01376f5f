# Table 11: MAE pre-training of a ViT on each mixture, then linear probing of its frozen encoder
# on ImageNet. Both jobs run one process per GPU (torchrun) when the profile gives them GPUs; a
# job stopped by a signal exits 75 and its retry resumes from results/<run>/checkpoints/.


rule mae_pretrain:
    input:
        manifest=manifest_path("{mixture}"),
    output:
        model=directory(run_dir("mae", MAE_MODEL, "{mixture}") / "pretrained"),
        summary=run_dir("mae", MAE_MODEL, "{mixture}") / "pretrain.json",
    log:
        LOGS / "mae" / "{mixture}" / "pretrain.log",
    benchmark:
        BENCHMARKS / "mae" / "{mixture}" / "pretrain.tsv"
    params:
        spec=get_mae_pretrain_spec(),
        runtime=get_runtime("mae", MAE_PRETRAIN_KEYS),
        checkpoints=str(checkpoint_dir("mae_pretrain", MAE_MODEL, "{mixture}")),
        launcher=get_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} mae-pretrain --spec {params.spec:q} --runtime {params.runtime:q} --manifest {input.manifest:q}"
        " --checkpoint-dir {params.checkpoints:q} --out {output.model:q} --summary {output.summary:q} > {log:q} 2>&1"


rule mae_linear_probe:
    input:
        model=run_dir("mae", MAE_MODEL, "{mixture}") / "pretrained",
        summary=run_dir("mae", MAE_MODEL, "{mixture}") / "pretrain.json",
        imagenet=index_path("imagenet"),
    output:
        metrics_path("mae", MAE_MODEL, "{mixture}"),
    log:
        LOGS / "mae" / "{mixture}" / "linear_probe.log",
    benchmark:
        BENCHMARKS / "mae" / "{mixture}" / "linear_probe.tsv"
    params:
        spec=get_mae_probe_spec(),
        runtime=get_runtime("mae", MAE_PROBE_KEYS),
        checkpoints=str(checkpoint_dir("mae_linear_probe", MAE_MODEL, "{mixture}")),
        launcher=get_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} mae-linear-probe --spec {params.spec:q} --runtime {params.runtime:q} --pretrained {input.model:q}"
        " --pretrain-summary {input.summary:q} --imagenet {input.imagenet:q} --checkpoint-dir {params.checkpoints:q}"
        " --out {output:q} > {log:q} 2>&1"
