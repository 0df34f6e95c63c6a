"""Training: set criterion, mask contrastive loss, AnomalyMix, data, optimiser and the shared train loop.

One concept per module: ``matcher`` (Hungarian assignment), ``point_sampling`` (PointRend-style point
losses), ``criterion`` (set criterion with deep supervision), ``outlier_loss`` (mask contrastive loss),
``anomalymix``, ``augment``, ``data``, ``optim``, ``checkpointing`` and ``loop``. The entry points in
``training/`` only parse a YAML config and call ``loop.train``.
"""
