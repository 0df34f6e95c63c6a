"""A built-in synthetic road world: Cityscapes-like scenes, anomaly benchmarks and an outlier pool.

``scene.generate_frame`` draws one frame; ``writer`` writes whole datasets in the public layouts the
readers in ``m2a_core.datasets`` (and the training data loader) read; ``m2a synth`` is the command.
"""
