# Figure 6 (section 6.1): the power spectra of real and generated images, one CSV and plot per
# generated dataset of config spectra.generated (wildcard `name`, target `spectra`), then the
# combined table and the figure.


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


rule spectra_table:
    input:
        spectra_csvs(),
    output:
        csv=RESULTS / "tables" / "spectra.csv",
        png=report(RESULTS / "figures" / "figure6.png", caption="../report/figure6.rst", category="Figures"),
    log:
        LOGS / "report" / "spectra.log",
    conda:
        ENV
    shell:
        "python -m contamination spectra-table --spectra {input:q} --out-csv {output.csv:q}"
        " --out-png {output.png:q} > {log:q} 2>&1"
