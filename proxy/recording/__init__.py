"""Masked recordings for the medical record: the consult as the doctor saw it, never the face.

It owns recording one consult (:mod:`.recorder`: the masked video as WebM/VP8,
the eye close-up and, only where allowed, audio, :mod:`.media`; each frame's
mask parameters and the consult's events as JSON lines; ``recording.json``,
:mod:`.metadata`), encryption at rest in authenticated chunks (:mod:`.sealed`),
the recordings folder with listing, reading, deletion and retention
(:mod:`.store`) and ``maskproxy report``, the clinical report made from the
stored parameters (:mod:`.report`). It is fed only frames that already left
the proxy masked: no camera frame ever reaches it.

Offers: ``Recorder`` and ``RecorderSettings`` (recorder); ``RecordingStore``
and ``OpenedFile`` (store); ``RecordingError``, ``NotFound``, ``Busy``
(metadata); ``parse_key``, ``generate_key``, ``SealedWriter``,
``SealedReader`` (sealed); ``run_report`` and ``add_arguments`` (report).
Depends on :mod:`proxy.params` and, for the report, :mod:`proxy.exam`,
:mod:`proxy.files` and :mod:`proxy.audit`'s plotting; the consult feeds it.
"""
