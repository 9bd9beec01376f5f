"""The smoke run's stand-ins: synthetic datasets in the real layouts and tiny random models."""
