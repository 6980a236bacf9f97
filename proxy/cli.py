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


def _bench(args: argparse.Namespace) -> int:
    from proxy.bench import run_bench

    return run_bench(args)


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
