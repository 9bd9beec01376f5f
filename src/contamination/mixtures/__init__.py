"""Mixture manifests: real datasets with a share of items replaced by or appended from others."""
