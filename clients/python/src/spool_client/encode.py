"""Typed builders for the encode job spec (docs/encode-jobs.md), checked
here with the worker's rules so a bad job is refused before it reaches
Redis. The field names and values are those of `docs/encode-job.schema.json`
(the tests check every built job against that schema)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidJob

Codec = Literal["h264", "hevc", "av1"]
Preset = Literal["fastest", "fast", "medium", "slow", "slowest"]
Hardware = Literal["auto", "nvenc", "cpu"]

MAX_RENDITIONS = 8
MAX_WIDTH = 7680
MAX_HEIGHT = 4320
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Rendition:
    """One output rendition: a codec and a size, with rate control."""

    codec: Codec = "h264"
    height: int | None = None
    width: int | None = None
    bitrate_kbps: int | None = None
    quality: int | None = None
    preset: Preset = "medium"
    keyframe_interval_s: float | None = None
    name: str | None = None

    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.height is not None:
            return f"{self.height}p"
        if self.width is not None:
            return f"{self.width}w"
        return "source"


@dataclass(frozen=True)
class Mp4:
    """MP4 output: the file (`<stem>_<rendition>.mp4` each in a ladder)."""

    path: str


@dataclass(frozen=True)
class Hls:
    """HLS output: a directory (or key prefix) with a master playlist."""

    path: str
    segment_s: float = 6.0


@dataclass(frozen=True)
class Audio:
    """`aac` (encode once, at `bitrate_kbps`), `copy`, or `none`."""

    mode: Literal["aac", "copy", "none"] = "aac"
    bitrate_kbps: int = 128


@dataclass(frozen=True)
class EncodeJob:
    """An encode job: enqueue it as the payload (`q.enqueue(EncodeJob(...))`).

    `output` is an `Mp4` or an `Hls`; its path, like `input`, is relative to
    the worker's roots or an `s3://bucket/key`.
    """

    input: str
    output: Mp4 | Hls
    renditions: list[Rendition] = field(default_factory=lambda: [Rendition()])
    audio: Audio = field(default_factory=Audio)
    hardware: Hardware = "auto"
    allow_truncated: bool = False
    # The encode's own time limit in seconds (the worker's
    # SPOOL_MAX_JOB_TIMEOUT caps it); None: the worker's.
    timeout_s: int | None = None
    # Split into chunks of about this many seconds at the input's
    # keyframes, encoded in parallel by the queue's workers and joined
    # (docs/encode-jobs.md, "Chunked encodes"); not for http(s) inputs.
    chunk_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, after checking it."""
        self.validate()
        renditions = []
        for r in self.renditions:
            d: dict[str, Any] = {"codec": r.codec, "preset": r.preset}
            for k in ("name", "width", "height", "bitrate_kbps", "quality", "keyframe_interval_s"):
                v = getattr(r, k)
                if v is not None:
                    d[k] = v
            renditions.append(d)
        audio: dict[str, Any] = {"mode": self.audio.mode}
        if self.audio.mode == "aac":
            audio["bitrate_kbps"] = self.audio.bitrate_kbps
        container: dict[str, Any] = (
            {"format": "hls", "segment_s": self.output.segment_s}
            if isinstance(self.output, Hls)
            else {"format": "mp4"}
        )
        spec: dict[str, Any] = {
            "input": self.input,
            "output": self.output.path,
            "renditions": renditions,
            "audio": audio,
            "container": container,
            "hardware": self.hardware,
            "allow_truncated": self.allow_truncated,
        }
        if self.timeout_s is not None:
            spec["timeout_s"] = self.timeout_s
        if self.chunk_s is not None:
            spec["chunking"] = {"target_s": self.chunk_s}
        return spec

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def validate(self) -> None:
        """Raises `InvalidJob` naming the first impossible field (the worker's
        rules with its default limits; a worker may set tighter ones)."""
        t = self.timeout_s
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 31 * 86_400
        ):
            raise InvalidJob("timeout_s", f"{t!r} must be whole seconds within 1..=2678400")
        c = self.chunk_s
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not 2 <= c <= 3600:
                raise InvalidJob("chunking.target_s", f"{c!r} must be within 2..=3600 seconds")
            lower = self.input.lower() if isinstance(self.input, str) else ""
            if lower.startswith(("http://", "https://")):
                raise InvalidJob(
                    "chunking",
                    "needs an input every worker can read (a path or s3://), not http(s)",
                )
        for name, v in (("input", self.input), ("output", self.output.path)):
            if not isinstance(v, str) or not v.strip():
                raise InvalidJob(name, "is empty")
            if v[:5].lower() == "s3://":
                _check_s3(name, v)
        if not isinstance(self.output, (Mp4, Hls)):
            raise InvalidJob("output", "must be Mp4(...) or Hls(...)")
        if not 1 <= len(self.renditions) <= MAX_RENDITIONS:
            raise InvalidJob("renditions", f"must hold 1 to {MAX_RENDITIONS} renditions")
        seen: set[str] = set()
        for i, r in enumerate(self.renditions):
            f = f"renditions[{i}]"
            if r.codec not in ("h264", "hevc", "av1"):
                raise InvalidJob(f"{f}.codec", f"{r.codec!r} is not h264, hevc or av1")
            if r.codec == "av1" and isinstance(self.output, Hls):
                raise InvalidJob(
                    f"{f}.codec",
                    "av1 cannot go in HLS (its segments are MPEG-TS): use h264 or hevc, or Mp4",
                )
            if r.preset not in ("fastest", "fast", "medium", "slow", "slowest"):
                raise InvalidJob(f"{f}.preset", f"{r.preset!r} is not a preset")
            if r.width is None and r.height is None and len(self.renditions) > 1:
                raise InvalidJob(f"{f}.height", "is required in a ladder")
            for dim, size, hi in (
                ("width", r.width, MAX_WIDTH),
                ("height", r.height, MAX_HEIGHT),
            ):
                if size is not None and (size < 16 or size > hi or size % 2):
                    raise InvalidJob(f"{f}.{dim}", f"{size} must be even and within 16..={hi}")
            if r.bitrate_kbps is not None and r.quality is not None:
                raise InvalidJob(f"{f}.quality", "give bitrate_kbps or quality, not both")
            if r.bitrate_kbps is not None and not 50 <= r.bitrate_kbps <= 200_000:
                raise InvalidJob(f"{f}.bitrate_kbps", f"{r.bitrate_kbps} is outside 50..=200000")
            qmax = 63 if r.codec == "av1" else 51
            if r.quality is not None and not 0 <= r.quality <= qmax:
                raise InvalidJob(f"{f}.quality", f"{r.quality} is outside 0..={qmax}")
            gop = r.keyframe_interval_s
            if gop is not None and not 0.1 <= gop <= 60:
                raise InvalidJob(f"{f}.keyframe_interval_s", "must be within 0.1..=60")
            label = r.label()
            if not _NAME.match(label):
                raise InvalidJob(f"{f}.name", "must be 1 to 64 letters, digits, - or _")
            if label in seen:
                raise InvalidJob(f"{f}.name", f"{label!r} is used twice")
            seen.add(label)
        if self.audio.mode not in ("aac", "copy", "none"):
            raise InvalidJob("audio.mode", f"{self.audio.mode!r} is not aac, copy or none")
        if self.audio.mode == "aac" and not 16 <= self.audio.bitrate_kbps <= 512:
            raise InvalidJob("audio.bitrate_kbps", f"{self.audio.bitrate_kbps} is outside 16..=512")
        if isinstance(self.output, Hls) and not 1 <= self.output.segment_s <= 60:
            raise InvalidJob("container.segment_s", "must be within 1..=60")
        if self.hardware not in ("auto", "nvenc", "cpu"):
            raise InvalidJob("hardware", f"{self.hardware!r} is not auto, nvenc or cpu")


def _check_s3(name: str, uri: str) -> None:
    """The key rules of crates/encode-spec/src/s3.rs."""
    rest = uri[5:]
    bucket, sep, key = rest.partition("/")
    if not sep or not key:
        raise InvalidJob(name, "names a bucket but no key: write s3://bucket/key")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidJob(name, f"has bucket name {bucket!r}")
    if len(key.encode()) > 1024:
        raise InvalidJob(name, "has a key over 1024 bytes")
    if any(ord(ch) < 32 or ch in "\\\x7f" for ch in key):
        raise InvalidJob(name, "has a key with a control character or a backslash")
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise InvalidJob(name, f"has key {key!r} with an empty, '.' or '..' segment")
