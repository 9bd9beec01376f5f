# Image captioning (Tables 2 and 9): BLIP fine-tuned on each caption mixture of the tables, and
# the starting model evaluated as it is ("w/o fine-tuning", run id `pretrained`); every run
# captions the Karpathy test split of COCO and writes metrics.json + captions.json.
# Training runs one process per GPU of the job (torchrun, from the profile's `gpu` resource); a run
# killed or stopped by SLURM resumes from RESULTS/checkpoints/caption/blip/<mixture>/.


rule caption_finetune:
    input:
        manifest=manifest_path("{mixture}"),
        index=index_path("coco"),
        model=get_model("blip"),
    output:
        metrics=metrics_path("caption", "blip", "{mixture}"),
        captions=run_dir("caption", "blip", "{mixture}") / "captions.json",
    log:
        LOGS / "caption" / "blip" / "{mixture}.log",
    benchmark:
        BENCHMARKS / "caption" / "blip" / "{mixture}.tsv"
    params:
        launcher=get_launcher,
        settings=get_settings("captioning"),
        runtime=get_runtime("captioning"),
        checkpoints=get_caption_checkpoints,
        seed=config["seed"],
    threads: 2
    conda:
        ENV
    shell:
        "{params.launcher} caption"
        " --manifest {input.manifest:q} --index {input.index:q} --model {input.model:q}"
        " --settings {params.settings:q} --runtime {params.runtime:q} --checkpoint-dir {params.checkpoints:q} --seed {params.seed:q}"
        " --threads {threads} --out {output.metrics:q} --captions {output.captions:q} > {log:q} 2>&1"


rule caption_pretrained:
    input:
        index=index_path("coco"),
        model=get_model("blip"),
    output:
        metrics=metrics_path("caption", "blip", cfg.PRETRAINED_RUN),
        captions=run_dir("caption", "blip", cfg.PRETRAINED_RUN) / "captions.json",
    log:
        LOGS / "caption" / "blip" / "pretrained.log",
    benchmark:
        BENCHMARKS / "caption" / "blip" / "pretrained.tsv"
    params:
        launcher=get_launcher,
        settings=get_settings("captioning"),
        runtime=get_runtime("captioning"),
        seed=config["seed"],
    threads: 2
    conda:
        ENV
    shell:
        "{params.launcher} caption"
        " --index {input.index:q} --model {input.model:q} --settings {params.settings:q} --runtime {params.runtime:q} --seed {params.seed:q}"
        " --threads {threads} --out {output.metrics:q} --captions {output.captions:q} > {log:q} 2>&1"
