"""Tracking: a camera frame in, the patient's face and eye geometry out.

The only stage that sees the patient's pixels. It owns the ONNX models and how
they are run: BlazeFace (:mod:`.detector`), the 468-point face mesh and the iris
model on rotation-aligned crops (:mod:`.tracker`), jitter filtering that keeps
saccades (:mod:`.smoothing`), ONNX Runtime sessions (:mod:`.onnx`), blink
counting on a measured aperture signal (:mod:`.blinks`), and per eye whether it
could be measured at all (:mod:`.confidence`).

Offers: ``FaceTracker``, ``FaceTrack`` and ``EyeQuality`` (tracker),
``FaceDetector`` (detector), ``BlinkCounter`` and ``count_blinks`` (blinks),
``eye_state`` (confidence). Depends only on
:mod:`proxy.resources`.
"""
