# The pieces of the HTML report (`snakemake --report results/<run>/report.html --configfile ...`
# after a run, or `--report-after-run` with it): each table as a page with its plot against the
# contamination ratio, all tables in one tidy CSV, Figure 6, examples of every generated dataset,
# the run's effective config with what differs from the paper's, and the compute plan
# (python -m contamination plan).


rule table_report:
    input:
        table=table_path("{table}"),
        provenance=table_path("{table}", "provenance.json"),
    output:
        html=report(
            table_page_path("{table}"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "content": "table, plot and provenance"},
        ),
        png=report(
            table_plot_path("{table}"),
            caption="../report/table_plot.rst",
            category="Plots",
            labels={"table": "{table}", "content": "metrics against contamination ratio"},
        ),
    log:
        LOGS / "report" / "{table}.log",
    benchmark:
        BENCHMARKS / "report" / "{table}.tsv"
    params:
        spec=get_table_spec,
        mixtures=get_mixtures_spec,
    conda:
        ENV
    shell:
        "python -m contamination table-report --spec {params.spec:q} --mixtures {params.mixtures:q}"
        " --table {input.table:q} --provenance {input.provenance:q} --out-html {output.html:q}"
        " --out-png {output.png:q} > {log:q} 2>&1"


rule concatenate_tables:
    input:
        tables=get_tables(),
        provenance=get_table_provenance_files(),
    output:
        csv=report(
            ALL_TABLES,
            caption="../report/all_tables.rst",
            category="Tables",
            labels={"table": "all tables", "content": "tidy CSV"},
        ),
        provenance=table_path("all_tables", "provenance.json"),
    log:
        LOGS / "report" / "all_tables.log",
    benchmark:
        BENCHMARKS / "report" / "all_tables.tsv"
    conda:
        ENV
    shell:
        "python -m contamination all-tables --tables {input.tables:q} --provenance {input.provenance:q}"
        " --out {output.csv:q} --out-provenance {output.provenance:q} > {log:q} 2>&1"


rule generated_examples:
    input:
        generated_index_path("{name}"),
    output:
        report(
            examples_page_path("{name}"),
            caption="../report/examples.rst",
            category="Generated images",
            labels={"dataset": "{name}"},
        ),
    log:
        LOGS / "report" / "examples-{name}.log",
    benchmark:
        BENCHMARKS / "report" / "examples-{name}.tsv"
    params:
        examples=config["report"]["examples"],
        thumbnail=config["report"]["thumbnail_size"],
    conda:
        ENV
    shell:
        "python -m contamination generated-examples --index {input:q} --name {wildcards.name:q}"
        " --count {params.examples:q} --thumbnail {params.thumbnail:q} --out {output:q} > {log:q} 2>&1"


rule run_config:
    input:
        paper=cfg.DEFAULT_CONFIG,
    output:
        yaml=RUN_CONFIG,
        html=report(CONFIG_PAGE, caption="../report/config.rst", category="Configuration"),
        differences=report(DIFFERENCES_PAGE, caption="../report/differences.rst", category="Configuration"),
    log:
        LOGS / "report" / "config.log",
    benchmark:
        BENCHMARKS / "report" / "config.tsv"
    params:
        config=get_run_config,
    conda:
        ENV
    shell:
        "python -m contamination run-config --config {params.config:q} --paper-config {input.paper:q}"
        " --out-yaml {output.yaml:q} --out-html {output.html:q} --out-differences {output.differences:q} > {log:q} 2>&1"


rule plan:
    input:
        config=RUN_CONFIG,
        profile=PROFILE / "config.yaml",
    output:
        report(PLAN, caption="../report/plan.rst", category="Planning"),
    log:
        LOGS / "report" / "plan.log",
    benchmark:
        BENCHMARKS / "report" / "plan.tsv"
    params:
        profile=PROFILE,
    conda:
        ENV
    shell:
        "python -m contamination plan --configfile {input.config:q} --profile {params.profile:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report_pieces:
    input:
        get_report_files(),
        PLAN,
    localrule: True
