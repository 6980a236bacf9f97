"""Prometheus metrics of one server (its own registry: no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.consult.costs import CostMeter

STAGE_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.025, 0.033, 0.05, 0.1, 0.25)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    """Consults, frame rate, per-stage timings, dropped frames and errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consults = Gauge("maskproxy_consults", "Open consults", registry=r)
        self.peers = Gauge("maskproxy_peers", "Connected peers", ["role"], registry=r)
        self.frames = Counter("maskproxy_masked_frames", "Masked frames sent", registry=r)
        self.dropped = Counter("maskproxy_dropped_frames", "Camera frames dropped to stay real-time", registry=r)
        self.errors = Counter("maskproxy_mask_errors", "Frames whose masking failed (placeholder sent)",
                              registry=r)
        self.fps = Gauge("maskproxy_mask_fps", "Masked frames per second, summed over consults", registry=r)
        self.low_cameras = Gauge("maskproxy_low_bitrate_cameras",
                                 "Consults whose patient camera arrives below LOW_CAMERA_KBPS (the eye signals lose "
                                 "accuracy)", registry=r)
        self.stage = Histogram("maskproxy_stage_seconds", "Time per masking stage", ["stage"],
                               buckets=STAGE_BUCKETS, registry=r)
        self.latency = Histogram("maskproxy_added_latency_seconds",
                                 "Camera frame received to masked frame encoded, ready to send",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("maskproxy_api_requests", "API requests by status class", ["status"], registry=r)
        self.refused = Counter("maskproxy_refused_keyframes",
                               "Camera keyframes over max_decode_pixels, dropped before decoding", registry=r)
        self.channel_skipped = Counter("maskproxy_channel_skipped",
                                       "Data-channel messages skipped because the peer's channel was backed up",
                                       registry=r)
        #: CPU seconds per part of the live path (maskproxy_cpu_seconds_total{part}); read by ``bench --live``.
        self.costs = CostMeter(r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
