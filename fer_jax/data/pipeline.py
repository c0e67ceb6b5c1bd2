"""The input pipeline: grain over `tfds.data_source`, from a prepared split to batches.

Training: seeded shuffle (reshuffled every epoch), repeat, per-process shard, batches of
`global_batch / process_count` that drop the remainder, and an iterator whose position Orbax
checkpoints. Evaluation: every kept example exactly once, in order, padded to whole global
batches with `mask = 0` rows, and sharded the same way.

Each example carries `index`: in training its position in the global shuffled stream, in
evaluation its position in the TFDS split. Crop randomness is keyed by it
(`crops.example_keys`), so an example's crops do not depend on the process count, on the
batch it falls in, or on whether they are cut in the host workers (`crops_on='host'`) or inside
the jitted step (`crops_on='device'`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import pathlib
import tempfile
from typing import Any

from absl import flags
from absl import logging
import grain
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.data import crops as crops_lib
from fer_jax.data import ferplus
from fer_jax.data import labels as labels_lib
from fer_jax import errors


@dataclasses.dataclass(frozen=True)
class Split:
  """A prepared split after label processing.

  Attributes:
    name: the split (or list file) name.
    source: the TFDS data source (random access to examples).
    indices: [n] positions in `source` of the kept examples.
    targets: [n, 8] float32 target distributions (label mode).
    labels: [n] int32 evaluation labels (majority vote, or a list file's labels).
  """
  name: str
  source: Any
  indices: np.ndarray
  targets: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return len(self.indices)


def dataset_dir(tfds_dir: str, landmarks: str) -> pathlib.Path:
  return pathlib.Path(tfds_dir) / "fer_plus" / landmarks / str(ferplus.FerPlus.VERSION)


class Sources(dict):
  """split -> TFDS data source, knowing the folder it was read from (for error messages)."""
  path: pathlib.Path
  tfds_dir: str


def damaged(path: pathlib.Path, tfds_dir: str, split: str, cause: BaseException
            ) -> errors.DamagedDataError:
  """The error for split `split` of the prepared dataset at `path` failing to read."""
  pattern = "*.array_record*" if split == "any" else f"*-{split}.array_record*"
  files = sorted(str(p) for p in path.glob(pattern)) or [str(path)]
  reason = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
  return errors.DamagedDataError(
      f"the prepared dataset's {split!r} split is damaged: {', '.join(files)} does not read "
      f"({type(cause).__name__}: {reason}). Rebuild it: delete {path} and run python main.py "
      f"--mode=prepare --config.data.manual_dir=DIR --config.data.tfds_dir={tfds_dir} "
      f"--config.data.landmarks={path.parent.name}")


def data_sources(tfds_dir: str, landmarks: str) -> dict[str, Any]:
  """split -> TFDS data source of a prepared dataset, or an error that says how to prepare it."""
  path = dataset_dir(tfds_dir, landmarks)
  if not (path / "dataset_info.json").exists():
    raise FileNotFoundError(
        f"no prepared FERPlus dataset at {path}. Build it with: python main.py "
        f"--config=configs/default.py --mode=prepare --config.data.manual_dir=DIR "
        f"--config.data.tfds_dir={tfds_dir}")
  try:
    sources = Sources(ferplus.builder(tfds_dir, landmarks).as_data_source())
  except (RuntimeError, ValueError, OSError) as e:  # the files' own errors, not a missing package
    raise damaged(path, tfds_dir, "any", e) from None
  sources.path, sources.tfds_dir = path, tfds_dir
  return sources


def resolve_tfds_dir(tfds_dir: str, workdir: str) -> str:
  """`config.data.tfds_dir`, with "" meaning WORKDIR/tfds."""
  return tfds_dir or str(pathlib.Path(workdir) / "tfds")


def open_sources(tfds_dir: str, landmarks: str, manual_dir: str = "",
                 prepare_if_missing: bool = True) -> dict[str, Any]:
  """The prepared dataset's data sources, preparing it from `manual_dir` first if needed."""
  if not (dataset_dir(tfds_dir, landmarks) / "dataset_info.json").exists():
    if prepare_if_missing and manual_dir:
      check_writable(tfds_dir)
      logging.info("no prepared dataset in %s: preparing it from %s", tfds_dir, manual_dir)
      sizes = ferplus.prepare(manual_dir, tfds_dir, landmarks)
      logging.info("prepared %s", sizes)
  return data_sources(tfds_dir, landmarks)


def check_writable(tfds_dir: str) -> None:
  """The dataset folder can be created and written, or a FileNotFoundError (exit status 2)
  that names it and the ways out."""
  try:
    pathlib.Path(tfds_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=tfds_dir):
      pass
  except OSError as e:
    raise FileNotFoundError(
        f"config.data.tfds_dir={tfds_dir} holds no prepared FERPlus and cannot be written to "
        f"prepare it ({e.strerror or e}): point --config.data.tfds_dir to a prepared dataset "
        f"or to a folder you can write") from None


def all_votes(source) -> np.ndarray:
  return votes_and_names(source, names=False)[0]


def votes_and_names(source, names: bool) -> tuple[np.ndarray, list[str] | None]:
  """Every record's votes [n, 10] and, if `names`, its face name, in one pass over the split."""
  votes, found = [], []
  for i in range(len(source)):
    record = source[i]
    votes.append(record["votes"])
    if names:
      name = record["name"]
      found.append(name.decode() if isinstance(name, bytes) else str(name))
  votes = (np.stack(votes) if votes else np.zeros((0, labels_lib.NUM_VOTES), np.int32))
  return votes, (found if names else None)


CONFIRMATION = "confirmation"  # the held-out slice of the training split (`data.holdout`)


def held_out(names, fraction: float, seed: int) -> np.ndarray:
  """[n] bool: which faces a confirmation slice of `fraction` holds, a pure function of each
  face's name and `seed` (SHA-256 of "seed/name"), not of its position: the slice is the same
  faces whatever the split's order, and a face's membership never depends on the others."""
  if fraction <= 0:
    return np.zeros(len(names), bool)
  u = np.array([int.from_bytes(hashlib.sha256(f"{seed}/{n}".encode()).digest()[:8], "little")
                for n in names], np.float64) / 2.0**64
  return u < fraction


def load_split(sources: dict[str, Any], split: str, label_mode: str, for_eval: bool,
               holdout: float = 0.0, holdout_seed: int = 0, train_split: str = "train") -> Split:
  """Keeps the examples of `split` that the label mode keeps.

  Evaluation always uses the majority-vote protocol (Microsoft's, and every FERPlus paper's):
  the kept examples and their labels are the majority-vote ones.

  `holdout` > 0 takes the `held_out(names, holdout, holdout_seed)` faces out of `train_split`
  (what training sees; other splits are whole); `split=CONFIRMATION` is those faces of `train_split`, with majority-vote
  labels (what the run is confirmed on: never trained, tuned or selected on).
  """
  confirm = split == CONFIRMATION
  if confirm:
    if holdout <= 0:
      raise KeyError(f"split {CONFIRMATION!r} is the held-out slice of the training split: it "
                     f"needs config.data.holdout > 0, got {holdout}")
    split, for_eval = train_split, True
  if split not in sources:
    raise KeyError(f"split {split!r} is not in the prepared dataset (it has "
                   f"{sorted(sources)}); a split whose files were absent from the manual dir "
                   f"was not built")
  source = sources[split]
  try:
    # Reads every record (a damaged file shows here), with the names a hold-out is drawn by.
    votes, names = votes_and_names(source, names=holdout > 0 and split == train_split)
  except (RuntimeError, ValueError, OSError) as e:  # Riegeli's "Corrupted ... file", truncation
    if not hasattr(sources, "path"):
      raise
    raise damaged(sources.path, sources.tfds_dir, split, e) from None
  mode = "majority" if for_eval else label_mode
  kept, targets = labels_lib.targets_for_split(votes, mode)
  if names is not None:  # the training split's slice; the evaluation splits keep every face
    held = held_out(names, holdout, holdout_seed)
    kept = kept & (held if confirm else ~held)
  idx = np.flatnonzero(kept)
  return Split(CONFIRMATION if confirm else split, source, idx.astype(np.int64), targets[idx],
               np.argmax(targets[idx], -1).astype(np.int32))


def split_from_list(sources: dict[str, Any], list_path: str) -> Split:
  """A split made of the images that a list file names, in RAN's formats.

  Each line starts with `<label>_<name>.<ext>` or `<label>/<name>.<ext>` (anything after the
  first whitespace is ignored); `<label>` is the class index (`labels.CLASS_NAMES` order) and
  `<name>` a FERPlus image name (`fer0032222`), looked up in every prepared split.
  """
  path = pathlib.Path(list_path)
  if not path.exists():
    raise FileNotFoundError(f"eval list {path} does not exist")
  where: dict[str, tuple[str, int]] = {}
  for split, source in sources.items():
    for i in range(len(source)):
      name = source[i]["name"]
      name = name.decode() if isinstance(name, bytes) else str(name)
      where[pathlib.PurePath(name).stem] = (split, i)
  entries, missing = [], []
  for line_no, line in enumerate(path.read_text().splitlines(), 1):
    token = line.strip().split()[0] if line.strip() else ""
    if not token:
      continue
    if "/" in token:
      label_txt, file_name = token.split("/")[-2], token.split("/")[-1]
    elif "_" in token:
      label_txt, file_name = token.split("_", 1)
    else:
      raise ValueError(f"{path} line {line_no}: {token!r} is neither <label>_<name> nor "
                       f"<label>/<name>")
    try:
      label = int(label_txt)
    except ValueError:
      raise ValueError(f"{path} line {line_no}: label {label_txt!r} is not a class index") from None
    if not 0 <= label < labels_lib.NUM_CLASSES:
      raise ValueError(f"{path} line {line_no}: label {label} is not in [0, "
                       f"{labels_lib.NUM_CLASSES})")
    stem = pathlib.PurePath(file_name).stem
    if stem not in where:
      missing.append(f"{file_name} (line {line_no})")
      continue
    entries.append((where[stem], label))
  if missing:
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    raise FileNotFoundError(f"eval list {path} names {len(missing)} image(s) that are not in the "
                            f"prepared dataset (splits {sorted(sources)}): {shown}")
  splits = {s for (s, _), _ in entries}
  if len(splits) > 1:
    raise ValueError(f"eval list {path} mixes images of splits {sorted(splits)}")
  if not entries:
    raise ValueError(f"eval list {path} names no images")
  split = splits.pop()
  idx = np.array([i for (_, i), _ in entries], np.int64)
  lab = np.array([l for _, l in entries], np.int32)
  return Split(path.stem, sources[split], idx, np.eye(labels_lib.NUM_CLASSES, dtype=np.float32)[lab], lab)


class Records:
  """Random access to decoded examples of a `Split` (what grain's MapDataset reads)."""

  def __init__(self, split: Split, pad_to: int | None = None):
    self.split = split
    self.length = max(pad_to or 0, len(split))

  def __len__(self):
    return self.length

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    n = len(self.split)
    real = i < n
    j = i if real else 0
    ex = self.split.source[int(self.split.indices[j])]
    return dict(
        image=ferplus.decode_png(ex["image"]),
        landmarks=np.asarray(ex["landmarks"], np.float32),
        target=self.split.targets[j],
        label=np.int32(self.split.labels[j]),
        source_index=np.int32(self.split.indices[j]),
        mask=np.float32(real),
    )


def _with_index(i: int, ex: dict) -> dict:
  return {**ex, "index": np.int32(i)}


def _eval_index(ex: dict) -> dict:
  return {**ex, "index": ex["source_index"]}


class HostCrops:
  """A batch transform that cuts the crops on the host CPU (in grain's workers)."""

  def __init__(self, cfg: crops_lib.CropConfig, seed: int, train: bool):
    self.cfg, self.seed, self.train = cfg, seed, train
    self._fn = None

  def __call__(self, batch: dict) -> dict:
    if self._fn is None:
      cpu = jax.devices("cpu")[0]
      fn = jax.jit(functools.partial(crops_lib.batch_crops, cfg=self.cfg, train=self.train))
      self._fn = lambda *a: jax.device_put(fn(*jax.device_put(a, cpu)), cpu)
    keys = crops_lib.example_keys(jax.random.key(self.seed), jnp.asarray(batch["index"]))
    out = {k: v for k, v in batch.items() if k not in ("image", "landmarks")}
    out["crops"] = np.asarray(self._fn(batch["image"], batch["landmarks"], keys))
    return out


def worker_init(worker_index: int, worker_count: int) -> None:
  """Runs first in each grain worker: absl flags parsed, JAX on the CPU only."""
  del worker_index, worker_count
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  jax.config.update("jax_platforms", "cpu")


def _finish(ds: grain.MapDataset, worker_count: int, prefetch: int) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, prefetch), prefetch_buffer_size=prefetch))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count),
                        worker_init_fn=worker_init)
  return it


def check_batch(global_batch: int, process_count: int, device_count: int) -> int:
  """The per-process batch, or an error naming the numbers that do not divide."""
  if global_batch % device_count:
    raise ValueError(f"config.batch_size={global_batch} is not divisible by the "
                     f"{device_count} devices of this run")
  if global_batch % process_count:
    raise ValueError(f"config.batch_size={global_batch} is not divisible by the "
                     f"{process_count} processes of this run")
  return global_batch // process_count


def shuffled_stream(ds: grain.MapDataset | int, seed: int, num_epochs: int | None = None
                    ) -> grain.MapDataset:
  """The training order: `ds` (or the row numbers 0..ds-1) shuffled with `seed`, reshuffled
  every epoch, repeated. Position p of this stream is the example's `index`. The grain path
  and the device-resident path (`memory.order_table`) both read it, so they agree."""
  if isinstance(ds, int):
    ds = grain.MapDataset.range(ds)
  return ds.seed(seed).shuffle().repeat(num_epochs)


def train_dataset(split: Split, *, global_batch: int, seed: int, process_index: int = 0,
                  process_count: int = 1, num_epochs: int | None = None,
                  host_crops: crops_lib.CropConfig | None = None, worker_count: int = 0,
                  prefetch: int = 2, start_batch: int = 0) -> grain.IterDataset:
  """Shuffled, repeated, sharded training batches (remainder dropped).

  Local batch t of every process holds its share of global batch t, whatever the process
  count, so `start_batch=step` puts the data where a run at `step` left it.

  Batches hold `image` uint8 [b, F, F, 1], `landmarks` [b, 68, 2], `target` [b, 8], `label`,
  `index` (position in the global shuffled stream) and `mask`; with `host_crops`, `crops`
  [b, nb, S, S, 1] replaces `image` and `landmarks`.
  """
  if len(split) == 0:
    raise ValueError(f"split {split.name!r} keeps no examples")
  per_process = global_batch // process_count
  ds = shuffled_stream(grain.MapDataset.source(Records(split)), seed, num_epochs)
  ds = ds.map_with_index(_with_index)[process_index::process_count]
  ds = ds.batch(per_process, drop_remainder=True)
  if start_batch:
    ds = ds[start_batch:]
  if host_crops is not None:
    ds = ds.map(HostCrops(host_crops, seed, train=True))
  return _finish(ds, worker_count, prefetch)


def eval_dataset(split: Split, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1, host_crops: crops_lib.CropConfig | None = None,
                 seed: int = 0, worker_count: int = 0, prefetch: int = 2) -> grain.IterDataset:
  """Every example of `split` exactly once, padded to whole global batches (`mask` 0 rows).

  `index` is the example's position in the TFDS split, which keys its (deterministic) occluder.
  """
  per_process = global_batch // process_count
  total = math.ceil(len(split) / global_batch) * global_batch
  ds = grain.MapDataset.source(Records(split, pad_to=total)).map(_eval_index)
  ds = ds[process_index::process_count].batch(per_process, drop_remainder=False)
  if host_crops is not None:
    ds = ds.map(HostCrops(host_crops, seed, train=False))
  return _finish(ds, worker_count, prefetch)


def steps_per_epoch(split: Split, global_batch: int) -> int:
  return max(len(split) // global_batch, 1)
