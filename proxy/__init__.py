"""maskproxy: a digital mask for video consultations.

Data flow, one module per stage::

    camera frame --tracker--> landmarks --retarget--> MaskParams --renderer--> avatar frame

The patient's pixels stop at the tracker; everything after it sees only
:class:`proxy.params.MaskParams`.
"""

__version__ = "0.1.0"
