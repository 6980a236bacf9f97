"""Media files: ``maskproxy track`` and ``maskproxy mask`` on videos and photos.

It owns reading and writing photos and anything PyAV decodes (:mod:`.media`),
per-frame parameters as JSON lines (:mod:`.track`) and masked output files
(:mod:`.mask`).

Offers: ``run_track``, ``run_mask``, and from :mod:`.media` ``InputError``,
``VideoReader``, ``read_photo`` and ``iter_input``. Depends on :mod:`proxy.pipeline`
and below.
"""
