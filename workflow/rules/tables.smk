# The paper's tables: one CSV per table (measured beside reported) with its provenance sidecar
# (provenance.py), a named target per table (`snakemake ... table6`) and per group of tables
# (tables[].group, e.g. `generators`: their CSVs, report pages and plots), `tables` for all of
# them, the tidy all_tables.csv and the spectra (report.smk makes those two).


rule table:
    input:
        unpack(get_table_cells),
    output:
        csv=table_path("{table}"),
        provenance=table_path("{table}", "provenance.json"),
    log:
        LOGS / "tables" / "{table}.log",
    benchmark:
        BENCHMARKS / "tables" / "{table}.tsv"
    params:
        spec=get_table_spec,
        cells=get_table_cells_argument,
    conda:
        ENV
    shell:
        "python -m contamination table --spec {params.spec:q} --cells {params.cells:q}"
        " --out {output.csv:q} --provenance {output.provenance:q} > {log:q} 2>&1"


for _table in config["tables"]:

    rule:
        name:
            _table["name"]
        input:
            table_path(_table["name"]),
        localrule: True
        default_target: False


for _group in dict.fromkeys(table["group"] for table in config["tables"] if "group" in table):

    rule:
        name:
            _group
        input:
            [path for table in config["tables"] if table.get("group") == _group
             for path in (table_path(table["name"]), table_page_path(table["name"]))],
        localrule: True
        default_target: False


rule tables:
    input:
        get_tables(),
        ALL_TABLES,
        get_spectra_outputs(),
    localrule: True
