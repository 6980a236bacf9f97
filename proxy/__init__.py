"""maskproxy: a digital mask for video consultations.

Data flow, one module per stage::

    camera frame --tracker--> landmarks --retarget--> MaskParams --renderer--> avatar frame

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
