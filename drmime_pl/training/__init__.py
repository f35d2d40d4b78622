"""Training on PyTorch Lightning: from a pair of images to the optimised transform.

:mod:`.prepare` (loading, checks, pyramids, masks, initial transform), :mod:`.datamodule` (pixel batches),
:mod:`.module` (the LightningModule), :mod:`.callbacks` (stopping rule, NaN guard, interruption, previews),
:mod:`.checkpoint_io`, :mod:`.progress`, :mod:`.signals`, and the pipeline as one function of a config,
:func:`drmime_pl.training.fit.fit`.

Layer rule: imports :mod:`drmime_pl.core` and :mod:`drmime_pl.io`, never :mod:`drmime_pl.evaluation` or
:mod:`drmime_pl.cli` (``tests/test_architecture.py``).
"""
