"""The avatar: the patient's geometry turned into movements, and movements drawn on one shared head.

It owns the template head (:mod:`.template`), retargeting from a
``FaceTrack`` to :class:`~proxy.params.MaskParams` (:mod:`.retarget`, with the
nominal perspective camera of :mod:`.camera`), what is drawn for an eye that was
not measured (:mod:`.hold`), the head,
eyes and lids as geometry (:mod:`.mesh`), the neutral upper body under it (:mod:`.body`),
the OpenGL renderer with the shaders in
``shaders/`` (:mod:`.renderer`) with its framing on both eyes for the doctor's close-up
(:mod:`.closeup`), the calibration that makes our tracker read the avatar as the
parameters say (:mod:`.calibration`), and the closed loop track(render(p)) it is
fitted and checked with (:mod:`.response`). A change to how lids or eyes are drawn or
measured from landmarks belongs here.

Offers: ``Retargeter``, ``AvatarRenderer`` and ``load_template``. Depends on
:mod:`proxy.params`, :mod:`proxy.resources` and, for ``FaceTrack``, :mod:`proxy.tracking`.
"""
