"""Benchmarks of the project's hot paths, each against a baseline measured in the same run.

``python -m benchmarks.run`` runs them all and writes ``benchmarks/results/<name>.json``; each
group (generation, loading, manifests, workflow, metrics) is also a module runnable alone with
``python -m benchmarks.<group>``. They are not tests: tests check behaviour, these time it.
"""
