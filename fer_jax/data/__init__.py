"""The data: FERPlus prepared as a TFDS dataset with landmarks (ferplus, labels, landmarks),
batches (pipeline, memory) and the five crops of each face (crops)."""
