"""Files in and out: images (:mod:`.images`, :mod:`.io_tiff`, :mod:`.native`), landmarks (:mod:`.landmarks`),
results and saved transforms (:mod:`.result`, :mod:`.transform_io`, :mod:`.export_itk`), pictures for people
(:mod:`.render`), run folders (:mod:`.rundir`), all written through one atomic temp-file-and-rename helper
(:mod:`.atomic`).

Layer rule: imports :mod:`drmime_pl.core` (and the top-level :mod:`drmime_pl.errors`), never
:mod:`drmime_pl.training`, :mod:`drmime_pl.evaluation` or :mod:`drmime_pl.cli` (``tests/test_architecture.py``).
"""
