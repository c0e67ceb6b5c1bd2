"""Every matplotlib figure of fer_jax in one place (Agg backend, PNG files)."""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import numpy as np

from fer_jax import files
from fer_jax import jsonl


@functools.cache
def _pyplot():
  """matplotlib.pyplot on the Agg backend, imported at the first figure: importing it costs
  0.7 s, which every command (prediction on one photo included) paid at start before."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as pyplot  # pylint: disable=g-import-not-at-top
  return pyplot


def _save(fig, path, tight: bool = True) -> str:
  """Writes the figure to `path` whole or not at all (`files.atomic_path`), then closes it.
  `tight` crops it to what is drawn (which draws it twice); without, the caller's layout."""
  path = pathlib.Path(path)
  try:
    with files.atomic_path(path) as tmp:
      fig.savefig(tmp, dpi=110, bbox_inches="tight" if tight else None,
                  format=path.suffix.lstrip(".") or "png")
  finally:
    _pyplot().close(fig)
  return str(path)


def confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path, title: str = "") -> str:
  """Row-normalised confusion matrix (rows: true class), counts in each cell."""
  cm = np.asarray(cm, np.float64)
  norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  fig, ax = _pyplot().subplots(figsize=(6.4, 5.6))
  im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
              color="white" if norm[i, j] > 0.5 else "black")
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title or "confusion matrix (row-normalised colours, counts)")
  fig.colorbar(im, ax=ax, fraction=0.046)
  return _save(fig, path)


def branch_weights(mu: np.ndarray, branch_names: Sequence[str], path, title: str = "") -> str:
  """Distribution of each branch's attention weight mu over the evaluated faces."""
  mu = np.asarray(mu)
  fig, ax = _pyplot().subplots(figsize=(6.4, 4))
  ax.violinplot([mu[:, i] for i in range(mu.shape[1])], showmeans=True)
  ax.set_xticks(range(1, len(branch_names) + 1), branch_names)
  ax.set_ylabel("mu (sigmoid weight)")
  ax.set_ylim(0, 1)
  ax.set_title(title or f"branch weights over {len(mu)} faces")
  return _save(fig, path)


def reliability(calibration: dict, path, title: str = "") -> str:
  """The reliability diagram of an evaluation (`calibration.report`): accuracy against
  confidence per bin (bars, the diagonal is perfect calibration), the faces per bin below."""
  rel = calibration["reliability"]
  bins = len(rel["count"])
  centres = (np.arange(bins) + 0.5) / bins
  acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
  fig, (ax, ax_n) = _pyplot().subplots(2, 1, figsize=(5.2, 6.0), sharex=True,
                                 gridspec_kw=dict(height_ratios=(3, 1)))
  ax.bar(centres, np.nan_to_num(acc), width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy")
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
  ax.set_ylabel("accuracy")
  ax.set_ylim(0, 1)
  ax.legend(loc="upper left", fontsize=8)
  ax.set_title(title or (f"T = {calibration['temperature']:.3g}: ECE {calibration['ece']:.3f}, "
                         f"NLL {calibration['nll']:.3f}"), fontsize=9)
  ax_n.bar(centres, rel["count"], width=1 / bins, color="C7")
  ax_n.set_xlabel("confidence (the largest class probability)")
  ax_n.set_ylabel("faces")
  ax_n.set_xlim(0, 1)
  return _save(fig, path)


def training_curves(metrics_jsonl, path) -> str | None:
  """Loss, accuracy, learning rate and mean branch weights against step, from metrics.jsonl."""
  rows = jsonl.read_metrics(metrics_jsonl)
  train = [r for r in rows if r.get("kind") == "train"]
  evals = [r for r in rows if r.get("kind") == "eval"]
  if not train:
    return None
  fig, axes = _pyplot().subplots(1, 4, figsize=(17, 3.6))
  steps = [r["step"] for r in train]
  for key in ("loss", "ce", "constraint"):
    axes[0].plot(steps, [r.get(key, np.nan) for r in train], label=key)
  axes[0].set_yscale("log")
  axes[0].legend()
  axes[0].set_title("training loss")
  axes[1].plot(steps, [r.get("accuracy", np.nan) for r in train], label="train (batch)")
  if evals:
    axes[1].plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-",
                 label="validation")
  axes[1].legend()
  axes[1].set_title("accuracy")
  axes[2].plot(steps, [r.get("learning_rate", np.nan) for r in train])
  axes[2].set_yscale("log")
  axes[2].set_title("learning rate")
  mu_keys = sorted({k for r in train for k in r if k.startswith("mu/")})
  for k in mu_keys:
    axes[3].plot(steps, [r.get(k, np.nan) for r in train], label=k[3:])
  axes[3].set_ylim(0, 1)
  axes[3].legend(fontsize=7)
  axes[3].set_title("mean branch weight")
  for ax in axes:
    ax.set_xlabel("step")
  return _save(fig, path)


def crops_grid(faces: Sequence[dict], branch_names: Sequence[str], path, title: str = "") -> str:
  """One row per face: the face with its landmarks and branch boxes, then each crop.

  Each face dict holds `image` [F, F, 1|3] (0-1 or uint8, view coordinates), `landmarks`,
  `boxes` [nb, 4], `occluder` [4], `crops` [nb, S, S, C] and an optional `caption`.
  """
  n, nb = len(faces), len(branch_names)
  fig, axes = _pyplot().subplots(n, nb + 1, figsize=(1.6 * (nb + 1), 1.7 * n), squeeze=False)
  colours = _pyplot().cm.tab10(np.arange(nb))
  for r, face in enumerate(faces):
    img = np.asarray(face["image"], np.float32)
    img = img / 255.0 if img.max() > 1.5 else img
    ax = axes[r, 0]
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    lm = np.asarray(face["landmarks"])
    ax.scatter(lm[:, 0], lm[:, 1], s=3, c="red")
    for b, (name, box) in enumerate(zip(branch_names, np.asarray(face["boxes"]))):
      if np.allclose(box, [-0.5, -0.5, img.shape[1] - 0.5, img.shape[0] - 0.5]):
        continue  # a whole-face branch (face, occluded, occluded_upper): nothing to outline
      ax.add_patch(_pyplot().Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                                 fill=False, color=colours[b], lw=1))
    if "occluder" in face and "occluded" in branch_names:
      o = np.asarray(face["occluder"])
      ax.add_patch(_pyplot().Rectangle((o[0], o[1]), o[2] - o[0], o[3] - o[1], fill=False,
                                 color=colours[list(branch_names).index("occluded")], lw=1,
                                 ls="--"))
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_title(face.get("caption", ""), fontsize=7)
    for c, name in enumerate(branch_names):
      crop = np.asarray(face["crops"][c], np.float32)
      axes[r, c + 1].imshow(crop[..., 0] if crop.shape[-1] == 1 else crop, cmap="gray")
      if r == 0:
        axes[r, c + 1].set_title(name, fontsize=8, color=colours[c])
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (1.7 * n)) if title else None)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def track_timeline(times: np.ndarray, probs: np.ndarray, eye_weight: np.ndarray | None,
                   class_names: Sequence[str], path, title: str = "") -> str:
  """One tracked face over a video: expression probabilities (stacked) and, for a model with
  an `eyes` branch, its weight (no panel when `eye_weight` is None or all NaN). A video has a
  plot per track, so the layout is fixed rather than measured (one drawing per plot)."""
  weighted = eye_weight is not None and not np.all(np.isnan(np.asarray(eye_weight, float)))
  if weighted:
    fig, (ax1, ax2) = _pyplot().subplots(2, 1, figsize=(8, 4.6), sharex=True,
                                         gridspec_kw=dict(height_ratios=[2, 1]))
  else:
    fig, ax1 = _pyplot().subplots(figsize=(8, 3.2))
  ax1.stackplot(times, np.asarray(probs).T, labels=class_names, alpha=0.85)
  ax1.set_ylim(0, 1)
  ax1.set_ylabel("expression probability")
  ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  if weighted:
    ax2.plot(times, eye_weight, "k.-")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("eye weight (mu)")
  (ax2 if weighted else ax1).set_xlabel("time (s)")
  ax1.set_title(title, fontsize=10)
  fig.subplots_adjust(left=0.09, right=0.8, top=0.91 if weighted else 0.88,
                      bottom=0.1 if weighted else 0.15, hspace=0.08)
  return _save(fig, path, tight=False)


def class_timeline(starts: np.ndarray, ends: np.ndarray, shares: np.ndarray,
                   eye_weight: np.ndarray, faces: np.ndarray, class_names: Sequence[str], path,
                   title: str = "") -> str:
  """A class over a video, window by window: the share of each expression among its faces
  (stacked bars as wide as the windows), and the mean eye weight with the number of faces. A
  window without shares (no face, or too few to show) is left blank."""
  starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
  shares = np.asarray(shares, np.float64).reshape(len(starts), len(class_names))
  fig, (ax1, ax2) = _pyplot().subplots(2, 1, figsize=(8, 4.6), sharex=True,
                                 gridspec_kw=dict(height_ratios=[2, 1]))
  bottom = np.zeros(len(starts))
  colours = _pyplot().cm.tab10(np.arange(len(class_names)))
  for i, name in enumerate(class_names):
    ax1.bar(starts, np.nan_to_num(shares[:, i]), width=ends - starts, bottom=bottom,
            align="edge", color=colours[i], label=name, linewidth=0)
    bottom += np.nan_to_num(shares[:, i])
  ax1.set_ylim(0, 1)
  ax1.set_ylabel("share of faces")
  ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  mid = (starts + ends) / 2
  ax2.plot(mid, np.asarray(eye_weight, np.float64), "k.-")
  ax2.set_ylim(0, 1)
  ax2.set_ylabel("mean eye weight")
  ax2.set_xlabel("time (s)")
  counts = ax2.twinx()
  counts.bar(starts, np.asarray(faces, np.float64), width=ends - starts, align="edge",
             color="grey", alpha=0.25)
  counts.set_ylabel("faces", color="grey")
  ax2.set_zorder(counts.get_zorder() + 1)  # the eye weight over the face counts
  ax2.patch.set_visible(False)
  ax1.set_title(title)
  return _save(fig, path)


def occlusion(names: Sequence[str], accuracy: Sequence[float], mu: np.ndarray,
              branch_names: Sequence[str], path, title: str = "",
              examples: np.ndarray | None = None) -> str:
  """Accuracy per occluder (bars, the `none` accuracy dashed) beside the mean branch weight
  per occluder and branch (heatmap `mu` [occluders, branches]), under a row of one face seen
  through each occluder when `examples` [occluders, F, F, 1|3] (0-1 or uint8) is given."""
  n, mu = len(names), np.asarray(mu, np.float64)
  accuracy = np.asarray(accuracy, np.float64)
  fig = _pyplot().figure(figsize=(max(10.0, 0.75 * n), 6.4 if examples is None else 7.6))
  grid = fig.add_gridspec(2 if examples is not None else 1, n,
                          height_ratios=[1, 6] if examples is not None else None)
  if examples is not None:
    for i, image in enumerate(np.asarray(examples, np.float32)):
      ax = fig.add_subplot(grid[0, i])
      image = image / 255.0 if image.max() > 1.5 else image
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
      ax.set_title(names[i], fontsize=6)
      ax.set_xticks([])
      ax.set_yticks([])
  half = n // 2
  ax_acc = fig.add_subplot(grid[-1, :half])
  ax_mu = fig.add_subplot(grid[-1, half:])
  rows = np.arange(n)
  ax_acc.barh(rows, accuracy, color=_pyplot().cm.tab10(0))
  for r, a in zip(rows, accuracy):
    ax_acc.text(a if np.isfinite(a) else 0, r, f" {a:.3f}", va="center", fontsize=7)
  if "none" in names:
    ax_acc.axvline(accuracy[list(names).index("none")], color="k", ls="--", lw=1)
  ax_acc.set_yticks(rows, names, fontsize=8)
  ax_acc.set_ylim(n - 0.5, -0.5)
  ax_acc.set_xlim(0, 1.12)
  ax_acc.set_xticks(np.linspace(0, 1, 6))
  ax_acc.set_xlabel("accuracy")
  im = ax_mu.imshow(mu, cmap="viridis", vmin=0, vmax=1, aspect="auto")
  for r in range(mu.shape[0]):
    for c in range(mu.shape[1]):
      ax_mu.text(c, r, f"{mu[r, c]:.2f}", ha="center", va="center", fontsize=7,
                 color="black" if mu[r, c] > 0.6 else "white")
  ax_mu.set_xticks(range(len(branch_names)), branch_names, fontsize=8)
  ax_mu.set_yticks(rows, [])
  ax_mu.set_title("mean branch weight mu", fontsize=9)
  fig.colorbar(im, ax=ax_mu, fraction=0.046)
  fig.suptitle(title or f"accuracy and branch weights under {n} occluders", fontsize=10)
  return _save(fig, path)


def study_accuracy(labels: Sequence[str], series: dict[str, Sequence[Sequence[float]]], path, *,
                   x: Sequence[float] | None = None, xlabel: str = "", title: str = "") -> str:
  """A study's accuracy per cell: the mean over seeds with +- one sample standard deviation
  as error bars, and each seed's value as a dot.

  `series` maps a curve's name (the validation split, an occluder) to, per cell, the accuracies
  (fractions) of its finished seeds. With numeric `x`, one per cell (a study of one numeric
  axis, as the paper's Figure 3 sweeps the margin), each series is a line against x; otherwise
  each cell gets a group of bars, named by `labels`, or, when there are more series than cells
  (a few arms under many occluders), each series gets a group with a bar per cell.
  """
  def stats(values):
    v = np.asarray(values, np.float64) * 100
    if not len(v):
      return np.nan, 0.0
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else 0.0)

  n = len(labels)
  names, per = list(series), list(series.values())
  groups, members = list(labels), names
  if x is None and len(names) > n:  # more curves than cells: a group per curve, a bar per cell
    groups, members = names, list(labels)
    per = [[series[name][c] for name in names] for c in range(n)]
  colors = (_pyplot().cm.tab20(np.linspace(0, 1, len(members), endpoint=False))
            if len(members) > 10 else [f"C{i}" for i in range(len(members))])
  wide = max(5.0, 0.25 * n * len(series) + 2.5) if x is None else 6.0
  fig, ax = _pyplot().subplots(figsize=(wide, 4.0))
  width = 0.8 / max(len(members), 1)
  for s, (name, per_group) in enumerate(zip(members, per)):
    mean, std = np.array([stats(v) for v in per_group]).T
    if x is not None:
      pos = np.asarray(x, np.float64)
      ax.errorbar(pos, mean, yerr=std, fmt="o-", capsize=4, label=name, color=colors[s])
    else:
      pos = np.arange(len(groups)) + (s - (len(members) - 1) / 2) * width
      ax.bar(pos, mean, width, yerr=std, capsize=3, label=name, alpha=0.8, color=colors[s])
    for p, values in zip(pos, per_group):
      ax.scatter([p] * len(values), np.asarray(values, np.float64) * 100, s=9, c="k",
                 alpha=0.4, zorder=3)
  if x is None:
    many = len(groups) > 3
    ax.set_xticks(range(len(groups)), groups, rotation=20 if many else 0,
                  ha="right" if many else "center", fontsize=8)
  else:
    ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
  ax.set_ylabel("accuracy (%)")
  if len(members) > 1:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  ax.grid(axis="y", alpha=0.3)
  ax.set_title(title, fontsize=9)
  return _save(fig, path)
