"""Which files are videos: the container suffixes known to hold video, and for any other file
found where videos are kept, a look inside it (PyAV) that decides and says why.

Teams keep their clips in whatever container they came in (FLV, MPEG-TS, WMV, ...), so a
fixed list of suffixes alone would drop some without a word. A file is a video when its suffix
is a known video container (:data:`VIDEO_CONTAINERS`, not opened: a broken one is named where
it is decoded). A file with any other suffix that is not plainly something else (text, image,
audio, archive: :data:`NOT_VIDEO_SUFFIXES`; hidden files) is opened, and is a video when the
decoder finds a video stream with more than one frame. :func:`video_file_verdict` says what
it made of a file, so that the reader can name every file it skipped or took on a guess.
"""

from __future__ import annotations

import stat
from functools import lru_cache
from pathlib import Path

#: Suffixes (lower case) of the video containers FFmpeg demuxes that teams meet.
VIDEO_CONTAINERS = (
    ".mp4", ".m4v", ".mov", ".qt", ".avi", ".divx", ".mkv", ".webm", ".flv", ".f4v", ".wmv", ".asf",
    ".mpg", ".mpeg", ".m2v", ".vob", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".dv",
    ".rm", ".rmvb",
)

#: Suffixes of files that are plainly not videos, never opened: annotations, lists and notes,
#: still images (a JPEG opens as a one-frame video), audio, archives, saved arrays.
NOT_VIDEO_SUFFIXES = frozenset((
    ".txt", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".xml", ".md", ".rst", ".html", ".htm",
    ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".log", ".ini", ".cfg", ".db", ".nfo", ".srt", ".vtt",
    ".ass", ".ssa", ".sub", ".py", ".sh", ".md5", ".sha256",
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic", ".svg", ".ico",
    ".wav", ".mp3", ".flac", ".aac", ".m4a", ".opus", ".wma", ".aif", ".aiff",
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar",
    ".npy", ".npz", ".pkl", ".pickle", ".pt", ".pth", ".h5", ".hdf5",
))


def is_video_container(path: str | Path) -> bool:
    """True if the suffix of ``path`` is one of :data:`VIDEO_CONTAINERS` (any case)."""
    return Path(path).suffix.lower() in VIDEO_CONTAINERS


def video_file_verdict(path: str | Path) -> tuple[bool, str | None]:
    """``(is_video, note)`` for a file found where videos are kept.

    A known container is a video, with no note; a hidden file or one of
    :data:`NOT_VIDEO_SUFFIXES` is not, with no note; any other file is opened
    (:func:`why_not_a_video`): a video with a note saying it was taken on a look inside,
    or not a video with a note giving the reason.
    """
    path = Path(path)
    if is_video_container(path):
        return True, None
    if path.name.startswith(".") or path.suffix.lower() in NOT_VIDEO_SUFFIXES:
        return False, None
    kind = f"'{path.suffix}'" if path.suffix else "no suffix"
    reason = why_not_a_video(path)
    if reason is None:
        return True, (f"read as a video: {kind} is not a known video container, but the file "
                      "decodes as a video of more than one frame")
    return False, f"not read as a video ({kind} is not a known video container): {reason}"


def why_not_a_video(path: str | Path) -> str | None:
    """None if the decoder opens ``path`` as a video of more than one frame, else why not
    ("no video stream", "one frame only", "cannot be opened: ..."). Cheap: the container
    header and at most two video packets are read; a file unchanged since it was last looked
    at is not opened again."""
    path = Path(path)
    try:
        facts = path.stat()
    except OSError as e:
        return f"cannot be opened: {e.strerror}"
    if not stat.S_ISREG(facts.st_mode):
        return "not a regular file"  # a pipe or device would block the reader, never end
    return _probe(str(path), facts.st_size, facts.st_mtime_ns)


@lru_cache(maxsize=4096)
def _probe(path: str, size: int, mtime_ns: int) -> str | None:
    """:func:`why_not_a_video` for a file of this size and modification time (the cache key)."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "no video stream"
            frames = 0
            for packet in container.demux(container.streams.video[0]):
                frames += bool(packet.size)  # the demuxer's last packet is an empty flush marker
                if frames > 1:
                    return None
            return "one frame only (a still image)" if frames else "no video frames"
    except (av.FFmpegError, OSError) as e:
        return f"cannot be opened: {getattr(e, 'strerror', None) or e}"
