"""What `--mode=predict` (fer_jax/modes/predict.py) is made of: the input's frames
(`inputs.py`), the faces found in them (`detectors.py`, `faces.py`), the model over their crops
(`model.py`), IoU tracks (`tracking.py`), rows and annotated frames (`outputs.py`,
`annotate.py`), tracks and the class timeline (`timelines.py`), written frame by frame
(`recorder.py`)."""
