"""Metrics of image sets and captions: Inception features, FID and precision/recall, caption scores, power spectra."""
