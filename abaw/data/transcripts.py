"""Whisper transcripts with timestamps, in the formats Whisper writes: ``.json`` (its
``segments`` list), ``.srt``, ``.vtt``, ``.tsv`` (milliseconds), or ``.txt`` (text alone, no
timestamps: one segment over the whole video).

BAH ships a ``transcription/`` folder whose exact format is unconfirmed, so every one of
Whisper's output formats is read, and a file that is none of them is an error naming it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from abaw.data.annotations import decode_lines, read_bytes
from abaw.data.records import DataError
from abaw.data.videolevel import video_stem

SUFFIXES = (".json", ".srt", ".vtt", ".tsv", ".txt")
_CUE = re.compile(r"^\s*(?P<start>[\d:.,]+)\s*-->\s*(?P<end>[\d:.,]+)")


@dataclass(frozen=True)
class Segment:
    """One stretch of speech: ``start`` and ``end`` in seconds (``end`` may be inf for a
    transcript without timestamps), and its text."""

    start: float
    end: float
    text: str


def transcript_key(path: Path) -> str:
    """The video stem a transcript file belongs to: its name without the transcript suffix and
    without a video extension before it (``q1_Video.mp4.json`` -> ``q1_Video``)."""
    name = path.name
    suffix = next((s for s in SUFFIXES if name.lower().endswith(s)), "")
    return video_stem(name[: len(name) - len(suffix)])


def index_transcripts(folder: Path) -> dict[str, Path]:
    """Transcript files under ``folder`` (any depth) by the video stem they belong to; where one
    video has several formats the first suffix of :data:`SUFFIXES` wins (JSON holds the most)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    rank = {suffix: i for i, suffix in enumerate(SUFFIXES)}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in rank:
            key = transcript_key(path)
            if key not in found or rank[path.suffix.lower()] < rank[found[key].suffix.lower()]:
                found[key] = path
    return found


def parse_time(text: str, path: Path, line: int | None = None) -> float:
    """Seconds from ``12.5``, ``01:02.5``, ``00:01:02,500`` (SRT's comma) or ``00:01:02.500``."""
    parts = text.strip().replace(",", ".").split(":")
    try:
        if len(parts) > 3 or not all(parts):
            raise ValueError
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60.0 + float(part)
    except ValueError:
        raise DataError(path, f"{text.strip()!r} is not a time (seconds, or HH:MM:SS.mmm)", line) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise DataError(path, f"{text.strip()!r} is not a time (seconds, or HH:MM:SS.mmm)", line)
    return seconds


def read_transcript(path: Path) -> list[Segment]:
    """The segments of one transcript file, in file order.

    Raises:
        DataError: unreadable file, unknown suffix, malformed JSON or cue line, a segment that
            ends before it starts; naming the file (and line where there is one).
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(path, f"not a transcript: expected one of {', '.join(SUFFIXES)}")
    data = read_bytes(path)
    if suffix == ".json":
        segments = _json_segments(path, data)
    elif suffix in (".srt", ".vtt"):
        segments = _cue_segments(path, decode_lines(data, path))
    elif suffix == ".tsv":
        segments = _tsv_segments(path, decode_lines(data, path))
    else:
        text = " ".join(line for line in decode_lines(data, path) if line)
        segments = [Segment(0.0, math.inf, text)] if text else []
    return segments


def _segment(path: Path, start: float, end: float, text: str, line: int | None = None) -> Segment:
    if end < start:
        raise DataError(path, f"segment ends at {end:g} s before it starts at {start:g} s", line)
    return Segment(start, end, text.strip())


def _json_segments(path: Path, data: bytes) -> list[Segment]:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", None)
        raise DataError(path, f"not a Whisper JSON transcript: {getattr(e, 'msg', e)}", line) from None
    items = value.get("segments") if isinstance(value, dict) else value
    if items is None and isinstance(value, dict) and isinstance(value.get("text"), str):
        return [Segment(0.0, math.inf, value["text"].strip())] if value["text"].strip() else []
    if not isinstance(items, list):
        raise DataError(path, "not a Whisper JSON transcript: expected a 'segments' list")
    segments = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"start", "end", "text"} <= item.keys():
            raise DataError(path, f"segment {i}: expected start, end and text")
        try:
            start, end = float(item["start"]), float(item["end"])
        except (TypeError, ValueError):
            raise DataError(path, f"segment {i}: start/end {item['start']!r}/{item['end']!r} are not "
                                  "seconds") from None
        segments.append(_segment(path, start, end, str(item["text"])))
    return segments


def _cue_segments(path: Path, lines: list[str]) -> list[Segment]:
    """SRT and WebVTT: a ``start --> end`` line, then the text lines up to a blank line."""
    segments, index = [], 0
    while index < len(lines):
        match = _CUE.match(lines[index])
        if match is None:
            index += 1  # numbers, the WEBVTT header, notes: nothing timed
            continue
        number = index + 1
        start, end = parse_time(match["start"], path, number), parse_time(match["end"], path, number)
        text = []
        index += 1
        while index < len(lines) and lines[index]:
            text.append(lines[index])
            index += 1
        segments.append(_segment(path, start, end, " ".join(text), number))
    return segments


def _tsv_segments(path: Path, lines: list[str]) -> list[Segment]:
    """Whisper's TSV: a ``start<TAB>end<TAB>text`` header, then milliseconds and text."""
    segments = []
    for index, text in enumerate(lines):
        fields = text.split("\t", 2)
        if index == 0 and fields[0].strip().lower() == "start":
            continue
        if len(fields) != 3:
            raise DataError(path, f"expected start, end and text separated by tabs, got {text!r}", index + 1)
        try:
            start, end = int(fields[0]) / 1000.0, int(fields[1]) / 1000.0
        except ValueError:
            raise DataError(path, f"start/end {fields[0]!r}/{fields[1]!r} are not milliseconds", index + 1) from None
        segments.append(_segment(path, start, end, fields[2], index + 1))
    return segments
