# Will Large-scale Generative Models Corrupt Future Datasets? (Hataya et al., ICCV 2023), end to end.
#   snakemake --cores 1 --configfile config/smoke.yaml     the whole DAG in miniature on a CPU
#   snakemake --profile profiles/slurm                     the paper at full scale
# config/config.yaml is always loaded first; --configfile overlays it. See config/README.md.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: Path(workflow.basedir) / "config" / "config.yaml"


# common.smk validates the config first (contamination.config.validate: the schema, its defaults and
# every semantic check), with the messages of `python -m contamination check-config`.
include: "workflow/rules/common.smk"
include: "workflow/rules/smoke.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/format_control.smk"
include: "workflow/rules/mixtures.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/caption.smk"
include: "workflow/rules/mae.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/filtering.smk"
include: "workflow/rules/figure6.smk"
include: "workflow/rules/fidelity.smk"
include: "workflow/rules/iddpm.smk"
include: "workflow/rules/recursion.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        get_generated_indexes(),
        get_generated_cards(),
        get_mixture_manifests(),
        get_tables(),
        FIGURE3,
        get_spectra(),
        get_report_files(),
        PLAN,
