"""Noise paths (`schedules.py`: VP linear / cosine) and samplers (`samplers.py`: DDIM)."""

from .samplers import ddim_invert, ddim_sample, ddim_timesteps
from .schedules import (
    PARAMETERIZATIONS,
    SCHEDULES,
    VPSchedule,
    split_prediction,
    training_target,
)

__all__ = [
    "PARAMETERIZATIONS",
    "SCHEDULES",
    "VPSchedule",
    "ddim_invert",
    "ddim_sample",
    "ddim_timesteps",
    "split_prediction",
    "training_target",
]
