"""The remote eye examination: guided eye-movement tests and the clinical numbers they give.

It owns the patient's screen geometry and viewing distance (:mod:`.screen`), the
target schedules of the guided tests (:mod:`.targets`), the small data-channel
vocabulary that starts and stops them (:mod:`.commands`), timestamped parameter
streams with gaps (:mod:`.traces`), per-eye calibration of gaze to degrees of
visual angle (:mod:`.calibration`), the clinical measures themselves
(:mod:`.measures`: pursuit gain, saccades, fixation stability, deviation in
prism dioptres, nystagmus, MRD and ptosis, blinks) and one consult's
examination state (:mod:`.session`). Pure numpy: the live proxy (per consult,
off the event loop), recordings and reports can all use it. It sees only
:class:`~proxy.params.MaskParams`, never a picture, and keeps nothing beyond the
consult.

Offers: ``ExamSession`` and ``Outgoing`` (session); ``Screen`` (screen);
``TargetSchedule`` and the builders ``pursuit``, ``saccades``, ``fixation``,
``nine_positions``, ``calibration_targets`` (targets); ``parse_message``,
``ExamCommand``, ``ScreenReport``, ``PatientEvent``, ``Rejected`` (commands);
``Traces`` (traces); ``Calibration``, ``EyeCalibration`` (calibration); and the
measures ``pursuit_gain``, ``saccade_metrics``, ``fixation_stability``,
``nine_position_deviations``, ``deviation``, ``nystagmus``, ``lids``,
``blinks`` (measures). Depends only on :mod:`proxy.params` and, for the blink
rule, :mod:`proxy.tracking.blinks`.
"""
