"""The FERPlus builder: both real layouts give the same examples; bad input is named and counted."""

import csv
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from fer_jax.data import ferplus, labels, pipeline

VOTE_HEADER = ["Usage", "Image name"] + list(labels.VOTE_NAMES)


def _rows(folder: pathlib.Path):
  return list(csv.reader(open(folder / "label.csv")))


def write_kaggle(sample: pathlib.Path, out: pathlib.Path, icml: bool = False) -> None:
  """Kaggle's fer2013.csv + Microsoft's fer2013new.csv from the sample's PNGs, with the quirks
  of the real files: rows without an image name (not faces) and a name given to two rows."""
  out.mkdir(parents=True, exist_ok=True)
  pixel_rows, vote_rows = [], []
  junk = " ".join(["7"] * 2304)
  for folder, usage in (("FER2013Train", "Training"), ("FER2013Valid", "PublicTest")):
    for i, row in enumerate(_rows(sample / folder)):
      img = cv2.imread(str(sample / folder / row[0]), cv2.IMREAD_GRAYSCALE)
      name = row[0]
      if i == 3:  # an earlier row with the same name; the later row must win
        pixel_rows.append(("0", junk, usage))
        vote_rows.append([usage, name] + ["1"] * 10)
      if i % 50 == 7:  # a non-face row without a name
        pixel_rows.append(("0", junk, usage))
        vote_rows.append([usage, ""] + ["0"] * 9 + ["10"])
      pixel_rows.append((str(int(np.argmax(row[2:10]))), " ".join(map(str, img.ravel())), usage))
      vote_rows.append([usage, name] + row[2:12])
  with open(out / ("icml_face_data.csv" if icml else "fer2013.csv"), "w", newline="") as f:
    w = csv.writer(f)
    if icml:  # its headers carry spaces, and its columns come in another order
      w.writerow(["emotion", " Usage", " pixels"])
      w.writerows((e, u, p) for e, p, u in pixel_rows)
    else:
      w.writerow(["emotion", "pixels", "Usage"])
      w.writerows(pixel_rows)
  with open(out / "fer2013new.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(VOTE_HEADER)
    w.writerows(vote_rows)


def by_name(sources):
  out = {}
  for split, src in sources.items():
    for i in range(len(src)):
      ex = src[i]
      name = ex["name"].decode() if isinstance(ex["name"], bytes) else ex["name"]
      out[(split, name)] = (ferplus.decode_png(ex["image"]), np.asarray(ex["votes"]),
                            np.asarray(ex["landmarks"]))
  return out


@pytest.mark.parametrize("icml", [False, True])
def test_both_layouts_give_the_same_examples(sample_dir, tmp_path, icml):
  kaggle = tmp_path / "kaggle"
  write_kaggle(sample_dir, kaggle, icml=icml)
  assert ferplus.detect_layout(kaggle) == "kaggle"
  assert ferplus.detect_layout(sample_dir) == "microsoft"
  ms = ferplus.builder(str(tmp_path / "ms"), "template")
  ms.download_and_prepare(download_config=ferplus.tfds.download.DownloadConfig(
      manual_dir=str(sample_dir)))
  kg = ferplus.builder(str(tmp_path / "kg"), "template")
  kg.download_and_prepare(download_config=ferplus.tfds.download.DownloadConfig(
      manual_dir=str(kaggle)))
  a, b = by_name(ms.as_data_source()), by_name(kg.as_data_source())
  assert sorted(a) == sorted(b) and len(a) == 320 + 96
  for key in a:
    for x, y in zip(a[key], b[key]):
      np.testing.assert_array_equal(x, y)
  assert kg.reports["train"].skipped["no image name (not a face)"] == 7
  assert kg.reports["train"].skipped["repeated name (earlier row dropped)"] == 1


def test_prepare_counts_majority(prepared):
  _, sources = prepared
  assert sorted(sources) == ["train", "validation"]  # no FER2013Test/: no test split
  votes = pipeline.all_votes(sources["train"])
  kept, _ = labels.targets_for_split(votes, "majority")
  assert len(votes) == 320 and kept.sum() == 291


def test_bad_files_are_skipped_named_and_counted(sample_dir, tmp_path, caplog):
  manual = tmp_path / "manual"
  shutil.copytree(sample_dir / "FER2013Valid", manual / "FER2013Valid")
  rows = _rows(manual / "FER2013Valid")
  (manual / "FER2013Valid" / rows[0][0]).write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  cv2.imwrite(str(manual / "FER2013Valid" / rows[1][0]), np.zeros((64, 64), np.uint8))
  rgb = cv2.imread(str(manual / "FER2013Valid" / rows[2][0]), cv2.IMREAD_COLOR)
  cv2.imwrite(str(manual / "FER2013Valid" / rows[2][0]), rgb)  # 3 channels: converted, kept
  (manual / "FER2013Valid" / rows[3][0]).unlink()
  with open(manual / "FER2013Valid" / "label.csv", "a") as f:
    f.write("fer9999999.png,\"(0, 0, 48, 48)\",1,2\n")  # a truncated row
  b = ferplus.builder(str(tmp_path / "tfds"), "template")
  with caplog.at_level("WARNING"):
    b.download_and_prepare(download_config=ferplus.tfds.download.DownloadConfig(
        manual_dir=str(manual)))
  report = b.reports["validation"]
  assert report.written == 96 - 3
  assert dict(report.skipped) == {"unreadable image": 1, "wrong image size": 1,
                                  "missing image": 1, "malformed label row": 1}
  text = caplog.text
  for culprit in (rows[0][0], rows[1][0], rows[3][0], "line 97"):
    assert culprit in text
  assert sorted(b.as_data_source()) == ["validation"]  # the absent splits are absent


def test_csv_rows_with_wrong_pixel_count_are_skipped(sample_dir, tmp_path, caplog):
  kaggle = tmp_path / "kaggle"
  write_kaggle(sample_dir, kaggle)
  lines = (kaggle / "fer2013.csv").read_text().splitlines()
  parts = lines[5].split(",")
  parts[1] = " ".join(parts[1].split()[:-4])  # 2300 pixels
  lines[5] = ",".join(parts)
  (kaggle / "fer2013.csv").write_text("\n".join(lines) + "\n")
  b = ferplus.builder(str(tmp_path / "tfds"), "template")
  with caplog.at_level("WARNING"):
    b.download_and_prepare(download_config=ferplus.tfds.download.DownloadConfig(
        manual_dir=str(kaggle)))
  assert b.reports["train"].skipped["wrong pixel count"] == 1
  assert "2300 pixels, expected 2304" in caplog.text
