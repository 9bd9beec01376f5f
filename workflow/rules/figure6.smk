# Figure 6 (section 6.1): the power spectra of real and generated images, one CSV and plot per
# generated dataset of config spectra.generated (wildcard `name`, target `spectra`), then the
# combined table and the figure.


rule power_spectra:
    input:
        real=dataset_index(config["spectra"]["real_source"]),
        generated=generated_index_path("{name}"),
    output:
        csv=spectra_path("{name}", "csv"),
        png=spectra_path("{name}", "png"),
    log:
        LOGS / "spectra" / "{name}.log",
    benchmark:
        BENCHMARKS / "spectra" / "{name}.tsv"
    params:
        spec=get_spectra_spec,
    conda:
        ENV
    shell:
        "python -m contamination spectra --spec {params.spec:q} --real {input.real:q} --generated {input.generated:q}"
        " --out-csv {output.csv:q} --out-png {output.png:q} > {log:q} 2>&1"


rule spectra:
    input:
        get_spectra(),
    localrule: True


rule spectra_table:
    input:
        get_spectra_csvs(),
    output:
        csv=SPECTRA_TABLE,
        png=report(FIGURE6, caption="../report/figure6.rst", category="Figures"),
    log:
        LOGS / "report" / "spectra.log",
    benchmark:
        BENCHMARKS / "report" / "spectra.tsv"
    conda:
        ENV
    shell:
        "python -m contamination spectra-table --spectra {input:q} --out-csv {output.csv:q}"
        " --out-png {output.png:q} > {log:q} 2>&1"
