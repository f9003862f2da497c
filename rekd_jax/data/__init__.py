"""Data: TFDS ArrayRecord sources, the index-based loader, on-device augmentation.

Modules: ``pipeline`` (config block and ``create``), ``loader`` (sharding, shuffling,
batching, iterator state), ``sources`` (reading, missing-dataset errors), ``augment`` (pure
JAX MoCo v2 views), ``embedded`` (the procedural ``rekd_shapes`` dataset), ``prepare``
(folder -> ArrayRecord command). Import the module you need; nothing here imports TensorFlow.
"""
