"""``maskproxy mask``: mask a video or photo file.

Every output frame is rendered from mask parameters alone (``MaskPipeline``);
frames without a face get the neutral avatar. Video keeps the input's frame
count and timestamps. The output is written to a temporary file beside the
target and renamed at the end, so a failure leaves no partial output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import numpy as np

from proxy.files.media import PHOTO_EXTENSIONS, InputError, VideoReader, is_photo, read_photo, write_photo
from proxy.pipeline import MaskPipeline

VIDEO_CODECS = {"h264": ("libx264", ".mp4"), "vp8": ("libvpx", ".webm"), "vp9": ("libvpx-vp9", ".webm")}
AUDIO_CODECS = {".mp4": "aac", ".webm": "libopus"}


def pick_codec(output: Path) -> str:
    suffixes = [s.lower() for s in output.suffixes]
    if output.suffix.lower() == ".mp4":
        return "h264"
    if output.suffix.lower() == ".webm":
        return "vp9" if ".vp9" in suffixes else "vp8"
    raise InputError(f"{output}: unsupported output format (use .mp4, .webm, or for photos "
                     f"{', '.join(sorted(PHOTO_EXTENSIONS))})")


def run_mask(args: argparse.Namespace) -> int:
    source, target = Path(args.input), Path(args.output)
    if target.resolve() == source.resolve():
        raise InputError("the output must not overwrite the input")
    if not target.parent.is_dir():
        raise InputError(f"{target.parent}: no such folder")
    if is_photo(source) and target.suffix.lower() not in PHOTO_EXTENSIONS:
        raise InputError(f"{target}: a photo's output must be a photo ({', '.join(sorted(PHOTO_EXTENSIONS))})")
    params_file = open(args.params_out, "w") if args.params_out else None  # noqa: SIM115 - closed below
    try:
        with MaskPipeline(threads=args.threads, eye_samples=args.eye_samples,
                          supersample=args.supersample, trim_every=args.trim_every) as pipeline:
            if is_photo(source):
                mask_photo(source, target, params_file, pipeline)
            else:
                mask_video(source, target, params_file, pipeline, args.keep_audio)
    except BaseException:
        if params_file is not None:
            params_file.close()
            Path(args.params_out).unlink(missing_ok=True)
        raise
    if params_file is not None:
        params_file.close()
    return 0


def mask_photo(source: Path, target: Path, params_file: IO[str] | None, pipeline: MaskPipeline) -> None:
    rgb = read_photo(source)
    params, out = pipeline.process(rgb, 0.0, 0)
    write_photo(target, out)
    if params_file is not None:
        params_file.write(json.dumps(params.to_json()) + "\n")


def _progress(total: int | None, label: str):  # noqa: ANN202 - tqdm or a no-op
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=label, disable=not sys.stderr.isatty(), leave=False)


def mask_video(source: Path, target: Path, params_file: IO[str] | None, pipeline: MaskPipeline,
               keep_audio: bool) -> None:
    codec, _ = VIDEO_CODECS[pick_codec(target)]
    temporary = target.with_name(f".{target.name}.part{target.suffix}")
    try:
        with VideoReader(source) as reader:
            _transcode(reader, temporary, codec, params_file, pipeline, keep_audio, target.suffix.lower())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _transcode(reader: VideoReader, temporary: Path, codec: str, params_file: IO[str] | None,
               pipeline: MaskPipeline, keep_audio: bool, suffix: str) -> None:
    in_video = reader.stream
    in_audio = reader.container.streams.audio[0] if keep_audio and reader.has_audio else None
    time_base = in_video.time_base or Fraction(1, 90000)
    width, height = in_video.codec_context.width, in_video.codec_context.height
    # 4:2:0 needs even sides: an odd input gets one repeated pixel row/column.
    out_w, out_h = width + width % 2, height + height % 2
    with av.open(str(temporary), "w") as output, _progress(reader.frame_count, reader.path.name) as bar:
        stream = output.add_stream(codec, rate=Fraction(in_video.average_rate or 30).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        elif codec.startswith("libvpx"):
            stream.options = {"crf": "12", "b": "4M", "deadline": "good", "cpu-used": "4"}
        audio_out = None
        if in_audio is not None:
            audio_out = output.add_stream(AUDIO_CODECS[suffix], rate=in_audio.rate or 48000)
        start_pts: int | None = None
        index = 0
        last_pts = -1
        streams = [in_video] + ([in_audio] if in_audio is not None else [])
        for packet in reader.container.demux(*streams):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                raise InputError(f"{reader.path}: decoding failed ({exc.__class__.__name__})") from None
            for frame in frames:
                if packet.stream is in_audio:
                    frame.pts = None
                    for out_packet in audio_out.encode(frame):  # type: ignore[union-attr]
                        output.mux(out_packet)
                    continue
                if start_pts is None:
                    start_pts = frame.pts or 0
                pts = frame.pts if frame.pts is not None else last_pts + 1
                t = float((pts - start_pts) * time_base)
                rgb = frame.to_ndarray(format="rgb24")
                params, out = pipeline.process(rgb, t, index)
                if (out_w, out_h) != (width, height):
                    out = np.pad(out, ((0, out_h - height), (0, out_w - width), (0, 0)), mode="edge")
                video_frame = av.VideoFrame.from_ndarray(out, format="rgb24")
                video_frame.pts = max(pts, last_pts + 1)
                video_frame.time_base = time_base
                last_pts = video_frame.pts
                for out_packet in stream.encode(video_frame):
                    output.mux(out_packet)
                if params_file is not None:
                    params_file.write(json.dumps(params.to_json()) + "\n")
                index += 1
                bar.update(1)
        for out_packet in stream.encode():
            output.mux(out_packet)
        if audio_out is not None:
            for out_packet in audio_out.encode():
                output.mux(out_packet)
    if index == 0:
        raise InputError(f"{reader.path}: has no video frames")
