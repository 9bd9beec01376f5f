# The paper's tables: one CSV per table (measured beside reported) with its provenance sidecar
# (provenance.py), a named target per table (`snakemake ... table6`) and `tables` for all of them,
# the tidy all_tables.csv and the spectra (report.smk makes those two).


rule table:
    input:
        unpack(table_cells),
    output:
        csv=RESULTS / "tables" / "{table}.csv",
        provenance=RESULTS / "tables" / "{table}.provenance.json",
    log:
        LOGS / "tables" / "{table}.log",
    params:
        spec=table_spec,
        cells=table_cells_argument,
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
            RESULTS / "tables" / f"{_table['name']}.csv",
        localrule: True
        default_target: False


rule tables:
    input:
        all_tables(),
        RESULTS / "tables" / "all_tables.csv",
        spectra_outputs(),
    localrule: True
