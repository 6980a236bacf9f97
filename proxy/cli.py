"""The ``maskproxy`` command line: track, mask, serve, bench, audit."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from proxy import __version__
from proxy.media import InputError


def _track(args: argparse.Namespace) -> int:
    from proxy.track import run_track

    run_track(args.input, landmarks=args.landmarks)
    return 0


def _mask(args: argparse.Namespace) -> int:
    from proxy.mask import run_mask

    return run_mask(args)


def _audit(args: argparse.Namespace) -> int:
    from proxy.audit import run_audit

    return run_audit(args)


def _bench(args: argparse.Namespace) -> int:
    from proxy.bench import run_bench

    return run_bench(args)


def _serve(args: argparse.Namespace) -> int:
    from proxy.config import Config
    from proxy.server import run_server

    config = Config.from_env(host=args.host, port=args.port, public_url=args.public_url,
                             max_consults=args.max_consults, threads=args.threads)
    return run_server(config)


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
    mask.set_defaults(handler=_mask)

    from proxy.audit import add_arguments as audit_arguments

    audit = commands.add_parser("audit", help="privacy and fidelity audit with an HTML report",
                                description="Re-identification (Rank-1, TAR at FAR 0.01) of masked faces against "
                                "baselines, fidelity of eye signals on videos, and a human test kit.")
    audit_arguments(audit)
    audit.set_defaults(handler=_audit)

    serve = commands.add_parser("serve", help="run the consult proxy (HTTP API, pages, WebRTC)",
                                description="Run the proxy. The API key comes from MASKPROXY_API_KEY; "
                                "when unset, one is generated and printed.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--public-url", help="base URL for the links handed out (default: the request's host)")
    serve.add_argument("--max-consults", type=int, default=None, help="concurrent consults (default 8)")
    serve.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per consult (default 1)")
    serve.set_defaults(handler=_serve)

    from proxy.bench import add_arguments as bench_arguments

    bench = commands.add_parser("bench", help="measure the pipeline's speed and print figures",
                                description="Run the masking pipeline over a clip and report per-stage "
                                "timings, beside baselines measured in the same run.")
    bench_arguments(bench)
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
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
