"""fer_jax: occlusion-robust facial expression recognition in JAX (the package; main.py runs
its modes, fer_jax/modes/)."""
