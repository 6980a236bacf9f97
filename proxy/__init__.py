"""maskproxy: a digital mask for video consultations.

Data flow, one subpackage per stage::

    camera frame --tracking--> FaceTrack --avatar.retarget--> MaskParams --avatar.renderer--> avatar frame
                                                              (pipeline.py runs the three for one stream)
    consult: browser camera -> worker -> pipeline -> masked track -> doctor

The contracts stay at the top: :mod:`proxy.params` (the per-frame parameters,
with units), :mod:`proxy.pipeline` (frame -> params -> avatar frame),
:mod:`proxy.resources` (where models, shaders and pages are) and :mod:`proxy.cli`.
Subpackages: :mod:`proxy.tracking`, :mod:`proxy.avatar`, :mod:`proxy.files`,
:mod:`proxy.consult`, :mod:`proxy.audit`, :mod:`proxy.bench`. Imports point one
way: consult, files, audit, bench -> pipeline -> avatar -> tracking -> params.

The patient's pixels stop at the tracker; everything after it sees only
:class:`proxy.params.MaskParams`.
"""

import os

__version__ = "0.1.0"

# One consult's work runs in one thread; the proxy scales by running consults side by side.
# OpenBLAS would otherwise start a thread per core for the tiny matrix products of the head-pose
# fit, and its spinning threads take cores from the renderer and the other consults. This must
# happen before numpy is imported; a value set by the operator wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
