"""Drawing, sound synthesis and encoding for the procedural sample dataset.

`abaw.sample` decides *what* happens in every frame (expression parameters, head motion,
violent or calm scene); this module turns those numbers into pixels, samples and files:
`encode_faces` writes an Aff-Wild2-style video and its aligned crops, `render_clip` a DVD-style
scene. All drawing is plain PIL on small frames so a whole dataset renders in seconds on two
cores, and encoding is deterministic (`VideoWriter`).

Face parameters are deviations from a resting face, roughly in [-1, 1], in the order of
`PARAMS`; a face pose is ``(cx, cy, scale, angle)``: centre in pixels, face half-height in
pixels, roll in radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

PARAMS = ("eye", "brow", "tilt", "curve", "open", "raise", "press", "cheek")
P = {name: i for i, name in enumerate(PARAMS)}
CROP_SIZE = 112
# Half-extent of an aligned crop, in face half-heights: the whole head plus a margin, as the
# organisers' aligned crops show it.
_CROP_HALF = 1.25
# One time base for variable-frame-rate files: a multiple of both 1/20 s and 1/30 s.
VFR_TIME_BASE = Fraction(1, 600)
# Fixed encoder settings that make the output depend on the input only: one thread; no B-frames
# (they would also leave AVI files without usable timestamps); no macroblock-tree rate control,
# whose quantisers varied between encodes of identical frames in one process (the streams of one
# video in 10 of 50 regenerations with it on, 0 of 100 with it off).
_X264_OPTIONS = {"preset": "veryfast", "crf": "23", "threads": "1", "x264-params": "bframes=0:mbtree=0"}
_AUDIO_CHUNK = 1024

_t = np.linspace(0.0, 2.0 * np.pi, 20, endpoint=False)
_CIRCLE = np.stack([np.cos(_t), np.sin(_t)], axis=1)
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class FaceStyle:
    """Colours of one person, fixed for the whole track."""

    skin: _Colour
    hair: _Colour
    lips: _Colour
    iris: _Colour

    @classmethod
    def random(cls, rng: np.random.Generator) -> FaceStyle:
        """Draw a plausible palette."""
        tone = rng.uniform(0.35, 1.0)
        skin = (int(120 + 120 * tone), int(85 + 110 * tone), int(60 + 100 * tone))
        hair = tuple(int(v) for v in rng.integers(10, 110, 3) * np.array([1.0, 0.8, 0.6]))
        lips = (int(rng.integers(150, 200)), int(rng.integers(50, 80)), int(rng.integers(60, 90)))
        iris = tuple(int(v) for v in rng.integers(20, 120, 3))
        return cls(skin, hair, lips, iris)  # type: ignore[arg-type]


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """(20, 2) points of an axis-aligned ellipse in face coordinates."""
    return _CIRCLE * (rx, ry) + (cx, cy)


def _place(points: np.ndarray, pose: np.ndarray) -> list[tuple[float, float]]:
    """Map (K, 2) face coordinates (y down, half-height 1) to frame pixels under `pose`."""
    cx, cy, scale, angle = pose
    c, s = np.cos(angle), np.sin(angle)
    x, y = points[:, 0], points[:, 1]
    xy = np.stack([cx + scale * (c * x - s * y), cy + scale * (s * x + c * y)], axis=1)
    return [tuple(p) for p in xy.tolist()]


def _mix(a: _Colour, b: _Colour, w: float) -> _Colour:
    w = float(np.clip(w, 0.0, 1.0))
    return tuple(int(round(x + (y - x) * w)) for x, y in zip(a, b))  # type: ignore[return-value]


def _mouth(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip polylines, each (9, 2), in face coordinates.

    Corners rise with a smile (curve > 0) and fall with sadness; the lower lip drops with the
    opening; the upper lip rises on one side only for a raiser (disgust).
    """
    half_width = 0.30 * (1.0 - 0.35 * max(params[P["press"]], 0.0))
    u = np.linspace(-1.0, 1.0, 9)
    x = u * half_width
    base = 0.48 - 0.17 * params[P["curve"]] * u**2
    sneer = 0.13 * max(params[P["raise"]], 0.0) * (1.0 + u) / 2.0 * (1.0 - u**2) * 2.0
    gap = 0.015 + 0.34 * max(params[P["open"]], 0.0)
    upper = np.stack([x, base - sneer], axis=1)
    lower = np.stack([x, base + gap * (1.0 - u**2)], axis=1)
    return upper, lower


def draw_face(draw: ImageDraw.ImageDraw, params: np.ndarray, pose: np.ndarray, style: FaceStyle,
              width: float = 1.0) -> None:
    """Draw one face with expression `params` (len(PARAMS),) at `pose` (4,) onto `draw`; `width`
    scales the face's width (a person's face shape)."""
    line = max(1, int(round(pose[2] * 0.06)))
    draw.polygon(_place(_ellipse(0.0, -0.22, 0.86 * width, 0.95), pose), fill=style.hair)
    draw.polygon(_place(_ellipse(0.0, 0.0, 0.76 * width, 1.0), pose), fill=style.skin)
    cheek = _mix(style.skin, (225, 95, 110), 0.7 * max(params[P["cheek"]], 0.0))
    for side in (-1.0, 1.0):
        draw.polygon(_place(_ellipse(side * 0.44, 0.22, 0.17, 0.12), pose), fill=cheek)
        # Cheek raise also pushes the lower lid up, as AU6 does.
        opening = 0.085 * (1.0 + 0.65 * params[P["eye"]]) - 0.025 * max(params[P["cheek"]], 0.0)
        opening = max(opening, 0.012)
        draw.polygon(_place(_ellipse(side * 0.32, -0.15, 0.15, opening), pose), fill=(245, 245, 240))
        iris = min(0.07, opening)
        draw.polygon(_place(_ellipse(side * 0.32, -0.15, 0.07, iris), pose), fill=style.iris)
        brow_y = -0.40 - 0.17 * params[P["brow"]]
        # Positive tilt lowers the inner ends (anger), negative raises them (sadness, fear).
        inner = (side * 0.12, brow_y + 0.12 * params[P["tilt"]])
        outer = (side * 0.52, brow_y - 0.04 * params[P["tilt"]])
        draw.line(_place(np.array([inner, outer]), pose), fill=style.hair, width=line + 1)
    nose = np.array([(0.0, -0.08), (0.05, 0.2), (-0.04, 0.22)])
    draw.line(_place(nose, pose), fill=_mix(style.skin, (0, 0, 0), 0.35), width=line)
    upper, lower = _mouth(params)
    draw.polygon(_place(np.concatenate([upper, lower[::-1]]), pose), fill=(70, 15, 25))
    lip_width = line if params[P["press"]] > 0.3 else line + 1
    lips = _mix(style.lips, (90, 40, 45), max(params[P["press"]], 0.0))
    draw.line(_place(upper, pose), fill=lips, width=lip_width)
    draw.line(_place(lower, pose), fill=lips, width=lip_width)


def face_box(pose: np.ndarray, width: float = 1.0) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` pixel bounds of the skin outline :func:`draw_face` draws at
    `pose`: the true face box that detection and tracking are measured against."""
    points = np.array(_place(_ellipse(0.0, 0.0, 0.76 * width, 1.0), pose))
    return (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())


def draw_occluder(draw: ImageDraw.ImageDraw, pose: np.ndarray) -> None:
    """Cover the face with a hand-like blob: frames where no face would be detected."""
    draw.polygon(_place(_ellipse(0.1, 0.1, 0.95, 0.8), pose), fill=(205, 160, 130))


def aligned_crop(frame: Image.Image, pose: np.ndarray) -> Image.Image:
    """The (112, 112) RGB crop of the face at `pose`, de-rotated like the organisers' aligned crops."""
    cx, cy, scale, angle = pose
    step = scale * 2.0 * _CROP_HALF / CROP_SIZE
    a, b = step * np.cos(angle), -step * np.sin(angle)
    d, e = step * np.sin(angle), step * np.cos(angle)
    half = CROP_SIZE / 2.0
    coeffs = (a, b, cx - half * (a + b), d, e, cy - half * (d + e))
    return frame.transform((CROP_SIZE, CROP_SIZE), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A static room: vertical colour gradient with a few furniture-like blocks."""
    width, height = size
    top, bottom = rng.integers(40, 220, 3), rng.integers(20, 180, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.4) * height
        draw.rectangle((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def draw_figure(draw: ImageDraw.ImageDraw, x: float, y: float, size: float, arms: tuple[float, float],
                colour: _Colour) -> None:
    """A stick person standing at (x, y) (feet), `size` pixels tall, arms at angles (radians)."""
    head = size * 0.13
    neck, hip = y - size * 0.74, y - size * 0.35
    draw.ellipse((x - head, neck - 2 * head, x + head, neck), fill=colour)
    draw.rectangle((x - size * 0.09, neck, x + size * 0.09, hip), fill=colour)
    width = max(1, int(size * 0.05))
    for side, angle in zip((-1.0, 1.0), arms):
        hand = (x + side * size * 0.35 * np.cos(angle), neck + size * 0.08 - size * 0.35 * np.sin(angle))
        draw.line([(x, neck + size * 0.08), hand], fill=colour, width=width)
        draw.line([(x + side * size * 0.05, hip), (x + side * size * 0.15, y)], fill=colour, width=width)


def voice(times: np.ndarray, arousal: np.ndarray, duration: float, rate: int, pitch: float,
          rng: np.random.Generator) -> np.ndarray:
    """A voiced tone for one speaker: (round(duration * rate),) float32 samples.

    `times` (T,) are the frame times in seconds and `arousal` (T,) the per-frame arousal in
    [-1, 1]; pitch and loudness rise with it. Syllable-rate gating makes it speech-like.
    """
    t = np.arange(int(round(duration * rate))) / rate
    level = (np.interp(t, times, arousal) + 1.0) / 2.0
    f0 = pitch * (0.8 + 0.9 * level)
    phase = 2.0 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(h * phase) / h for h in range(1, 5))
    syllables = np.clip(1.5 * np.sin(2.0 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 6)), 0.0, 1.0)
    return ((0.03 + 0.3 * level**1.5) * syllables * tone).astype(np.float32)


def noise_bed(times: np.ndarray, agitation: np.ndarray, duration: float, rate: int,
              rng: np.random.Generator) -> np.ndarray:
    """Street-like noise whose loudness follows `agitation` (T,) in [0, 1]: (samples,) float32."""
    t = np.arange(int(round(duration * rate))) / rate
    level = np.interp(t, times, agitation)
    hum = 0.02 * np.sin(2.0 * np.pi * 90.0 * t)
    return (hum + (0.01 + 0.2 * level) * rng.standard_normal(t.size)).astype(np.float32)


@dataclass(frozen=True)
class AudioSpec:
    """Audio stream of a written video: rate in Hz, 1 or 2 channels."""

    rate: int
    channels: int


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p) in an mp4 or avi container, with optional audio.

    Deterministic for given inputs: one encoder thread and fixed options. Constant-rate files
    use a time base of 1/fps; variable-rate files (fps None) take explicit times on a 1/600 s
    grid. Audio is AAC in mp4 and 16-bit PCM in avi.
    """

    def __init__(self, path: Path, size: tuple[int, int], fps: Fraction | None, audio: AudioSpec | None) -> None:
        avi = path.suffix == ".avi"
        self._container = av.open(str(path), "w", format="avi" if avi else "mp4")
        self._time_base = VFR_TIME_BASE if fps is None else 1 / fps
        self._video = self._container.add_stream("libx264", rate=fps, options=dict(_X264_OPTIONS))
        self._video.width, self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = self._time_base
        self._audio = None
        self._spec = audio
        self._vfr = fps is None
        if audio is not None:
            layout = "mono" if audio.channels == 1 else "stereo"
            codec = "pcm_s16le" if avi else "aac"
            self._audio = self._container.add_stream(codec, rate=audio.rate, layout=layout)
        self.frames = 0

    def add(self, frame: Image.Image, time: float) -> None:
        """Encode one frame shown at `time` seconds (used for the pts of variable-rate files)."""
        video_frame = av.VideoFrame.from_image(frame)
        video_frame.pts = int(round(time / VFR_TIME_BASE)) if self._vfr else self.frames
        video_frame.time_base = self._time_base
        self._mux(self._video.encode(video_frame))
        self.frames += 1

    def close(self, samples: np.ndarray | None = None) -> None:
        """Flush the video, encode `samples` (channels, S) float32 in [-1, 1] if audio, close."""
        self._mux(self._video.encode())
        if self._audio is not None and self._spec is not None:
            assert samples is not None and samples.shape[0] == self._spec.channels
            self._encode_audio(np.clip(samples, -1.0, 1.0).astype(np.float32))
        self._container.close()

    def _encode_audio(self, samples: np.ndarray) -> None:
        assert self._audio is not None and self._spec is not None
        layout = "mono" if self._spec.channels == 1 else "stereo"
        pcm = self._audio.codec_context.format.name == "s16"
        for start in range(0, samples.shape[1], _AUDIO_CHUNK):
            chunk = samples[:, start:start + _AUDIO_CHUNK]
            if pcm:  # packed 16-bit: channels interleaved in one row
                packed = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
            frame.sample_rate = self._spec.rate
            frame.pts = start
            frame.time_base = Fraction(1, self._spec.rate)
            self._mux(self._audio.encode(frame))
        self._mux(self._audio.encode())

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self._container.mux(packet)


@dataclass(frozen=True)
class Look:
    """How one person differs from another at rest, the same in every video of theirs: a
    resting offset of every face parameter (a mouth that curves up or down when neutral, eyes
    more open, brows higher), a face width, and a voice pitch in Hz. Drawn on top of the
    expression; the labels follow the expression alone, as annotators rate the change from a
    person's neutral face."""

    rest: np.ndarray = field(default_factory=lambda: np.zeros(len(PARAMS)))
    width: float = 1.0
    pitch: float | None = None

    @classmethod
    def random(cls, rng: np.random.Generator) -> Look:
        rest = np.zeros(len(PARAMS))
        for name, spread in (("curve", 0.2), ("eye", 0.2), ("brow", 0.15), ("open", 0.05), ("tilt", 0.1)):
            rest[P[name]] = rng.uniform(-spread, spread)
        return cls(rest, float(rng.uniform(0.88, 1.12)), float(rng.uniform(100, 220)))


@dataclass(frozen=True)
class Face:
    """What one person does in a video, frame by frame (N frames).

    Attributes:
        params: (N, len(PARAMS)) expression parameters.
        motion: (N, 3) head x, y offset in face half-heights and roll in radians.
        hidden: (N,) bool, True where a hand covers the face (no crop is written).
        arousal: (N,) in [-1, 1]; the voice's pitch and loudness follow it.
        style: the person's colours where they must match another video of the same person;
            None: drawn for this video.
        look: the person's resting appearance and voice (:class:`Look`).
    """

    params: np.ndarray
    motion: np.ndarray
    hidden: np.ndarray
    arousal: np.ndarray
    style: FaceStyle | None = None
    look: Look = field(default_factory=Look)


def frame_times(rng: np.random.Generator, fps: Fraction | None, n: int) -> tuple[np.ndarray, float]:
    """(n,) presentation times in seconds and the file duration.

    A variable-rate file (fps None) steps irregularly by 1/20 or 1/30 s (24 fps on average).
    """
    if fps is not None:
        return np.arange(n) / float(fps), n / float(fps)
    ticks = rng.choice([30, 20], size=n)  # in VFR_TIME_BASE units
    starts = np.concatenate([[0], np.cumsum(ticks[:-1])])
    return starts * float(VFR_TIME_BASE), float(ticks.sum() * VFR_TIME_BASE)


def _poses(size: tuple[int, int], faces: list[Face]) -> list[np.ndarray]:
    """(N, 4) pixel poses of each face: one centred face, or a pair left and right."""
    width, height = size
    centres = [(0.5, 0.53)] if len(faces) == 1 else [(0.27, 0.55), (0.73, 0.55)]
    scale = (0.31 if len(faces) == 1 else 0.24) * height
    return [np.stack([cx * width + scale * f.motion[:, 0], cy * height + scale * f.motion[:, 1],
                      np.full(len(f.motion), scale), f.motion[:, 2]], axis=1) for (cx, cy), f in zip(centres, faces)]


def encode_faces(path: Path, size: tuple[int, int], fps: Fraction | None, frames: int, faces: list[Face],
                 crop_dirs: list[Path], lines: int, audio: str, rng: np.random.Generator,
                 audio_spec: AudioSpec | None = None) -> tuple[int, list[np.ndarray], list[np.ndarray]]:
    """Encode `frames` frames of `faces` to `path` and write their aligned crops.

    Crops go to ``crop_dirs[k]/%05d.jpg`` (1-based) for frames below `lines` where face k is
    visible (`lines` 0: no crops). `audio` is ``sound`` (the faces' voices), ``silent``
    (all-zero samples) or ``none`` (no audio stream); its rate and channels are `audio_spec`,
    else drawn (44.1 or 48 kHz, mono or stereo, as real videos vary). Returns the frames
    written, per face the (lines,) crop-present mask, and per face the (frames, 4) true box of
    every frame (:func:`face_box`; NaN where a hand hides the face).
    """
    times, duration = frame_times(rng, fps, frames)
    spec = None if audio == "none" else audio_spec or AudioSpec(int(rng.choice([44100, 48000])),
                                                                int(rng.integers(1, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(path, size, fps, spec)
    scene, poses = background(rng, size), _poses(size, faces)
    styles = [FaceStyle.random(rng) if f.style is None else f.style for f in faces]
    present = [np.zeros(lines, bool) for _ in faces]
    for i in range(frames):
        image = scene.copy()
        draw = ImageDraw.Draw(image)
        for face, pose, style in zip(faces, poses, styles):
            draw_face(draw, face.params[i] + face.look.rest, pose[i], style, face.look.width)
            if face.hidden[i]:
                draw_occluder(draw, pose[i])
        for face, pose, crop_dir, mask in zip(faces, poses, crop_dirs, present):
            if i < lines and not face.hidden[i]:
                crop_dir.mkdir(parents=True, exist_ok=True)
                aligned_crop(image, pose[i]).save(crop_dir / f"{i + 1:05d}.jpg", quality=90)
                mask[i] = True
        writer.add(image, float(times[i]))
    boxes = [np.array([face_box(p, face.look.width) for p in pose[:frames]], dtype=np.float64)
             for face, pose in zip(faces, poses)]
    for face, box in zip(faces, boxes):
        box[face.hidden[:frames]] = np.nan
    samples = None
    if spec is not None:
        samples = np.zeros((spec.channels, round(duration * spec.rate)), np.float32)
        if audio == "sound":
            samples = _voices(rng, faces, times, duration, spec)
    writer.close(samples)
    return writer.frames, present, boxes


def _voices(rng: np.random.Generator, faces: list[Face], times: np.ndarray, duration: float,
            spec: AudioSpec) -> np.ndarray:
    """(channels, S) samples: each face's voice, the pair panned apart in stereo."""
    pitches = [rng.uniform(100, 220) for _ in faces]  # drawn always: the rest of the seed's draws stay the same
    voices = [voice(times, f.arousal[:len(times)], duration, spec.rate, f.look.pitch or pitch, rng)
              for f, pitch in zip(faces, pitches)]
    if spec.channels == 1:
        return (sum(voices) / len(voices))[None]
    pans = [0.5] if len(voices) == 1 else [0.8, 0.2]
    return np.stack([sum(p * v for p, v in zip(pans, voices)), sum((1 - p) * v for p, v in zip(pans, voices))])


def render_clip(path: Path, violent: np.ndarray, fps: int, size: tuple[int, int], rng: np.random.Generator) -> int:
    """Encode a DVD-style scene for the (T,) bool `violent` mask; return the frames written.

    Calm frames: a few figures drift slowly. Violent frames: two of them rush together with
    large erratic jumps, flailing arms and a shaking camera, and the noise gets loud.
    """
    width, height = size
    scene = background(rng, size)
    count = int(rng.integers(3, 6))
    low, high = (0.1 * width, 0.7 * height), (0.9 * width, 0.98 * height)
    position = rng.uniform(low, high, (count, 2))
    velocity = np.zeros((count, 2))
    colours = [tuple(int(v) for v in rng.integers(0, 255, 3)) for _ in range(count)]
    heights = rng.uniform(0.3, 0.5, count) * height
    fighters = np.arange(count) < 2
    per_frame = 30.0 / fps  # motion per frame that keeps the same speed per second
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = AudioSpec(int(rng.choice([44100, 48000])), 1)
    writer = VideoWriter(path, size, Fraction(fps), audio)
    for hot in violent:
        if hot:
            meet = position[fighters].mean(axis=0)
            velocity = 0.4 * velocity + rng.normal(0.0, 0.025 * width * per_frame, (count, 2))
            velocity[fighters] += 0.2 * (meet - position[fighters])
        else:
            velocity = 0.9 * velocity + rng.normal(0.0, 0.0015 * width * per_frame, (count, 2))
        position = np.clip(position + velocity, low, high)
        shake = rng.normal(0.0, 0.02 * width, 2) if hot else np.zeros(2)
        frame = scene.copy()
        draw = ImageDraw.Draw(frame)
        for k in range(count):
            arms = tuple(rng.uniform(-0.5, 2.5, 2)) if hot and fighters[k] else (-1.1, -1.1)
            x, y = position[k] + shake
            draw_figure(draw, x, y, heights[k], arms, colours[k])
        writer.add(frame, writer.frames / fps)
    times = np.arange(len(violent)) / fps
    duration = len(violent) / fps
    writer.close(noise_bed(times, violent.astype(float), duration, audio.rate, rng)[None])
    return writer.frames
