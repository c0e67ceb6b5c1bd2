"""The occluder catalogue on real faces (dlib landmarks), and `--mode=occlusion` on the
reference run: every occluder covers what it says and nothing else, deterministically per
(seed, index), and `none` gives exactly `--mode=eval`'s accuracy."""

import json
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import runs
from configs import default
from fer_jax import cli
from fer_jax.data import crops, ferplus, pipeline
from fer_jax.data import fit_cache
from fer_jax.data import landmarks as landmarks_lib
from fer_jax.modes import evaluate, occlusion

F = 48
NAMES = tuple(occlusion.OCCLUDERS)
SEED = 1234
SENTINEL = -1.0  # outside every fill's range, so that a painted pixel always differs


def keys(indices, seed=SEED):
  return crops.example_keys(jax.random.key(seed), jnp.asarray(indices))


# Every occluder on a batch of faces: [B, F, F, C] -> [B, len(OCCLUDERS), F, F, C].
occlude_batch = jax.jit(jax.vmap(occlusion.occlude_all))


@pytest.fixture(scope="module")
def faces(prepared_dlib):
  """Eight validation faces with their fitted landmarks: (images uint8 [8, F, F, 1],
  landmarks [8, 68, 2], TFDS indices [8])."""
  split = pipeline.load_split(prepared_dlib[1], "validation", "majority", for_eval=True)
  idx = split.indices[:8]
  exs = [split.source[int(i)] for i in idx]
  return (np.stack([ferplus.decode_png(e["image"]) for e in exs]),
          np.stack([np.asarray(e["landmarks"], np.float32) for e in exs]), idx)


@pytest.fixture(scope="module")
def occluded(faces):
  """(images under every occluder, the masks of every occluder) of `faces`."""
  images, landmarks, idx = faces
  k = keys(idx)
  out = np.asarray(occlude_batch(images, landmarks, k))
  sentinel = np.full(images.shape, SENTINEL, np.float32)
  masks = np.asarray(occlude_batch(sentinel, landmarks, k))[..., 0] != SENTINEL
  return out, masks


def pixel_box(box):
  """[F, F] mask of the pixels whose centres lie in [x0, x1) x [y0, y1), in numpy."""
  c = np.arange(F)
  return (((c >= box[1]) & (c < box[3]))[:, None]) & (((c >= box[0]) & (c < box[2]))[None, :])


def region(lm, name):
  return np.asarray(crops.region_box(jnp.asarray(lm), crops.REGIONS[name], F, 0.15, 0.25))


def test_each_occluder_draws_from_its_own_key():
  """Occluders keyed by their names' salts: two that shared one would paint correlated masks."""
  assert len({occlusion.salt(n) for n in NAMES}) == len(NAMES)


def test_each_occluder_covers_its_region_and_leaves_the_rest(faces, occluded):
  images, landmarks, _ = faces
  out, masks = occluded
  for b, (image, lm) in enumerate(zip(images, landmarks)):
    m = dict(zip(NAMES, masks[b]))
    for i, name in enumerate(NAMES):  # unchanged outside the mask, one grey level inside
      np.testing.assert_array_equal(out[b, i][~m[name]], image[~m[name]], err_msg=name)
      assert len(np.unique(out[b, i][m[name]])) <= 1, name
    assert not m["none"].any()
    for name in ("mouth", "nose"):
      np.testing.assert_array_equal(m[name], pixel_box(region(lm, name)), err_msg=(b, name))
    eyes = region(lm, "eyes")
    np.testing.assert_array_equal(m["eyes_band"], pixel_box([-0.5, eyes[1], F, eyes[3]]))
    # The halves split the face in two: at the training occluder's line, and at the nose.
    top = max(lm[crops.NOSE_BRIDGE, 1], F / 2 - 0.5)
    np.testing.assert_array_equal(m["lower_half"], pixel_box([-0.5, top, F, F]))
    np.testing.assert_array_equal(m["upper_half"], ~m["lower_half"])
    np.testing.assert_array_equal(m["left_half"],
                                  pixel_box([-0.5, -0.5, lm[crops.NOSE_BRIDGE, 0], F]))
    np.testing.assert_array_equal(m["right_half"], ~m["left_half"])
    # Each region's landmarks are under its occluder (the pixel each one falls in).
    for name, regions in (("mouth", "mouth"), ("nose", "nose"), ("eyes_band", "eyes"),
                          ("hand", "mouth"), ("lower_half", "mouth")):
      pts = np.clip(np.round(lm[list(crops.REGIONS[regions])]).astype(int), 0, F - 1)
      assert m[name][pts[:, 1], pts[:, 0]].all(), (b, name)
    # The hand: an ellipse around the mouth box, wider than it, about pi/4 of its bounding box.
    ys, xs = np.nonzero(m["hand"])
    mouth = region(lm, "mouth")
    assert xs.max() - xs.min() + 1 > mouth[2] - mouth[0]
    bbox = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    assert 0.65 < m["hand"].sum() / bbox < 0.9, m["hand"].sum() / bbox


def test_random_rectangles_cover_their_fraction_of_the_face(faces):
  _, landmarks, _ = faces
  sentinel = np.full((8, F, F, 1), SENTINEL, np.float32)  # the fixture's shapes: no compile
  masks = np.concatenate([np.asarray(occlude_batch(sentinel, landmarks, keys(range(i, i + 8))))
                          for i in range(0, 64, 8)])[..., 0] != SENTINEL
  for p in (10, 20, 30, 40, 50):
    ms = masks[:, NAMES.index(f"random_{p}")]
    boxes = set()
    for m in ms:
      rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
      h, w = len(rows), len(cols)
      assert m.sum() == h * w == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)  # a rectangle
      assert abs(m.sum() - p / 100 * F * F) <= w / 2, (p, m.sum(), w)
      assert 0.5 - 2 / h <= w / h <= 2 + 2 / h, (p, w, h)
      boxes.add((rows[0], cols[0], h, w))
    assert len(boxes) > len(ms) // 2, (p, len(boxes))  # positions and shapes vary with the index


def test_occluders_are_deterministic_per_seed_and_index(faces, occluded):
  images, landmarks, idx = faces
  out, _ = occluded
  again = np.asarray(occlude_batch(images, landmarks, keys(idx)))
  np.testing.assert_array_equal(again, out)
  # The same face at another index (or under another seed) is occluded differently.
  same_face = np.repeat(images[:1], 8, 0), np.repeat(landmarks[:1], 8, 0)
  k = jnp.concatenate([keys([idx[0], idx[0] + 1]), keys(idx[:6], seed=SEED + 1)])
  other = np.asarray(occlude_batch(*same_face, k))[:3]
  np.testing.assert_array_equal(other[0], out[0])
  np.testing.assert_array_equal(other[1:, 0], out[:1, 0].repeat(2, 0))  # none is none
  for i in range(1, len(NAMES)):
    assert (other[1, i] != out[0, i]).any() and (other[2, i] != out[0, i]).any(), NAMES[i]


def test_crops_on_host_is_refused(test_config, tmp_path):
  test_config.data.crops_on = "host"
  with pytest.raises(ValueError, match="crops_on='device'"):
    occlusion.evaluate(test_config, str(tmp_path), "latest")


def test_occlusion_mode_on_the_reference_run(reference_run, prepared, tmp_path, caplog):
  """--mode=occlusion (in-process; README's command runs it through main.py in
  tests/test_readme.py): the JSON and PNG; `none` is --mode=eval's accuracy, exactly, with the
  run's model whatever the config says."""
  workdir = tmp_path / "run"
  shutil.copytree(reference_run, workdir)
  caplog.set_level(logging.INFO)
  # A config describing another model: the checkpoint's own model is evaluated (as in eval).
  config = runs.config(prepared[0], *runs.REFERENCE_FLAGS, "--config.plots=True",
                       "--config.model.width=0.5")
  cli.run("occlusion", config, str(workdir))
  logged = "\n".join(r.getMessage() for r in caplog.records)
  for name in NAMES:  # a line per occluder, with its accuracy
    assert f"of validation under {name} (" in logged, name
  saved = json.loads((workdir / "eval" / "occlusion_validation.json").read_text())
  assert saved["checkpoint_step"] == runs.STEPS
  assert tuple(saved["occluders"]) == NAMES
  n = len(pipeline.load_split(prepared[1], "validation", "majority", for_eval=True))
  assert all(m["num_examples"] == n for m in saved["occluders"].values())
  assert (workdir / "eval" / "occlusion_validation.png").stat().st_size > 10_000

  config = runs.config(prepared[0], *runs.REFERENCE_FLAGS)
  clean = evaluate.evaluate(config, str(workdir), "latest")
  none = saved["occluders"]["none"]
  assert none["accuracy"] == clean["accuracy"]
  assert none["per_class_accuracy"] == clean["per_class_accuracy"]
  assert none["confusion_matrix"] == clean["confusion_matrix"]
  for b, mu in clean["mean_branch_weights"].items():
    assert abs(none["mean_branch_weights"][b] - mu) < 1e-6, b
  # An occluder changes what the branches see, hence their weights.
  mu = {name: m["mean_branch_weights"] for name, m in saved["occluders"].items()}
  assert mu["mouth"]["mouth"] != mu["none"]["mouth"]
  assert mu["eyes_band"]["eyes"] != mu["none"]["eyes"]


def test_refit_fits_the_occluded_face_and_moves_the_part_boxes(faces, occluded):
  """The realistic protocol: landmarks fitted again on the face as occluded (dlib, as prepare
  fits them), so a covered mouth gets other part boxes than the oracle's stored landmarks."""
  images, landmarks, idx = faces
  fitter = landmarks_lib.AlignedFitter(landmarks_lib.make_source("dlib"))
  batch = dict(image=images, landmarks=landmarks, index=np.asarray(idx, np.int32),
               mask=np.array([1] * 7 + [0], np.float32))  # the last row is padding
  mouth = NAMES.index("mouth")
  refit = occlusion.Refit(fitter, mouth, SEED)
  out = refit(batch)
  np.testing.assert_array_equal(out["image"], occluded[0][:, mouth])  # the device's pixels
  assert refit.faces == 7 and 0 <= refit.failed <= 7
  assert refit.failed_fraction() == refit.failed / 7
  moved = [np.abs(region(out["landmarks"][j], "mouth") - region(landmarks[j], "mouth")).max()
           for j in range(7)]
  assert sum(m >= 1.0 for m in moved) >= 5, moved  # a pixel or more, on most covered mouths
  np.testing.assert_array_equal(out["landmarks"][7], landmarks[7])  # padding left alone
  # Uncovered, the same fitter gives back the stored landmarks: oracle and refit agree there.
  none = occlusion.Refit(fitter, NAMES.index("none"), SEED)(batch)
  np.testing.assert_allclose(none["landmarks"], landmarks, atol=1e-3)


def test_fits_kept_in_the_cache_are_read_back_for_the_same_pixels_only(faces, tmp_path):
  """`occlusion.fit_cache`: a second evaluation of the same occluded faces fits none of them
  and gets the very landmarks and fallbacks; other pixels (another occluder) are fitted."""
  images, landmarks, idx = faces
  calls = []
  class Counting(landmarks_lib.AlignedFitter):
    def __call__(self, image):
      calls.append(1)
      return super().__call__(image)

  fitter = Counting(landmarks_lib.make_source("dlib"))
  batch = dict(image=images, landmarks=landmarks, index=np.asarray(idx, np.int32),
               mask=np.array([1] * 7 + [0], np.float32))
  mouth, eyes = NAMES.index("mouth"), NAMES.index("eyes_band")
  first = occlusion.Refit(fitter, mouth, SEED, fit_cache.FitCache(str(tmp_path), fitter, "t"))
  out = first(batch)
  assert len(calls) == 7 and first.cache.save() is not None
  again = occlusion.Refit(fitter, mouth, SEED, fit_cache.FitCache(str(tmp_path), fitter, "t"))
  out2 = again(batch)
  assert len(calls) == 7 and again.cache.hits == 7  # nothing fitted again
  np.testing.assert_array_equal(out2["landmarks"], out["landmarks"])
  assert (again.faces, again.failed) == (first.faces, first.failed)
  other = occlusion.Refit(fitter, eyes, SEED, fit_cache.FitCache(str(tmp_path), fitter, "t"))
  other(batch)
  assert len(calls) == 14 and other.cache.hits == 0
  # Another fitter's settings are another key: nothing is shared.
  coarse = Counting(landmarks_lib.make_source("dlib"), max_deviation=0.5)
  assert fit_cache.FitCache(str(tmp_path), coarse, "t").fit(coarse, images[0]) is not None
  assert len(calls) == 15


def test_every_kept_fit_is_read_back_whatever_bytes_its_key_ends_in(tmp_path):
  """2,000 tiny images: their SHA-1 keys include some ending in a zero byte (which numpy's
  bytes dtype would drop); all 2,000 come back from the saved file."""
  fitter = lambda image: (np.full((68, 2), image[0, 0], np.float32), bool(image[0, 1] % 2))
  images = [np.array([[i % 256, i // 256]], np.uint8) for i in range(2000)]
  cache = fit_cache.FitCache(str(tmp_path), fitter, "t")
  assert any(cache.key(image)[-1] == 0 for image in images)
  for image in images:
    cache.fit(fitter, image)
  cache.save()
  again = fit_cache.FitCache(str(tmp_path), fitter, "t")
  never = lambda image: pytest.fail("fitted again")
  for image in images:
    pts, ok = again.fit(never, image)
    assert pts[0, 0] == image[0, 0] and ok == bool(image[0, 1] % 2)
  assert again.hits == 2000


def test_only_a_model_that_classifies_the_whole_face_alone_ignores_landmarks():
  """Refit and oracle differ only through crops cut by landmarks: for a model that classifies
  the whole face alone (one branch, or the multi-view model's `inference_branches`), the refit
  protocol is the oracle's evaluation, run once."""
  assert not crops.uses_landmarks(("face",))
  for branches in (("face", "eyes"), ("occluded",), ("mouth",), ("occluded_upper",)):
    assert crops.uses_landmarks(branches), branches
  config = default.get_config()
  assert occlusion.inference_branches(config) == crops.DEFAULT_BRANCHES
  config.model.inference_branches = ("face",)
  assert occlusion.inference_branches(config) == ("face",)

