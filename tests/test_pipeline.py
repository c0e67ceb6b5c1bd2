"""The grain pipeline: sharding, padding, determinism, checkpointable position, host = device crops."""

import itertools

import jax
import numpy as np
import pytest

from fer_jax.data import crops, pipeline


@pytest.fixture(scope="module")
def splits(prepared):
  _, sources = prepared
  return (pipeline.load_split(sources, "train", "majority", for_eval=False),
          pipeline.load_split(sources, "validation", "majority", for_eval=True))


def collect(ds, key):
  return [np.asarray(b[key]) for b in ds]


@pytest.mark.parametrize("processes", [1, 2])
def test_padded_evaluation_covers_every_example_once(splits, processes):
  _, val = splits
  assert len(val) == 87
  seen, masks = [], []
  for p in range(processes):
    batches = list(pipeline.eval_dataset(val, global_batch=32, process_index=p,
                                         process_count=processes))
    assert all(len(b["mask"]) == 32 // processes for b in batches)
    for b in batches:
      seen.extend(b["source_index"][b["mask"] > 0].tolist())
      masks.extend(b["mask"].tolist())
  assert sorted(seen) == sorted(val.indices.tolist())  # each example exactly once
  assert len(masks) == 96 and sum(masks) == 87  # three global batches, 9 padding rows


def test_training_batches_drop_the_remainder_and_shard_the_global_batch(splits):
  train, _ = splits
  one = pipeline.train_dataset(train, global_batch=16, seed=3, num_epochs=1)
  one = list(one)
  assert len(one) == len(train) // 16 and all(len(b["index"]) == 16 for b in one)
  two = [list(pipeline.train_dataset(train, global_batch=16, seed=3, num_epochs=1,
                                     process_index=p, process_count=2)) for p in range(2)]
  assert len(two[0]) == len(two[1]) == len(one)
  for t, batch in enumerate(one):
    union = np.concatenate([two[0][t]["index"], two[1][t]["index"]])
    assert sorted(union.tolist()) == sorted(batch["index"].tolist())
    u_targets = np.concatenate([two[0][t]["target"], two[1][t]["target"]])
    np.testing.assert_allclose(u_targets[np.argsort(union)], batch["target"][np.argsort(batch["index"])])


def test_shuffle_is_seeded_and_reshuffles_each_epoch(splits):
  train, _ = splits
  labels = lambda seed: np.concatenate([b["label"] for b in itertools.islice(
      pipeline.train_dataset(train, global_batch=16, seed=seed), 36)])
  np.testing.assert_array_equal(labels(1), labels(1))
  assert not np.array_equal(labels(1), labels(2))
  per_epoch = len(train) // 16 * 16
  a = labels(1)
  assert not np.array_equal(a[:per_epoch // 2], a[len(train):len(train) + per_epoch // 2])


def test_iterator_position_is_checkpointable(splits):
  train, _ = splits
  it = iter(pipeline.train_dataset(train, global_batch=8, seed=0))
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)["index"] for _ in range(3)]
  fresh = iter(pipeline.train_dataset(train, global_batch=8, seed=0))
  fresh.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["index"], want)
  # Positioning by step gives the same batches (used when the process count changed).
  by_step = iter(pipeline.train_dataset(train, global_batch=8, seed=0, start_batch=5))
  for want in expected:
    np.testing.assert_array_equal(next(by_step)["index"], want)


def test_host_crops_equal_device_crops(splits):
  train, _ = splits
  cfg = crops.CropConfig(size=24)
  raw = next(iter(pipeline.train_dataset(train, global_batch=8, seed=5)))
  host = next(iter(pipeline.train_dataset(train, global_batch=8, seed=5, host_crops=cfg)))
  keys = crops.example_keys(jax.random.key(5), raw["index"])
  device = crops.batch_crops(raw["image"].astype(np.float32) / 255.0, raw["landmarks"], keys, cfg,
                             train=True)
  assert host["crops"].shape == (8, 5, 24, 24, 1) and "image" not in host
  np.testing.assert_allclose(host["crops"], np.asarray(device), atol=1e-4)  # jit vs eager rounding


def test_list_files_in_rans_formats(prepared, splits, tmp_path):
  _, sources = prepared
  _, val = splits
  src = sources["validation"]
  names = [src[int(i)]["name"].decode() for i in val.indices[:4]]
  stems = [n.rsplit(".", 1)[0] for n in names]
  a = tmp_path / "a.txt"
  a.write_text("".join(f"{l}_{s}.png 0.5\n" for l, s in zip([0, 1, 2, 3], stems)))
  b = tmp_path / "b.txt"
  b.write_text("".join(f"FER2013Test/{l}/{s}.jpg\n" for l, s in zip([0, 1, 2, 3], stems)))
  for path in (a, b):
    split = pipeline.split_from_list(sources, str(path))
    np.testing.assert_array_equal(split.labels, [0, 1, 2, 3])
    np.testing.assert_array_equal(split.indices, val.indices[:4])
  bad = tmp_path / "bad.txt"
  bad.write_text(f"0_{stems[0]}.png\n3_fer9999999.png\n")
  with pytest.raises(FileNotFoundError, match=r"fer9999999\.png \(line 2\)"):
    pipeline.split_from_list(sources, str(bad))


def test_batch_that_does_not_divide_is_named():
  with pytest.raises(ValueError, match="batch_size=30 is not divisible by the 4 devices"):
    pipeline.check_batch(30, 1, 4)
