"""The defaults of every config key, and what each key means.

Every config (`configs/*.py`, a checkpoint's own config read back by `checkpoint.py`) starts
from `get_config()` and overrides what it must, so that an installed fer_jax works without the
configs/ folder: `configs/default.py` is this config under the name the command lines use.
The values are the paper's model on FERPlus (configs/default.py's docstring has its command).
"""

import difflib

import ml_collections

from fer_jax.data import crops
from fer_jax import errors


def get_config() -> ml_collections.ConfigDict:
  """A fresh ConfigDict of every key at its default."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---- data
  config.data = data = ml_collections.ConfigDict()
  data.manual_dir = ""  # FERPlus in either layout; needed only to prepare the dataset
  data.tfds_dir = "~/tensorflow_datasets"  # the prepared dataset ("" = WORKDIR/tfds; ~ and $VARS
  #                                         are expanded, as in every path, by cli.expand_paths)
  data.landmarks = "dlib"  # landmarks stored per face at prepare time: dlib | template
  data.label_mode = "majority"  # majority | probability | crossentropy | multi_target
  data.train_split = "train"
  data.eval_split = "validation"  # select on validation; `test` when FER2013Test/ is present
  data.holdout = 0.0  # > 0: this fraction of train_split, chosen by a hash of each face's name
  #                     and holdout_seed (pipeline.held_out), is kept out of training as the
  #                     `confirmation` split, evaluated once at the end (eval/confirmation.json)
  #                     beside eval_split: the figure no choice was made on
  data.holdout_seed = 0
  data.eval_list = ""  # a RAN-style list file to evaluate instead of eval_split
  data.source = "grain"  # grain: a host pipeline feeds each batch | memory: the split lives on
  #                        the devices and the step gathers its batch (fer_jax/data/memory.py)
  data.crops_on = "device"  # device: inside the jitted step | host: in grain's workers
  data.worker_count = 0  # grain worker processes (host crops benefit from them)
  data.prefetch = 2
  data.crops = ml_collections.ConfigDict(dict(
      size=112,
      branches=tuple(crops.DEFAULT_BRANCHES),  # ablate: --config.data.crops.branches="('face',)"
      regions={},  # extra regions: name -> landmark indices
      pad=0.15,
      min_box=0.25,
      occluder_height=(0.5, 1.0),
      occluder_width=(0.4, 1.0),
      occluder_fill="uniform",
      standardize=True,
      flip=True,
      max_rotation=10.0,
      max_scale=0.1,
      max_shift=0.05,
      occlude_face=0.0,  # training only: P(the occluder is painted over the `face` branch)
  ))
  data.mix = "none"  # none | mixup | cutmix (data/mixing.py): each training example mixed with
  #                  its batch neighbour, the soft targets alike
  data.mix_alpha = 0.2  # lam ~ Beta(alpha, alpha)
  data.train_sizes = ()  # progressive resizing: ((until_epoch, size), ...) trains at `size` px
  #                      until that epoch, then at the next pair's, then at crops.size; the
  #                      evaluations during a phase use its size, the final one crops.size
  data.eval_occluder_seed = 1234  # evaluation occluders: a pure function of (seed, index)

  # ---- model
  config.model = model = ml_collections.ConfigDict()
  model.backbone = "resnet"  # a key of fer_jax/models/backbones.py: resnet | vgg13
  model.depth = 50  # resnet: 10 | 18 | 34 | 50
  model.width = 1.0  # channel multiplier (resnet, vgg13)
  model.stem = "imagenet"  # resnet: imagenet | small | small_strided
  model.attention_hidden = 128
  model.fusion = "weighted_sum"  # weighted_sum (paper) | weighted_mean (RAN) | none (no
  #                                attention: the plain baseline with one branch)
  model.bn_momentum = 0.9
  model.sync_batch_stats = True  # BatchNorm statistics over the global batch
  model.dtype = "float32"  # float32 | bfloat16 (compute; parameters stay float32)
  model.temperature = 1.0  # evaluation and prediction: softmax(log p / T) of the (mirror-
  #   averaged) probabilities p; a release stores the T fitted on validation
  #   (release.set_temperature); 1 = none
  model.inference_branches = ()  # () all | branch names: evaluate and predict with these
  #   branches' own classifiers alone (needs loss.aux_weight > 0): multi-view training's
  #   one-network inference, e.g. ("face",)
  model.part_size = 0  # 0: off | px < data.crops.size: the landmark-region branches (eyes, nose,
  #                      mouth) resized in the model to this size for the backbone, to save FLOPs

  # ---- how the model lowers to XLA: speed only, never the numbers (fer_jax/models/lowering.py)
  config.lowering = low = ml_collections.ConfigDict()
  low.branch_axis = "auto"  # auto (fold on CPU, vmap elsewhere) | vmap | fold
  low.conv_impl = "auto"  # auto (best measured: matmul on CPU, xla elsewhere) | xla | matmul
  #                         | hybrid | shifted (bench/RESULTS.md)
  low.small_conv_impl = "matmul"  # on CPU, for convolutions whose output map is small:
  low.small_map_pixels = 4  # at most this many pixels (XLA:CPU is slowest there)

  # ---- loss
  config.loss = loss = ml_collections.ConfigDict()
  loss.classification = "auto"  # auto (by label_mode) | a key of losses.CLASSIFICATION
  loss.margin = 0.03
  loss.constraint_weight = 1.0  # 0: no constraint term
  loss.constraint_pair = ("eyes", "occluded")  # mu of the first must exceed the second's
  loss.aux_weight = 0.0  # > 0: multi-view training, an auxiliary classifier on each branch's
  #                        own feature, its mean loss weighted by this (losses.auxiliary_loss)

  # ---- optimisation
  config.optimizer = opt = ml_collections.ConfigDict()
  opt.learning_rate = 0.01  # for batch_size 64; not rescaled with the batch
  opt.momentum = 0.9
  opt.nesterov = False
  opt.weight_decay = 5e-4  # on kernels only
  opt.schedule = "step"  # paper_literal | step | cosine | constant
  opt.decay_epochs = 10.0  # step: multiply by decay_factor every decay_epochs
  opt.decay_factor = 0.1
  opt.warmup_epochs = 0.0
  opt.grad_clip_norm = 0.0  # 0 = off
  opt.ema_decay = 0.0  # > 0: keep moving averages of the weights (state.ema_update), evaluated
  #                      in their place when eval_ema

  config.batch_size = 64  # global, over all devices and processes
  config.num_epochs = 30.0
  config.num_train_steps = -1  # > 0 overrides num_epochs

  # ---- loop
  config.log_every_steps = 50
  config.eval_every_steps = -1  # -1: every eval_every_epochs
  config.eval_every_epochs = 1.0
  config.checkpoint_every_steps = -1  # -1: with every evaluation
  config.keep_checkpoints = 3  # the last K (plus the best on validation)
  config.eval_batch_size = 128
  config.eval_ema = True  # evaluate (and predict with) the moving averages when the run has them
  config.eval_flip = False  # average each face's probabilities with its mirror image's
  config.eval_at_end = True
  config.plots = True

  # ---- prediction (--mode=predict): photos and videos; the model comes from the checkpoint
  config.predict = pred = ml_collections.ConfigDict()
  pred.landmarks = "face_alignment"  # face_alignment (dlib when its weights are absent) | dlib
  pred.face_alignment_dir = ""  # folder holding face-alignment's weight files ("" = torch hub)
  pred.frame_stride = 1  # video: process every n-th frame
  pred.recursive = False  # an input folder: also the images of its subfolders (named sub_a)
  pred.min_face_size = 0  # px: smaller detected boxes (shorter side) are ignored; 0 = the
  #   detector's own (detectors.KEEP_FACE: mtcnn 16, the others 20; 0 kept every box until
  #   2026-12-08, 1 does now). With BlazeFace 20 finds about 0.04 more of bench/classroom.py's
  #   20-110 px faces than 24 (0.77-0.84 false boxes a frame), 16 another 0.03-0.04 at
  #   0.89-0.99; with MTCNN 16 finds 0.05 more than 20 (bench/RESULTS.md, "Small faces: the
  #   size filter" and "Small faces: MTCNN")
  pred.min_face_fraction = 0.01  # ... and boxes under this fraction of the frame's shorter
  #   side where that is more: 40 px in a 6000x4000 photo, no change up to 2000 px at the
  #   defaults, so 720p and 1080p classrooms keep 16-20 px (bench/detect.py --large_photo)
  pred.detect_face_size = 0  # px: the detector's search is sized for faces this small
  #   (blazeface: its finest tiles; mtcnn: its first pyramid level), or for min_face_size where
  #   that is larger; 0 = the detector's own (detectors.SEARCH_FACE: blazeface 24, mtcnn 20).
  #   Smaller faces are still found, less often; a finer search costs time
  pred.max_faces = 64  # per frame, largest first (30 until 2026-12-08: with 20-40 faces a
  #   class frame often has more boxes; MTCNN found 0.015 more of bench/classroom.py's faces at
  #   64, at the same false boxes: bench/RESULTS.md, "Small faces: dim frames and the face limit")
  pred.batch_size = 32  # faces per jitted forward pass (the last batch is padded)
  pred.flip = "photos"  # photos | checkpoint | on | off: average each face with its mirror
  #   image as the checkpoint's eval_flip says on photos and folders, never on video (where a
  #   face's frames average over time; the mirror doubles the model's cost per frame); or as
  #   the checkpoint says everywhere, always, never (bench/RESULTS.md, "A lecture in real time")
  pred.detector = "auto"  # face boxes: auto | mtcnn | blazeface | hog | hog_up1 | hog_up2 |
  #   mmod | mmod_up1 (fer_jax/predict/detectors.py). auto (detectors.AUTO): mtcnn on photos
  #   and folders (bench/classroom.py: 0.76-0.77 of the 20-110 px faces against blazeface's
  #   0.55-0.56, fewer false boxes overall; 1.2 s more start-up: torch), blazeface on video
  #   and streams (mtcnn: 0.85-0.97x its frames/s end to end on a 400-frame 720p lecture, under
  #   15 in some sittings; about level in steady state), each falling back to the next that can
  #   run here: bench/RESULTS.md, "Small faces: MTCNN" and "... dim frames and the face limit"
  pred.detect_every = 10  # video: detect on every n-th processed frame, follow faces between
  #   (a face that enters is found within 0.4 s at 25 frames/s; every 5th costs 1.26x the time
  #   of a 720p lecture: bench/RESULTS.md, "A lecture in real time")
  pred.follow_weight = 0.5  # video: between detections a face's box moves this share of the way
  #   to where its landmarks put it each frame (1: all the way, as until 2026-12-08; 0: it
  #   stays where it was detected). bench/classroom.py --video: 0.5 has fewer false boxes than
  #   1 (1.21 against 1.49 a frame with mtcnn, 0.89 against 0.99 with blazeface) and finds as
  #   many faces or more; 0 does better still on slow sway and worse on fast (bench/RESULTS.md,
  #   "Faces followed in video")
  pred.iou_threshold = 0.3  # video tracker: a face continues a track at IoU >= this
  pred.max_track_gap = 10  # video tracker: a track ends after this many processed frames unseen
  pred.annotate = True  # write <stem>_annotated.jpg / annotated.mp4
  pred.overwrite = False  # an --output already holding results is refused; True: replace them
  pred.window_s = 10.0  # video: seconds per window of class_timeline.csv/png
  pred.blur_faces = False  # blur every face (its box, enlarged) in the annotated images/video
  pred.aggregate_only = False  # only class-level shares per window (a photo is a window): no
  #                              per-face rows, tracks or images, windows under min_group dropped
  pred.min_group = 5  # aggregate_only: a window with fewer faces is not written

  # ---- --mode=occlusion (and a study's occluded evaluations)
  config.occlusion = ml_collections.ConfigDict()
  config.occlusion.landmarks = "refit"  # refit: the part crops are cut from landmarks fitted
  #   again on the occluded face (prepare's fitter, the template where it fails), as a deployed
  #   model meets occlusion | oracle: from the unoccluded face's landmarks (an upper bound)
  config.occlusion.fit_cache = "~/.cache/fer_jax/fits"  # refit: landmark fits kept by the
  #   pixels they were fitted on (data/fit_cache.py), so the study's runs fit each occluded
  #   face once; "" = keep none (safe to delete)

  # ---- several processes (see README, multi-host)
  config.multihost = ml_collections.ConfigDict()
  config.multihost.coordinator_address = ""  # host:port; "" = single process, or the cluster's
  config.multihost.num_processes = 1
  config.multihost.process_id = 0
  config.multihost.auto = False  # let jax.distributed.initialize read the cluster environment
  return config


# ---- config.study: only a study config has it (configs/studies/, --mode=study, fer_jax/grid.py)
STUDY = dict(
    axes=(),  # (dotted key, tuple of values) pairs: the config keys the study varies
    combine="cross",  # cross: every combination of the axes' values | zip: the i-th values
    seeds=(),  # required: each cell runs once per seed (config.seed), e.g. (0, 1, 2)
    occlusion=False,  # also evaluate each finished run under the occluders (both protocols)
    labels=(),  # optional: one folder-safe name per cell, in cell order
    name="study",  # the summary files' stem: WORKDIR/<name>.csv, .md, .png, .json
    budget_s=0.0,  # > 0: the study stops itself after this many seconds (the command resumes)
)


def study_section(**given) -> ml_collections.ConfigDict:
  """A `config.study` section: `STUDY` with the `given` keys' values; a key `STUDY` lacks is a
  ConfigError naming it."""
  unknown = sorted(set(given) - set(STUDY))
  if unknown:
    near = difflib.get_close_matches(unknown[0], list(STUDY), n=1)
    raise errors.ConfigError(f"config.study has no key {unknown[0]!r}"
                             f"{f' (did you mean {near[0]!r}?)' if near else ''}; its keys: "
                             f"{', '.join(STUDY)}")
  return ml_collections.ConfigDict({**STUDY, **given})
