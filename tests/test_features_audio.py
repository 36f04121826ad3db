"""Audio decoding, frame alignment and the audio extractors (offline, tiny random models)."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

from features.align import pool_to_frames
from features.audio import (FramePool, LogMelExtractor, LogMelSpec, Wav2Vec2Extractor, Wav2Vec2Spec, chunk_bounds,
                            conv_geometry)
from features.extract import Job, extract_audio, timing
from features.media import MediaError, audio_pieces, audio_samples, decode_audio, frame_timestamps, video_duration
from features.store import FeatureStore
from tests.conftest import clip

SR = 16000
# transformers' own wav2vec2 tests use this conv stack: 64-sample steps over 148 samples.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(32, 32, 32), conv_stride=(4, 4, 4), conv_kernel=(8, 8, 8),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def centres(path: Path) -> np.ndarray:
    return frame_timestamps(path).mean(axis=1)


def tiny_w2v(**overrides) -> Wav2Vec2Extractor:
    fields = dict(name="wav2vec2", config=TINY, layers=2, chunk_seconds=0.5, overlap_seconds=0.1, device="cpu")
    fields.update(overrides)
    return Wav2Vec2Extractor(Wav2Vec2Spec(**fields))


def write_video(path: Path, *, seconds: float = 2.0, video_start: int = 0, audio: np.ndarray | None = None,
                audio_rate: int = 44100, audio_start: int = 0) -> Path:
    """An mp4 (MPEG-4 video 64x48 at 25 fps from frame ``video_start``; AAC stereo from
    ``audio`` (2, N) if given, from sample ``audio_start``)."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = fractions.Fraction(1, 25)
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=audio_rate)
            sound.layout = "stereo"
        for i in range(int(seconds * 25)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
            frame.pts = i + video_start
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            for k in range(0, audio.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, k:k + 1024], np.float32),
                                                   format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = audio_rate, k + audio_start
                out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return path


# ---------------------------------------------------------------------------------- decoding


def test_decode_real_clips_mono_16k_cropped_to_video():
    face, pexels = clip("single_face.mp4"), clip("WolfgangLanger_Pexels.mp4")
    for path in (face, pexels):
        duration = video_duration(path)
        wave = decode_audio(path, SR, duration=duration)
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert abs(len(wave) - round(duration * SR)) <= 1
    assert abs(video_duration(pexels) - 472 / (24000 / 1001)) < 1e-3
    # single_face's MP3 runs ~19 ms past its last video frame: uncropped is longer, not silent.
    full = decode_audio(face, SR)
    assert len(full) > round(video_duration(face) * SR)
    assert 1e-4 < np.sqrt(np.mean(full ** 2)) < 1e-2
    assert not np.any(decode_audio(pexels, SR, duration=video_duration(pexels)))


def test_decode_pads_to_a_longer_duration():
    wave = decode_audio(clip("single_face.mp4"), 8000, duration=3.0)
    assert len(wave) == 24000 and not np.any(wave[20000:])


def test_decode_no_audio_stream_is_none_and_bad_file_is_media_error(tmp_path):
    assert decode_audio(write_video(tmp_path / "silent_film.mp4"), SR) is None
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match="broken.mp4"):
        decode_audio(bad, SR)


@pytest.mark.parametrize("video_start", [0, 5])
def test_decode_timing_and_both_channels_on_the_decoder_clock(tmp_path, video_start):
    # Left click at 1.0 s, right click at 1.5 s (audio clock); the video may start 0.2 s late,
    # and decord's frame times count from the first video frame, so the clicks move earlier.
    rate = 44100
    stereo = np.zeros((2, 2 * rate), np.float32)
    stereo[0, rate], stereo[1, int(1.5 * rate)] = 0.9, 0.9
    path = write_video(tmp_path / "clicks.mp4", video_start=video_start, audio=stereo, audio_rate=rate)
    assert frame_timestamps(path)[0, 0] == 0.0
    wave = decode_audio(path, SR)
    shift = video_start / 25
    for t in (1.0, 1.5):
        expected = round((t - shift) * SR)
        near = np.abs(wave[expected - 80:expected + 80])
        assert abs(int(np.argmax(near)) - 80) <= 1, f"click at {t} s found {np.argmax(near) - 80} samples off"
        assert near.max() > 0.1  # neither channel dropped by the downmix


@pytest.mark.parametrize("video_start, audio_start", [(5, 0), (0, 11025)])
def test_audio_pieces_join_into_the_decoded_waveform(tmp_path, video_start, audio_start):
    # Audio starting before the first video frame (head dropped) or after it (zeros first),
    # cropped, padded or left whole: piece by piece, the same samples as decode_audio's.
    rate = 44100
    t = np.arange(2 * rate) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    path = write_video(tmp_path / "tone.mp4", video_start=video_start, audio=stereo, audio_rate=rate,
                       audio_start=audio_start)
    duration = video_duration(path)
    for crop in (None, duration, duration + 0.7, 0.3, 0.0):
        whole = decode_audio(path, SR, duration=crop)
        if crop is not None:
            assert len(whole) == audio_samples(crop, SR)
        for seconds in (0.01, 0.3, 10.0):
            pieces = list(audio_pieces(path, SR, duration=crop, piece_seconds=seconds))
            assert all(len(piece) == int(seconds * SR) for piece in pieces[:-1])
            np.testing.assert_array_equal(np.concatenate([np.zeros(0, np.float32), *pieces]), whole)
    assert audio_pieces(write_video(tmp_path / "silent_film.mp4"), SR) is None


# -------------------------------------------------------------------------------- alignment


def test_pool_to_frames_hand_computed():
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    steps = np.stack([np.arange(5.0), np.arange(5.0) + 10], axis=1)
    frames = np.array([0.0, 1.0, 2.25, 3.875, 10.0, -5.0])
    out = pool_to_frames(times, steps, frames, window=1.0)
    expected = [[0.5, 10.5],  # steps 0, 1
                [1.0, 11.0],  # steps 0, 1, 2: the window's edges are inclusive
                [2.5, 12.5],  # steps 2, 3
                [3.5, 13.5],  # steps 3, 4
                [4.0, 14.0],  # nothing within 1 s: nearest step 4
                [0.0, 10.0]]  # nearest step 0
    assert out.dtype == np.float32 and out.shape == (6, 2)
    np.testing.assert_array_equal(out, expected)


def test_pool_to_frames_irregular_steps_ties_and_empty():
    times = np.array([0.0, 0.5, 0.75, 3.0])
    steps = np.array([[2.0], [4.0], [8.0], [16.0]])
    out = pool_to_frames(times, steps, np.array([0.625, 1.875, 2.5, 0.5]), window=0.25)
    # 0.625 -> 0.5, 0.75; 1.875 -> tie between 0.75 and 3.0 -> earlier; 2.5 -> nearest 3.0; 0.5 -> 0.5, 0.75.
    np.testing.assert_array_equal(out[:, 0], [6.0, 8.0, 16.0, 6.0])
    assert pool_to_frames(times, steps, np.zeros(0), 0.5).shape == (0, 1)
    with pytest.raises(ValueError, match="non-decreasing"):
        pool_to_frames(times[::-1], steps, np.zeros(2), 0.5)


def test_pool_to_frames_matches_a_loop_across_column_blocks():
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 5, 200))
    steps = rng.standard_normal((200, 300)).astype(np.float32)  # > one 256-column block
    frames = rng.uniform(-1, 6, 50)
    out = pool_to_frames(times, steps, frames, 0.3)
    for t, row in zip(frames, out):
        inside = np.abs(times - t) <= 0.3
        ref = steps[inside].mean(0) if inside.any() else steps[np.argmin(np.abs(times - t))]
        np.testing.assert_allclose(row, ref, atol=1e-5)


def test_logmel_tone_burst_lands_on_the_right_frames():
    # Irregular (variable frame rate) frames; a 1 kHz burst whose onset falls midway between
    # two consecutive frames' window edges, 20+ ms from each, wider than a mel step's 12.5 ms reach.
    rng = np.random.default_rng(0)
    frames = np.cumsum(rng.uniform(0.04, 0.07, 60))
    window, k = 0.05, 25
    onset = round(((frames[k] + frames[k + 1]) / 2 + window) * SR) / SR
    offset = onset + 0.8
    t = np.arange(int(frames[-1] * SR) + SR) / SR
    wave = (1e-4 * rng.standard_normal(len(t))).astype(np.float32)
    burst = (t >= onset) & (t < offset)
    wave[burst] += 0.5 * np.sin(2 * np.pi * 1000 * t[burst]).astype(np.float32)
    extractor = LogMelExtractor(LogMelSpec(name="logmel", window=window))
    # The loudest mel band: a pure tone fills one or two of the 64 bands, not their mean.
    energy = extractor.extract(wave, frames).max(axis=1)
    quiet = energy[:k + 1]
    loud = energy[(frames - window - 0.0125 > onset) & (frames + window + 0.0125 < offset)]
    assert len(loud) > 5 and loud.min() > quiet.max() + 30  # inside vs outside the burst
    assert np.ptp(quiet) < 3  # frames whose window ends before the onset see only the noise
    # The first frame whose window holds the onset is where it changes (a 20 ms lag fails this).
    assert energy[k + 1] > quiet.max() + 25


def test_logmel_on_real_clips_with_decoder_frame_times():
    extractor = LogMelExtractor(LogMelSpec(name="logmel"))
    for name, frames in (("single_face.mp4", 72), ("WolfgangLanger_Pexels.mp4", 472)):
        path = clip(name)
        wave = decode_audio(path, SR, duration=video_duration(path))
        out = extractor.extract(wave, centres(path))
        assert out.shape == (frames, 64) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, -100.0, atol=1e-3)  # the all-zero Pexels track sits on the dB floor


def test_logmel_survives_silence_and_tiny_inputs():
    extractor = LogMelExtractor(LogMelSpec(name="logmel", n_mels=16))
    for wave in (np.zeros(SR, np.float32), np.zeros(50, np.float32), np.zeros(0, np.float32)):
        out = extractor.extract(wave, np.array([0.0, 0.5, 2.0]))
        assert out.shape == (3, 16) and np.isfinite(out).all()


# --------------------------------------------------------------------------------- wav2vec2


def test_conv_geometry_matches_the_model_receptive_field():
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    standard = Wav2Vec2Config()
    assert conv_geometry(standard.conv_kernel, standard.conv_stride) == (320, 400)
    stride, field = conv_geometry(TINY["conv_kernel"], TINY["conv_stride"])
    assert (stride, field) == (64, 148)
    # Per-step layer norm keeps the conv stack local, so a poked sample moves exactly the steps
    # whose receptive field [i*stride, i*stride + field) holds it.
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**TINY, feat_extract_norm="layer")).eval()
    x = torch.randn(1, 2000)
    poked = x.clone()
    poked[0, 1000] += 5.0
    with torch.no_grad():
        changed = (model.feature_extractor(poked) - model.feature_extractor(x)).abs().amax(dim=1)[0] > 0
    expected = [i for i in range(changed.numel()) if i * stride <= 1000 < i * stride + field]
    assert np.flatnonzero(changed.numpy()).tolist() == expected


def test_wav2vec2_local_dir_loads_identical_features(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    memory = tiny_w2v()
    memory.model.save_pretrained(tmp_path / "w2v")
    loaded = tiny_w2v(config=None, model=str(tmp_path / "w2v"))
    wave = np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)
    frames = np.arange(90) / 30 + 1 / 60
    np.testing.assert_allclose(loaded.extract(wave, frames), memory.extract(wave, frames), atol=1e-6)
    assert loaded.output_dims == {"features": 32}
    # The directory's content is fingerprinted; the random-config spec hashes no files.
    assert loaded.spec.weight_sources() == [str(tmp_path / "w2v")] and memory.spec.weight_sources() == []
    other = tiny_w2v(seed=1)
    other.model.save_pretrained(tmp_path / "w2v_other")
    assert Wav2Vec2Spec(model=str(tmp_path / "w2v_other")).fingerprint() != \
        Wav2Vec2Spec(model=str(tmp_path / "w2v")).fingerprint()
    # Normalisation follows preprocessor_config.json, else the config's feat_extract_norm.
    assert memory.normalize is False and tiny_w2v(config={**TINY, "feat_extract_norm": "layer"}).normalize
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "w2v")
    assert tiny_w2v(config=None, model=str(tmp_path / "w2v")).normalize is True


def test_wav2vec2_single_chunk_equals_one_whole_pass():
    import torch

    extractor = tiny_w2v(chunk_seconds=2.0, normalize=True)
    wave = np.random.default_rng(2).standard_normal(int(1.3 * SR)).astype(np.float32) * 0.1 + 0.05
    times, steps = extractor.steps(wave)
    x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.no_grad():
        hidden = extractor.model(torch.from_numpy(x)[None], output_hidden_states=True).hidden_states
    expected = torch.stack(hidden[-2:]).mean(0)[0].numpy()
    assert steps.shape == expected.shape
    np.testing.assert_allclose(steps, expected, atol=1e-4)
    np.testing.assert_allclose(times, (np.arange(len(steps)) * 64 + 74) / SR)


def test_wav2vec2_last_layer_is_the_normed_output_of_stable_layer_norm_models():
    import torch

    # large/lv60 models apply a final LayerNorm; transformers 5 records the last hidden state
    # before it, so the extractor substitutes last_hidden_state (what 4.x recorded).
    extractor = tiny_w2v(config={**TINY, "do_stable_layer_norm": True, "feat_extract_norm": "layer"}, layers=1)
    wave = np.random.default_rng(5).standard_normal(SR // 2).astype(np.float32)
    x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.no_grad():
        expected = extractor.model(torch.from_numpy(x)[None]).last_hidden_state[0].numpy()
    np.testing.assert_allclose(extractor.steps(wave)[1], expected, atol=1e-5)


def test_wav2vec2_chunks_cover_each_step_once_from_their_own_chunk():
    import torch

    extractor = tiny_w2v(chunk_seconds=0.5, overlap_seconds=0.1)
    wave = np.random.default_rng(3).standard_normal(int(2.3 * SR)).astype(np.float32)
    times, steps = extractor.steps(wave)
    # Exactly the grid a whole pass would produce: no gap and no repeat at chunk borders.
    assert len(times) == (len(wave) - 148) // 64 + 1
    np.testing.assert_allclose(np.diff(times), 64 / SR)
    bounds = chunk_bounds(len(wave), extractor.chunk, extractor.overlap, 64)
    assert len(bounds) >= 4 and bounds[-1][1] == len(wave) and bounds[-1][1] - bounds[-1][0] >= extractor.chunk
    # Each step equals the encoder's output on the chunk it was taken from, at the step's time:
    # global attention means chunk context (not the step's time) is all that chunking changes.
    for start, end in bounds:
        with torch.no_grad():
            local = extractor.model(torch.from_numpy(wave[start:end])[None], output_hidden_states=True).hidden_states
        local = torch.stack(local[-2:]).mean(0)[0].numpy()
        local_times = (start + np.arange(len(local)) * 64 + 74) / SR
        mid = (start + end) / 2 / SR  # the chunk's centre step is always taken from it
        i = int(np.argmin(np.abs(local_times - mid)))
        j = int(np.argmin(np.abs(times - local_times[i])))
        assert abs(times[j] - local_times[i]) < 1e-9
        np.testing.assert_allclose(steps[j], local[i], atol=1e-5)
    frames = np.cumsum(np.random.default_rng(4).uniform(0.02, 0.06, 50))  # variable frame rate
    out = extractor.extract(wave, frames)
    assert out.shape == (50, 32) and np.isfinite(out).all()


def test_wav2vec2_survives_silence_short_input_and_real_clips():
    extractor = tiny_w2v(normalize=True)
    for wave in (np.zeros(2 * SR, np.float32), np.zeros(100, np.float32), np.zeros(0, np.float32)):
        out = extractor.extract(wave, np.array([0.0, 0.5, 1.0]))
        assert out.shape == (3, 32) and np.isfinite(out).all()
    path = clip("single_face.mp4")
    out = extractor.extract(decode_audio(path, SR, duration=video_duration(path)), centres(path))
    assert out.shape == (72, 32) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="overlap_seconds"):
        tiny_w2v(overlap_seconds=0.0)
    with pytest.raises(ValueError, match="layers"):
        tiny_w2v(layers=4)


# ------------------------------------------------------------------------------ streaming

# Streamed rows (waveform in pieces, rows pooled as their windows complete) against the
# whole-waveform path: bitwise equal on the project's machine (largest difference 0.0, for
# 10 minutes of log-mel too). The tolerance leaves room for float rounding that can differ
# where the two paths add in another order: the mel projection over fewer STFT columns per
# call, and the pool's running sums starting at another step.
STREAM_RTOL = STREAM_ATOL = 1e-6


def streamed(extractor, wave: np.ndarray, frames: np.ndarray, pieces: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Rows computed as extraction does (pieces in, rows out as they complete), and how many
    pieces had been read when the first steps came out."""
    read, first = [0], None

    def counted():
        for piece in pieces:
            read[0] += 1
            yield piece

    pool = FramePool(frames, extractor.spec.window)
    out = np.full((len(frames), extractor.output_dims["features"]), np.nan, np.float32)
    for times, steps in extractor.iter_steps(counted(), len(wave)):
        first = read[0] if first is None else first
        rows, values = pool.push(times, steps)
        out[rows] = values
    rows, values = pool.finish()
    out[rows] = values
    return out, first


@pytest.mark.parametrize("kind", ["logmel", "wav2vec2"])
def test_streamed_rows_equal_the_whole_waveform_rows(kind):
    rng = np.random.default_rng(6)
    wave = (0.1 * rng.standard_normal(int(7.3 * SR) + 11)).astype(np.float32)
    wave[SR:3 * SR] += 0.4 * np.sin(2 * np.pi * 700 * np.arange(2 * SR) / SR).astype(np.float32)
    # Variable frame rate, and frames before the audio's start and past its end.
    frames = np.concatenate([[-0.3], np.cumsum(rng.uniform(0.02, 0.06, 180)), [7.6, 8.0]])
    if kind == "logmel":
        extractor = LogMelExtractor(LogMelSpec(name="logmel", n_mels=16))
        extractor.block_steps = 70  # many blocks in 7 s
    else:
        extractor = tiny_w2v(normalize=True, batch_size=3)
    whole = extractor.extract(wave, frames)
    # Ragged pieces, empty ones among them; 0.1 s on average.
    cuts = np.sort(rng.integers(0, len(wave) + 1, 72))
    pieces = np.split(wave, np.sort(np.concatenate([cuts, cuts[::9]])))
    rows, first = streamed(extractor, wave, frames, pieces)
    assert np.isfinite(rows).all()
    np.testing.assert_allclose(rows, whole, rtol=STREAM_RTOL, atol=STREAM_ATOL)
    # Steps come out long before the waveform is read (a 0.7 s mel block; three 0.5 s chunks).
    assert first < len(pieces) / 3
    for piece in ([wave], [wave[:5], wave[5:]]):
        np.testing.assert_allclose(streamed(extractor, wave, frames, piece)[0], whole, rtol=STREAM_RTOL,
                                   atol=STREAM_ATOL)


@pytest.mark.parametrize("kind", ["logmel", "wav2vec2"])
def test_extract_audio_streams_the_rows_the_whole_waveform_gives(tmp_path, kind):
    # 12 s of tone: two decoded pieces, two log-mel blocks, 24 wav2vec2 chunks; a _left/_right
    # pair sharing the video with different row counts; a silent track and one without audio.
    rate = 44100
    t = np.arange(12 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(np.pi * t))).astype(np.float32)
    tone_clip = write_video(tmp_path / "tone.mp4", seconds=12, audio=np.stack([tone, 0.5 * tone]))
    silent_clip = write_video(tmp_path / "silent.mp4", seconds=3, audio=np.zeros((2, 3 * rate), np.float32))
    mute_clip = write_video(tmp_path / "mute.mp4", seconds=1)
    jobs = [Job("tone_left", 302, tone_clip), Job("tone_right", 297, tone_clip), Job("silent", 75, silent_clip),
            Job("mute", 25, mute_clip)]
    extractor = LogMelExtractor(LogMelSpec(name="logmel", n_mels=16)) if kind == "logmel" else tiny_w2v()
    store = FeatureStore(tmp_path / "store")
    store.folder.mkdir()
    outcome = extract_audio(extractor, jobs, store, lambda message: None)
    assert sorted(outcome.written) == sorted(job.id for job in jobs) and not outcome.failed
    duration = video_duration(tone_clip)
    waveform = decode_audio(tone_clip, SR, duration=duration)
    for job in jobs[:2]:
        times = timing(job)[0]
        whole = extractor.extract(waveform, times)
        valid = times <= len(waveform) / SR
        whole[~valid] = 0.0
        assert valid.sum() == min(job.frames, 300) and store.record(job.id)["accounting"]["audio"] == "sound"
        np.testing.assert_array_equal(store.read(job.id, "valid"), valid)
        # Stored as float16: equal rows give equal halves, or neighbours where float rounding
        # moved a value across a float16 rounding boundary.
        np.testing.assert_allclose(np.asarray(store.read(job.id), np.float32),
                                   whole.astype(np.float16).astype(np.float32), rtol=2 ** -10, atol=0)
    for job, audio in ((jobs[2], "silent"), (jobs[3], "none")):
        assert store.record(job.id)["accounting"]["audio"] == audio
        assert not np.asarray(store.read(job.id, "valid")).any() and not np.asarray(store.read(job.id)).any()
    assert not list(store.folder.glob(".*.tmp"))


# ------------------------------------------------------------------------- specs, registry


def test_fingerprints_follow_the_numbers_not_the_runtime():
    base = Wav2Vec2Spec(name="wav2vec2", config=TINY)
    assert base.modality == "audio"
    assert Wav2Vec2Spec(name="wav2vec2", config=TINY, window=0.25).fingerprint() != base.fingerprint()
    assert Wav2Vec2Spec(name="wav2vec2", config=TINY, layers=2).fingerprint() != base.fingerprint()
    assert Wav2Vec2Spec(name="wav2vec2", config=TINY, seed=3).fingerprint() != base.fingerprint()
    assert Wav2Vec2Spec(name="wav2vec2", config=TINY, batch_size=64).fingerprint() == base.fingerprint()
    mel = LogMelSpec(name="logmel")
    assert LogMelSpec(name="logmel", window=1.0).fingerprint() != mel.fingerprint()
    assert LogMelSpec(name="logmel", n_mels=80).fingerprint() != mel.fingerprint()
    assert LogMelSpec(name="logmel", batch_size=1, device="cuda").fingerprint() == mel.fingerprint()


def test_a_local_wav2vec2_directory_is_fingerprinted_by_content_not_path(tmp_path):
    for name in ("here", "moved"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
    here = Wav2Vec2Spec(name="wav2vec2", model=str(tmp_path / "here")).fingerprint()
    assert Wav2Vec2Spec(name="wav2vec2", model=str(tmp_path / "moved")).fingerprint() == here
    (tmp_path / "moved" / "model.safetensors").write_bytes(b"other weights")
    assert Wav2Vec2Spec(name="wav2vec2", model=str(tmp_path / "moved")).fingerprint() != here


def test_registered_under_their_names():
    from features import specs

    assert specs._REGISTRY["wav2vec2"].build is Wav2Vec2Extractor
    assert specs._REGISTRY["logmel"].spec is LogMelSpec
    extractor = specs.create_extractor("logmel", window=0.25).to("cpu")
    assert isinstance(extractor, LogMelExtractor) and extractor.spec.window == 0.25
    assert extractor.output_dims == {"features": 64}
