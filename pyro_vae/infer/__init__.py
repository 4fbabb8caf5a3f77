"""Inference: objectives, training, evaluation (importance sampling, AIS), imputation, selection."""
