"""Crop geometry on real FERPlus faces (dlib landmarks fitted at prepare time)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.data import crops, ferplus

CFG = crops.CropConfig(size=32)
F = 48


@pytest.fixture(scope="module")
def faces(prepared_dlib):
  _, sources = prepared_dlib
  src = sources["train"]
  out = []
  for i in range(24):
    ex = src[i]
    out.append((ferplus.decode_png(ex["image"]), np.asarray(ex["landmarks"], np.float32)))
  return out


def inside(points, box, tol=1e-4):
  return bool(np.all((points[:, 0] >= box[0] - tol) & (points[:, 0] <= box[2] + tol) &
                     (points[:, 1] >= box[1] - tol) & (points[:, 1] <= box[3] + tol)))


def test_region_boxes_contain_their_landmarks_on_real_faces(faces):
  fn = jax.jit(lambda im, lm, k, t: crops.five_crops(im, lm, k, CFG, t), static_argnums=3)
  for i, (image, lm) in enumerate(faces):
    for train in (False, True):
      out = fn(image, lm, jax.random.key(i), train)
      boxes, view = np.asarray(out["boxes"]), np.asarray(out["landmarks"])
      for b, name in enumerate(CFG.branches):
        if name in crops.BRANCH_KINDS:
          np.testing.assert_allclose(boxes[b], [-0.5, -0.5, F - 0.5, F - 0.5])
        else:
          assert inside(view[list(CFG.region(name))], boxes[b]), (i, name, train)
      if not train:
        np.testing.assert_allclose(view, lm, atol=1e-4)
  # The regions are where a face has them: eyes above the nose above the mouth.
  image, lm = faces[0]
  boxes = np.asarray(crops.branch_boxes(jnp.asarray(lm), F, CFG))
  centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
  assert centre_y[1] < centre_y[2] < centre_y[3]


def test_identity_crop_is_the_image(faces):
  image, lm = faces[0]
  cfg = crops.CropConfig(size=F, branches=("face",), standardize=False)
  out = crops.five_crops(image, lm, jax.random.key(0), cfg, train=False)
  np.testing.assert_allclose(np.asarray(out["crops"][0]) * 255, image, atol=1e-3)


def test_flip_twice_is_identity(faces):
  image, lm = faces[1]
  np.testing.assert_allclose(crops.flip_landmarks(crops.flip_landmarks(lm, F), F), lm)
  np.testing.assert_array_equal(crops.flip_image(crops.flip_image(image)), image)
  assert sorted(crops.MIRROR.tolist()) == list(range(68))
  np.testing.assert_array_equal(crops.MIRROR[crops.MIRROR], np.arange(68))


def test_flip_swaps_eye_boxes_and_mirrors_crops(faces):
  mirror = lambda b: np.array([F - 1 - b[2], b[1], F - 1 - b[0], b[3]])
  for image, lm in faces[:8]:
    flipped_lm = np.asarray(crops.flip_landmarks(jnp.asarray(lm), F))
    box = lambda pts, name: np.asarray(crops.region_box(jnp.asarray(pts), crops.REGIONS[name], F,
                                                        CFG.pad, CFG.min_box))
    np.testing.assert_allclose(box(flipped_lm, "left_eye"), mirror(box(lm, "right_eye")), atol=1e-4)
    np.testing.assert_allclose(box(flipped_lm, "right_eye"), mirror(box(lm, "left_eye")), atol=1e-4)
    # Each branch of the mirrored face but the occluded one is the mirrored branch (what
    # evaluation's flip averaging, `config.eval_flip`, relies on).
    cfg = crops.CropConfig(size=32, branches=("face", "eyes", "nose", "mouth"), standardize=False)
    a = crops.five_crops(image, lm, jax.random.key(0), cfg, False)["crops"]
    b = crops.five_crops(np.ascontiguousarray(image[:, ::-1]), flipped_lm, jax.random.key(0), cfg,
                         False)["crops"]
    np.testing.assert_allclose(np.asarray(b), np.asarray(a)[:, :, ::-1], atol=1e-5)


def test_occluder_never_leaves_the_lower_half(faces):
  occ = jax.jit(jax.vmap(lambda k, lm: crops.occluder_box(k, lm, F, CFG), in_axes=(0, None)))
  keys = jax.random.split(jax.random.key(3), 500)
  for image, lm in faces:
    boxes = np.asarray(occ(keys, lm))
    top = max(F / 2 - 0.5, lm[crops.NOSE_BRIDGE, 1])
    assert np.all(boxes[:, 1] >= top - 1e-4) and np.all(boxes[:, 3] <= F - 0.5 + 1e-4)
    assert np.all(boxes[:, 0] >= -0.5 - 1e-4) and np.all(boxes[:, 2] <= F - 0.5 + 1e-4)
    assert np.all(boxes[:, 3] > boxes[:, 1]) and np.all(boxes[:, 2] > boxes[:, 0])
    assert boxes[:, 1].std() > 0.5 and boxes[:, 0].std() > 0.5  # position really varies
  # Painted pixels of the occluded crop lie in the lower half of the face only.
  cfg = crops.CropConfig(size=F, standardize=False)
  image, lm = faces[2]
  for k in range(20):
    out = crops.five_crops(image, lm, jax.random.key(k), cfg, train=False)["crops"]
    changed = np.abs(np.asarray(out[4]) - np.asarray(out[0]))[..., 0] > 1e-6
    rows = np.flatnonzero(changed.any(1))
    assert rows.size == 0 or rows.min() >= F // 2 - 1


def test_evaluation_crops_are_a_pure_function_of_seed_and_index(faces):
  images = np.stack([f[0] for f in faces[:6]])
  lms = np.stack([f[1] for f in faces[:6]])
  fn = jax.jit(lambda keys: crops.batch_crops(images, lms, keys, CFG, train=False))
  keys = lambda seed, idx: crops.example_keys(jax.random.key(seed), jnp.asarray(idx))
  a = np.asarray(fn(keys(7, np.arange(6))))
  b = np.asarray(fn(keys(7, np.arange(6))))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[:, :4], np.asarray(fn(keys(8, np.arange(6))))[:, :4])
  assert not np.array_equal(a[:, 4], np.asarray(fn(keys(8, np.arange(6))))[:, 4])
  # Batched and jitted equals one face at a time.
  one = crops.five_crops(images[3], lms[3], keys(7, np.arange(6))[3], CFG, False)["crops"]
  np.testing.assert_allclose(a[3], np.asarray(one), atol=1e-5)


def test_crops_are_standardised_and_shaped(faces):
  image, lm = faces[4]
  out = np.asarray(crops.five_crops(image, lm, jax.random.key(0), CFG, True)["crops"])
  assert out.shape == (5, 32, 32, 1)
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-4)
  assert np.all(np.abs(out.std(axis=(1, 2, 3)) - 1) < 0.05)


def test_config_errors_name_the_key():
  with pytest.raises(KeyError, match="unknown branch 'chin'"):
    crops.from_config(dict(branches=["face", "chin"]))
  cfg = crops.from_config(dict(branches=["face", "chin"], regions={"chin": [6, 7, 8, 9, 10]}))
  assert cfg.region("chin") == (6, 7, 8, 9, 10)
  with pytest.raises(KeyError, match="unknown key"):
    crops.from_config(dict(sise=3))
  with pytest.raises(ValueError, match="occluder_height"):
    crops.from_config(dict(occluder_height=(0.8, 0.2)))


def test_second_occluder_kind_covers_only_the_upper_face(faces):
  """`occluded_upper`, a branch kind of `crops.BRANCH_KINDS`: the occluder of the upper band."""
  cfg = crops.CropConfig(size=F, branches=("face", "occluded_upper"), standardize=False)
  for i, (image, lm) in enumerate(faces[:8]):
    bottom = min(F / 2 - 0.5, float(lm[crops.NOSE_BRIDGE, 1]))
    box = np.asarray(crops.upper_occluder_box(jax.random.key(i), jnp.asarray(lm), F, cfg))
    assert -0.5 <= box[1] < box[3] <= bottom + 1e-4, (i, box, bottom)
    out = crops.five_crops(image, lm, jax.random.key(i), cfg, train=False)["crops"]
    changed = np.abs(np.asarray(out[1]) - np.asarray(out[0]))[..., 0] > 1e-6
    rows = np.nonzero(changed.any(axis=1))[0]
    assert len(rows) and rows.max() <= bottom + 0.5, (i, rows, bottom)


def test_occlude_face_paints_the_occluded_branch_s_occluder_in_training_only(faces):
  """`occlude_face` (the one-branch control of the study): in training the `face` crop gets, with
  that probability, exactly the occluder the `occluded` branch gets; the other draws stay as
  they were, and evaluation never paints it."""
  both = crops.CropConfig(size=F, branches=("face", "occluded"), standardize=False)
  always = crops.CropConfig(size=F, branches=("face", "occluded"), standardize=False,
                            occlude_face=1.0)
  half = crops.CropConfig(size=F, branches=("face",), standardize=False, occlude_face=0.5)
  image, lm = (jnp.asarray(a) for a in faces[5])
  keys = jax.random.split(jax.random.key(0), 200)
  cut = lambda cfg, train: np.asarray(jax.jit(jax.vmap(
      lambda k: crops.five_crops(image, lm, k, cfg, train)["crops"]))(keys))
  plain, out, one = cut(both, True), cut(always, True), cut(half, True)[:, 0]
  # (Separately compiled programs may differ in the last bit: compare to 1e-5.)
  np.testing.assert_allclose(out[:, 0], plain[:, 1], atol=1e-5)  # the occluded branch's crop
  np.testing.assert_allclose(out[:, 1], plain[:, 1], atol=1e-5)
  error = lambda a, b: np.abs(a - b).max(axis=(1, 2, 3))
  occluded = error(one, plain[:, 0]) > 1e-5
  np.testing.assert_allclose(one[occluded], plain[occluded, 1], atol=1e-5)  # occluded, or
  np.testing.assert_allclose(one[~occluded], plain[~occluded, 0], atol=1e-5)  # as it was
  assert 70 <= occluded.sum() <= 130, occluded.sum()  # Binomial(200, 1/2): 100 +- 7
  np.testing.assert_allclose(cut(always, False), cut(both, False), atol=1e-5)
  with pytest.raises(ValueError, match="occlude_face"):
    crops.from_config(dict(occlude_face=1.5))
