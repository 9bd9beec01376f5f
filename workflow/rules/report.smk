# The pieces of the HTML report (`snakemake --report results/<run>/report.html --configfile ...`
# after a run, or `--report-after-run` with it): each table as a page with its plot against the
# contamination ratio, all tables in one tidy CSV, Figure 6, examples of every generated dataset,
# the run's effective config with what differs from the paper's, and the compute plan
# (python -m contamination plan).


rule table_report:
    input:
        table=RESULTS / "tables" / "{table}.csv",
        provenance=RESULTS / "tables" / "{table}.provenance.json",
    output:
        html=report(
            RESULTS / "report" / "tables" / "{table}.html",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "content": "table, plot and provenance"},
        ),
        png=report(
            RESULTS / "figures" / "{table}-vs-contamination.png",
            caption="../report/table_plot.rst",
            category="Plots",
            labels={"table": "{table}", "content": "metrics against contamination ratio"},
        ),
    log:
        LOGS / "report" / "{table}.log",
    params:
        spec=table_spec,
        mixtures=mixtures_spec,
    conda:
        ENV
    shell:
        "python -m contamination table-report --spec {params.spec:q} --mixtures {params.mixtures:q}"
        " --table {input.table:q} --provenance {input.provenance:q} --out-html {output.html:q}"
        " --out-png {output.png:q} > {log:q} 2>&1"


rule concatenate_tables:
    input:
        tables=all_tables(),
        provenance=table_provenance_files(),
    output:
        csv=report(
            RESULTS / "tables" / "all_tables.csv",
            caption="../report/all_tables.rst",
            category="Tables",
            labels={"table": "all tables", "content": "tidy CSV"},
        ),
        provenance=RESULTS / "tables" / "all_tables.provenance.json",
    log:
        LOGS / "report" / "all_tables.log",
    conda:
        ENV
    shell:
        "python -m contamination all-tables --tables {input.tables:q} --provenance {input.provenance:q}"
        " --out {output.csv:q} --out-provenance {output.provenance:q} > {log:q} 2>&1"


rule generated_examples:
    input:
        RESULTS / "generated" / "{name}" / "index.parquet",
    output:
        report(
            RESULTS / "report" / "examples" / "{name}.html",
            caption="../report/examples.rst",
            category="Generated images",
            labels={"dataset": "{name}"},
        ),
    log:
        LOGS / "report" / "examples-{name}.log",
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
        paper=Path(workflow.basedir) / "config" / "config.yaml",
    output:
        yaml=RESULTS / "config.yaml",
        html=report(RESULTS / "report" / "config.html", caption="../report/config.rst", category="Configuration"),
        differences=report(RESULTS / "report" / "differences.html", caption="../report/differences.rst",
                           category="Configuration"),
    log:
        LOGS / "report" / "config.log",
    params:
        config=run_config_json,
    conda:
        ENV
    shell:
        "python -m contamination run-config --config {params.config:q} --paper-config {input.paper:q}"
        " --out-yaml {output.yaml:q} --out-html {output.html:q} --out-differences {output.differences:q} > {log:q} 2>&1"


rule plan:
    input:
        config=RESULTS / "config.yaml",
        profile=PROFILE / "config.yaml",
    output:
        report(RESULTS / "plan.csv", caption="../report/plan.rst", category="Planning"),
    log:
        LOGS / "report" / "plan.log",
    params:
        profile=PROFILE,
    conda:
        ENV
    shell:
        "python -m contamination plan --configfile {input.config:q} --profile {params.profile:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report_pieces:
    input:
        report_files(),
        RESULTS / "plan.csv",
    localrule: True
