# Section 6.1: can generated images be told from real ones? Detectors on ResNet-50 features (the
# `detection` table), each against one generated dataset (wildcard `name`). Figure 6's power
# spectra are figure6.smk.


rule detect:
    input:
        real=dataset_index(config["detection"]["real_source"]),
        generated=generated_index_path("{name}"),
        weights=get_model("resnet50_detector"),
    output:
        linear=metrics_path("detect", "linear_on_resnet50_features", "{name}"),
        mlp=metrics_path("detect", "mlp_on_resnet50_features", "{name}"),
    log:
        LOGS / "detect" / "{name}.log",
    benchmark:
        BENCHMARKS / "detect" / "{name}.tsv"
    params:
        spec=get_detection_spec,
        runtime=get_runtime("detection"),
    conda:
        ENV
    shell:
        "python -m contamination detect --spec {params.spec:q} --runtime {params.runtime:q} --real {input.real:q} --generated {input.generated:q}"
        " --weights {input.weights:q} --out-linear {output.linear:q} --out-mlp {output.mlp:q} > {log:q} 2>&1"
