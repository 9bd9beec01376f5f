# Image classification (Tables 1, 5, 6, 7, 8 and Figure 3): one training job per (model, mixture)
# that some table asks for; tables sharing a cell (Table 6 = Table 1's ResNet-50 runs) share
# the job. A job runs one process per GPU (torchrun) when the profile gives it GPUs; stopped by
# a signal it checkpoints and fails, and its retry resumes from results/<run>/checkpoints/.


rule train_classifier:
    input:
        manifest=manifest_path("{mixture}"),
        imagenet=index_path("imagenet"),
        imagenet_a=index_path("imagenet_a"),
        imagenet_r=index_path("imagenet_r"),
    output:
        metrics=metrics_path("classify", "{model}", "{mixture}"),
        confusion=run_dir("classify", "{model}", "{mixture}") / "confusion.npy",
    log:
        LOGS / "classify" / "{model}" / "{mixture}.log",
    benchmark:
        BENCHMARKS / "classify" / "{model}" / "{mixture}.tsv"
    wildcard_constraints:
        model="|".join(CLASSIFIERS),
    params:
        spec=get_classifier_spec,
        runtime=get_runtime("classification", CLASSIFIER_KEYS),
        checkpoints=get_classifier_checkpoints,
        launcher=get_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} train-classifier --spec {params.spec:q} --runtime {params.runtime:q}"
        " --manifest {input.manifest:q} --imagenet {input.imagenet:q} --imagenet-a {input.imagenet_a:q}"
        " --imagenet-r {input.imagenet_r:q} --checkpoint-dir {params.checkpoints:q}"
        " --out {output.metrics:q} --confusion {output.confusion:q} > {log:q} 2>&1"


rule figure3:
    input:
        unpack(get_figure3_input),
    output:
        report(FIGURE3, caption="../report/figure3.rst", category="Figures"),
    log:
        LOGS / "figures" / "figure3.log",
    benchmark:
        BENCHMARKS / "figures" / "figure3.tsv"
    params:
        arguments=get_figure3_arguments,
    conda:
        ENV
    shell:
        "python -m contamination plot-confusion --matrices {input.matrices:q} --classes {input.classes:q}"
        " {params.arguments} --out {output:q} > {log:q} 2>&1"
