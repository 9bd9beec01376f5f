# The smoke run's stand-ins, written under RESULTS and never over what the user owns: with
# synthetic.enabled, tiny datasets in the real on-disk layouts (read in place of sources.*); with
# models.build_tiny, tiny random models in the real formats (read in place of models.*), loaded by
# the same from_pretrained/torch.load code as the real ones. src/contamination/smoke/.


if config["synthetic"]["enabled"]:

    rule synthetic_sources:
        output:
            [directory(root) for root in get_synthetic_roots()],
        log:
            LOGS / "synthetic_sources.log",
        benchmark:
            BENCHMARKS / "synthetic_sources.tsv"
        params:
            spec=get_synthetic_spec(),
        conda:
            ENV
        shell:
            "python -m contamination synthetic --spec {params.spec:q} > {log:q} 2>&1"


if config["models"]["build_tiny"]:

    rule tiny_sd:
        output:
            directory(get_model("stable_diffusion")),
        log:
            LOGS / "models" / "tiny_sd.log",
        benchmark:
            BENCHMARKS / "models" / "tiny_sd.tsv"
        params:
            seed=config["seed"],
        conda:
            ENV
        shell:
            "python -m contamination tiny-sd {output:q} --seed {params.seed:q} > {log:q} 2>&1"


    if generators.tiny_families(config):

        rule tiny_pipeline:
            output:
                directory(generators.tiny_pipeline_location(config, "{family}")),
            log:
                LOGS / "models" / "tiny_pipeline_{family}.log",
            benchmark:
                BENCHMARKS / "models" / "tiny_pipeline_{family}.tsv"
            params:
                seed=config["seed"],
            wildcard_constraints:
                family="|".join(generators.tiny_families(config)),
            conda:
                ENV
            shell:
                "python -m contamination tiny-pipeline {wildcards.family:q} {output:q} --seed {params.seed:q} > {log:q} 2>&1"



    rule tiny_blip:
        input:
            index_path("coco"),
        output:
            directory(get_model("blip")),
        log:
            LOGS / "models" / "tiny_blip.log",
        benchmark:
            BENCHMARKS / "models" / "tiny_blip.tsv"
        params:
            prompt=config["captioning"]["prompt"],
            image_size=config["captioning"]["image_size"],
            seed=config["seed"],
        conda:
            ENV
        shell:
            "python -m contamination tiny-blip {output:q} --captions {input:q} --prompt {params.prompt:q}"
            " --image-size {params.image_size:q} --seed {params.seed:q} > {log:q} 2>&1"


    rule tiny_resnet50:
        output:
            get_model("resnet50_detector"),
        log:
            LOGS / "models" / "tiny_resnet50.log",
        benchmark:
            BENCHMARKS / "models" / "tiny_resnet50.tsv"
        params:
            seed=config["seed"],
        conda:
            ENV
        shell:
            "python -m contamination tiny-resnet50 {output:q} --seed {params.seed:q} > {log:q} 2>&1"


    rule tiny_inception:
        output:
            get_model("inception"),
        log:
            LOGS / "models" / "tiny_inception.log",
        benchmark:
            BENCHMARKS / "models" / "tiny_inception.tsv"
        params:
            seed=config["seed"],
            resolution=config["fidelity"]["inception_resolution"],
        conda:
            ENV
        shell:
            "python -m contamination tiny-inception {output:q} --seed {params.seed:q}"
            " --resolution {params.resolution:q} > {log:q} 2>&1"


    # The frozen encoders of the filtering detectors (models.clip_vision, models.dinov2), and the
    # DINOv2 of fidelity tables on dinov2_features.
    for _kind, _key in ENCODER_MODEL_KEYS.items():

        rule:
            name:
                f"tiny_{_key}"
            output:
                directory(get_model(_key)),
            log:
                LOGS / "models" / f"tiny_{_key}.log",
            benchmark:
                BENCHMARKS / "models" / f"tiny_{_key}.tsv"
            params:
                kind=_kind,
                image_size=config["synthetic"]["image_size"],
                seed=config["seed"],
            conda:
                ENV
            shell:
                "python -m contamination tiny-encoder {output:q} --kind {params.kind:q}"
                " --image-size {params.image_size:q} --seed {params.seed:q} > {log:q} 2>&1"
