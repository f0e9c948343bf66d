"""The end-to-end demo on the embedded hippocampus data (``nnunet-resenc demo``, ``make demo``).

``pipeline.run_demo`` runs conversion, planning, training, prediction and evaluation. ``report`` writes the
Markdown summary and figures, and ``steps`` contains the nnU-Net child-process steps that the benchmark shares.
"""
