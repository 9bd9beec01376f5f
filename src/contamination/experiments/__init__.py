"""The experiments that train or score a model on a mixture (classification, captioning, IDDPM, MAE, detection) and their shared training skeleton."""
