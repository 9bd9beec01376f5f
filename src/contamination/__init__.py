"""Measure how images from large generative models corrupt vision datasets (Hataya et al., ICCV 2023).

Every decision of the workflow lives in this package; the Snakemake rules call its command line,
``python -m contamination <verb>``. Modules import heavy libraries (torch, diffusers, pandas)
inside functions so that commands which only touch tables start quickly.
"""

__version__ = "0.1.0"
