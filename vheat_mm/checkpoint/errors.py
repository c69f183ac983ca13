"""The exception every part of :mod:`vheat_mm.checkpoint` raises for a checkpoint it refuses."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""
