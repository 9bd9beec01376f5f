# Image classification (Tables 1, 5, 6, 7, 8 and Figure 3): one training job per (model, mixture)
# that some table asks for; tables sharing a cell (Table 6 = Table 1's ResNet-50 runs) share
# the job. A job runs one process per GPU (torchrun) when the profile gives it GPUs; stopped by
# a signal it checkpoints and fails, and its retry resumes from results/<run>/checkpoints/.
EXPERIMENTS.add("classify")


rule train_classifier:
    input:
        manifest=RESULTS / "mixtures" / "{mixture}.parquet",
        imagenet=RESULTS / "index" / "imagenet.parquet",
        imagenet_a=RESULTS / "index" / "imagenet_a.parquet",
        imagenet_r=RESULTS / "index" / "imagenet_r.parquet",
    output:
        metrics=metrics_path("classify", "{model}", "{mixture}"),
        confusion=confusion_path("{model}", "{mixture}"),
    log:
        LOGS / "classify" / "{model}" / "{mixture}.log",
    wildcard_constraints:
        model="|".join(CLASSIFIERS),
    params:
        spec=classifier_spec,
        runtime=runtime_json("classification", CLASSIFIER_KEYS),
        checkpoints=classifier_checkpoint_dir,
        launcher=torch_launcher,
    conda:
        ENV
    shell:
        "{params.launcher} train-classifier --spec {params.spec:q} --runtime {params.runtime:q}"
        " --manifest {input.manifest:q} --imagenet {input.imagenet:q} --imagenet-a {input.imagenet_a:q}"
        " --imagenet-r {input.imagenet_r:q} --checkpoint-dir {params.checkpoints:q}"
        " --out {output.metrics:q} --confusion {output.confusion:q} > {log:q} 2>&1"


rule figure3:
    input:
        unpack(figure3_input),
    output:
        report(RESULTS / "figures" / "figure3.png", caption="../report/figure3.rst", category="Figures"),
    log:
        LOGS / "figures" / "figure3.log",
    params:
        arguments=figure3_arguments,
    conda:
        ENV
    shell:
        "python -m contamination plot-confusion --matrices {input.matrices:q} --classes {input.classes:q}"
        " {params.arguments} --out {output:q} > {log:q} 2>&1"
