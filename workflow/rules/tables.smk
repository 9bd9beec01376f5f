# The paper's tables: one CSV per table (measured beside reported), a named target per table
# (`snakemake ... table6`) and `tables` for all of them.


rule table:
    input:
        unpack(table_cells),
    output:
        RESULTS / "tables" / "{table}.csv",
    log:
        LOGS / "tables" / "{table}.log",
    params:
        spec=table_spec,
        cells=table_cells_argument,
    conda:
        ENV
    shell:
        "python -m contamination table --spec {params.spec:q} --cells {params.cells:q}"
        " --out {output} > {log} 2>&1"


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
    localrule: True
