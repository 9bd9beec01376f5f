# Section 6.1: can generated images be told from real ones? Detectors on ResNet-50 features (the
# `detection` table), each against one generated dataset (wildcard `name`). Figure 6's power
# spectra are figure6.smk.
EXPERIMENTS.add("detect")


rule detect:
    input:
        real=dataset_index(config["detection"]["real_source"]),
        generated=RESULTS / "generated" / "{name}" / "index.parquet",
        weights=resnet50_detector_weights(),
    output:
        linear=metrics_path("detect", "linear_on_resnet50_features", "{name}"),
        mlp=metrics_path("detect", "mlp_on_resnet50_features", "{name}"),
    log:
        LOGS / "detect" / "{name}.log",
    params:
        spec=detection_spec,
        runtime=runtime_json("detection"),
    conda:
        ENV
    shell:
        "python -m contamination detect --spec {params.spec:q} --runtime {params.runtime:q} --real {input.real:q} --generated {input.generated:q}"
        " --weights {input.weights:q} --out-linear {output.linear:q} --out-mlp {output.mlp:q} > {log:q} 2>&1"
