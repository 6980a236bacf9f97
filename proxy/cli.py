"""The ``maskproxy`` command line: track, mask, serve, bench, audit, report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from proxy import __version__
from proxy.files.media import InputError


def _track(args: argparse.Namespace) -> int:
    from proxy.files.track import run_track

    run_track(args.input, landmarks=args.landmarks, eye_samples=args.eye_samples)
    return 0


def _mask(args: argparse.Namespace) -> int:
    from proxy.files.mask import run_mask

    return run_mask(args)


def _audit(args: argparse.Namespace) -> int:
    from proxy.audit.command import run_audit

    return run_audit(args)


def _report(args: argparse.Namespace) -> int:
    from proxy.recording.report import run_report

    return run_report(args)


def _bench(args: argparse.Namespace) -> int:
    from proxy.bench.offline import run_bench

    return run_bench(args)


SERVE_FLAGS = {
    "host": (str, "address to listen on (default 127.0.0.1)"),
    "port": (int, "port (default 8080)"),
    "public_url": (str, "base URL for the links handed out, e.g. https://consult.clinic.example"),
    "cert": (str, "TLS certificate chain (PEM)"),
    "key": (str, "TLS private key (PEM)"),
    "turn_secret": (str, "TURN REST shared secret (coturn static-auth-secret); prefer the environment"),
    "turn_ttl": (float, "lifetime of generated TURN credentials, s (default 3600)"),
    "turn_username": (str, "static TURN username (when the TURN server has no REST secret)"),
    "turn_password": (str, "static TURN password; prefer the environment"),
    "max_consults": (int, "concurrent consults; more get 503 (default 8)"),
    "room_idle_timeout": (float, "close a consult nobody joined for this long, s (default 1800)"),
    "room_max_lifetime": (float, "close any consult after this long, s (default 14400)"),
    "peer_timeout": (float, "release a peer disconnected this long, s (default 20)"),
    "max_body": (int, "largest API request body, bytes (default 65536)"),
    "rate_limit": (float, "API requests per second per client address (default 10)"),
    "rate_burst": (int, "API request burst per client address (default 40)"),
    "trusted_proxies": (str, "reverse proxies whose X-Forwarded-For names the client, comma-separated addresses or "
                        "CIDRs, e.g. 127.0.0.1 (default none: the direct peer is the client)"),
    "max_frame_pixels": (int, "camera frames above this many pixels are downscaled (default 921600)"),
    "max_decode_pixels": (int, "largest camera picture decoded, pixels: advertised as VP8 max-fs; bigger "
                          "keyframes are dropped before decoding (default 2088960 = 1920x1088)"),
    "self_view_fps": (float, "frame rate of the patient's masked self-view: 0 = every frame (default), "
                      "above 0 = every other frame"),
    "threads": (int, "ONNX Runtime threads per consult (default 1)"),
    "eye_samples": (int, "eye crops averaged per eye: 4 cut gaze jitter by a quarter, about 5 ms more per frame "
                    "(default 1)"),
    "supersample": (int, "draw the avatar k x k times larger and average it down: smoother edges, about k*k times "
                    "the render cost (default 1)"),
    "trim_every": (int, "read the avatar back every N frames and trim its gaze so it reads as measured; 0 = never "
                   "(default 8)"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    "recordings_dir": (str, "folder where consults are recorded (default: none, nothing is recorded)"),
    "retention_days": (float, "delete recordings that started this many days ago (default: keep them)"),
    "recording": (str, "off, allowed (the doctor records once the patient consents) or required (every consult "
                  "asks the patient at its start) (default allowed, with --recordings-dir)"),
    "cluster": (str, "run consults as Ray actors on a cluster's media nodes: the Ray address (head:6379, auto, "
                "ray://head:10001); needs the cluster extra (default: every consult in this process)"),
}


def _serve(args: argparse.Namespace) -> int:
    from proxy.consult.config import Config
    from proxy.consult.logs import setup_logging
    from proxy.consult.server import run_server

    flags = {name: getattr(args, name) for name in SERVE_FLAGS}
    flags["ice_servers"] = args.ice_server
    flags["self_signed"] = True if args.self_signed else None
    flags["log_json"] = True if args.log_json else None
    flags["refuse_private_candidates"] = True if args.refuse_private_candidates else None
    flags["recording_audio"] = True if args.recording_audio else None
    try:
        config = Config.load(args.config, flags=flags)
    except ValueError as exc:
        print(f"maskproxy serve: error: {exc}", file=sys.stderr)
        return 2
    setup_logging("DEBUG" if args.verbose else config.log_level, config.log_json)
    backend = None
    if config.cluster:  # Ray is imported only here, only in cluster mode
        try:
            from proxy.cluster.registry import ClusterRegistry
        except ImportError as exc:
            print(f"maskproxy serve: error: --cluster needs the cluster extra (pip install 'maskproxy[cluster]'): "
                  f"{exc}", file=sys.stderr)
            return 2
        backend = ClusterRegistry
    try:
        return run_server(config, backend)
    except (ValueError, OSError) as exc:
        print(f"maskproxy serve: error: {exc}", file=sys.stderr)
        return 2


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def eye_samples_argument(parser: argparse.ArgumentParser) -> None:
    """``--eye-samples`` of the commands that read files (track, mask, audit)."""
    from proxy.tracking.tracker import OFFLINE_EYE_SAMPLES

    parser.add_argument("--eye-samples", type=positive_int, default=OFFLINE_EYE_SAMPLES, metavar="N",
                        help="eye crops averaged per eye: less jitter, N times the eye model's cost "
                        "(default %(default)s for files; live consults use 1)")


def supersample_argument(parser: argparse.ArgumentParser) -> None:
    """``--supersample`` of the commands that render files (mask, audit)."""
    from proxy.avatar.renderer import OFFLINE_SUPERSAMPLE

    parser.add_argument("--supersample", type=positive_int, default=OFFLINE_SUPERSAMPLE, metavar="K",
                        help="draw the avatar at K times the output's width and height and average it down: "
                        "every edge antialiased, so the face's size in pixels does not show in how it is drawn "
                        "(default %(default)s for files, fewer for frames over 4096/K pixels; live consults use 1)")


def trim_argument(parser: argparse.ArgumentParser) -> None:
    """``--trim-every`` of the commands that render files (mask, audit)."""
    parser.add_argument("--trim-every", type=int, default=1, metavar="N",
                        help="read the avatar back every N frames and trim its gaze so that it reads as measured "
                        "(proxy.avatar.trim); 0 = never. Each reading is a tracking pass (default %(default)s for "
                        "files; live consults use 8)")


def jobs_argument(parser: argparse.ArgumentParser) -> None:
    """``--jobs`` of the audit."""
    parser.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                        help="photos and clips worked through side by side, each process with its own models "
                        "(default: one per CPU this process may use; 1 = all in this process). The figures do not "
                        "depend on it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskproxy",
        description="Digital mask for video consultations: replaces the patient's face with an "
        "identity-free avatar that keeps eye, lid and head movements.",
    )
    parser.add_argument("--version", action="version", version=f"maskproxy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    track = commands.add_parser("track", help="print per-frame face and eye signals as JSON lines",
                                description="Track the face and eyes in a video or photo and print one "
                                "JSON object per frame (fields: see README, 'Mask parameters').")
    track.add_argument("input", type=Path, help="video (anything PyAV reads) or photo (jpg, png)")
    track.add_argument("--landmarks", action="store_true",
                       help="also print the 468-point mesh and per-eye contour and iris points (pixels)")
    eye_samples_argument(track)
    track.set_defaults(handler=_track)

    mask = commands.add_parser("mask", help="mask a video or photo file",
                               description="Replace the face in a video or photo with the avatar. Video: same "
                               "frame count and timestamps; H.264 in .mp4, VP8/VP9 in .webm (by the output's "
                               "extension). Photo: same size.")
    mask.add_argument("input", type=Path, help="video (anything PyAV reads) or photo (jpg, png)")
    mask.add_argument("output", type=Path, help="output file: .mp4, .webm (add .vp9.webm for VP9), .jpg or .png")
    mask.add_argument("--params-out", type=Path, metavar="FILE.jsonl",
                      help="also write each frame's mask parameters as JSON lines")
    mask.add_argument("--keep-audio", action="store_true", help="copy the input's audio (dropped by default)")
    mask.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    eye_samples_argument(mask)
    supersample_argument(mask)
    trim_argument(mask)
    mask.set_defaults(handler=_mask)

    from proxy.audit.command import add_arguments as audit_arguments

    audit = commands.add_parser("audit", help="privacy and fidelity audit with an HTML report",
                                description="Re-identification (Rank-1, TAR at FAR 0.01) of masked faces against "
                                "baselines, fidelity of eye signals on videos, and a human test kit.")
    audit_arguments(audit)
    eye_samples_argument(audit)
    supersample_argument(audit)
    trim_argument(audit)
    jobs_argument(audit)
    audit.set_defaults(handler=_audit)

    serve = commands.add_parser(
        "serve", help="run the consult proxy (HTTP API, pages, WebRTC)",
        description="Run the proxy. Settings come from defaults, then --config FILE (TOML, keys as below with "
        "underscores, optionally under [maskproxy]), then MASKPROXY_<NAME> environment variables (e.g. "
        "MASKPROXY_API_KEY, MASKPROXY_TURN_SECRET, MASKPROXY_ICE_SERVERS as a comma-separated list), then "
        "these flags. Without an API key one is generated and printed; a given key is never printed or logged. "
        "MASKPROXY_METRICS_TOKEN (environment or file only) is the Bearer token for /metrics and /readyz; "
        "without it they answer loopback clients only. MASKPROXY_RECORDINGS_KEY (environment or file only) encrypts "
        "recordings at rest: 64 hex digits or base64 of 32 random bytes.")
    serve.add_argument("--config", type=Path, metavar="FILE.toml", help="TOML settings file")
    for name, (kind, text) in SERVE_FLAGS.items():
        serve.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                           help=f"{text} [MASKPROXY_{name.upper()}]")
    serve.add_argument("--self-signed", action="store_true",
                       help="serve HTTPS with a generated self-signed certificate (LAN or trial) "
                       "[MASKPROXY_SELF_SIGNED]")
    serve.add_argument("--ice-server", action="append", default=None, metavar="URL",
                       help="STUN/TURN server for both sides, repeatable: stun:host:3478, "
                       "turn:host:3478?transport=udp [MASKPROXY_ICE_SERVERS]")
    serve.add_argument("--log-json", action="store_true", help="log JSON lines [MASKPROXY_LOG_JSON]")
    serve.add_argument("--refuse-private-candidates", action="store_true",
                       help="ignore ICE candidates of offers in private ranges and mDNS names: for a proxy on the "
                       "internet, so that it cannot be made to probe the local network "
                       "[MASKPROXY_REFUSE_PRIVATE_CANDIDATES]")
    serve.add_argument("--recording-audio", action="store_true",
                       help="also record the patient's sound where they consent to it separately (a voice "
                       "identifies) [MASKPROXY_RECORDING_AUDIO]")
    serve.set_defaults(handler=_serve)

    from proxy.recording.report import add_arguments as report_arguments

    report = commands.add_parser("report", help="clinical report (HTML) of a recording or a masked video",
                                 description="A self-contained HTML report made from the stored mask parameters "
                                 "alone: frames of the masked video, eye traces, eye-exam numbers, test results "
                                 "and marks.")
    report_arguments(report)
    report.set_defaults(handler=_report)

    from proxy.bench.offline import add_arguments as bench_arguments

    bench = commands.add_parser("bench", help="measure the pipeline's speed and print figures",
                                description="Run the masking pipeline over a clip and report per-stage "
                                "timings, beside baselines measured in the same run.")
    bench_arguments(bench)
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except InputError as exc:
        print(f"maskproxy: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
