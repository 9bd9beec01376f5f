"""The SLURM test harness: a one-node cluster, the test profile and the job probe (tests/test_slurm.py)."""
