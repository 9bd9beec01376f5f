# Section 6.1: can generated images be told from real ones? Detectors on ResNet-50 features (the
# `detection` table) and the power spectra of Figure 6 (`spectra`), each against one generated
# dataset (wildcard `name`).
EXPERIMENTS.add("detect")


if config["models"]["build_tiny"]:

    rule tiny_resnet50:
        output:
            resnet50_detector_weights(),
        log:
            LOGS / "models" / "tiny_resnet50.log",
        params:
            seed=config["seed"],
        conda:
            ENV
        shell:
            "python -m contamination tiny-resnet50 {output:q} --seed {params.seed:q} > {log:q} 2>&1"


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


rule power_spectra:
    input:
        real=dataset_index(config["spectra"]["real_source"]),
        generated=RESULTS / "generated" / "{name}" / "index.parquet",
    output:
        csv=RESULTS / "spectra" / "{name}.csv",
        png=RESULTS / "spectra" / "{name}.png",
    log:
        LOGS / "spectra" / "{name}.log",
    params:
        spec=spectra_spec,
    conda:
        ENV
    shell:
        "python -m contamination spectra --spec {params.spec:q} --real {input.real:q} --generated {input.generated:q}"
        " --out-csv {output.csv:q} --out-png {output.png:q} > {log:q} 2>&1"


rule spectra:
    input:
        all_spectra(),
    localrule: True
