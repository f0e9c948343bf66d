"""Side-by-side benchmark of stock nnU-Net and the plugin: runner, metrics, tables and plots.

``run_benchmark`` trains every system on every dataset, fold and seed at the same budget and writes
``results.csv``, ``results.md`` and PNG plots. Importing this package does not import torch or nnunetv2.
"""
