"""Evaluation of trained runs (SPEC section 6): linear probes (attribute AP, regression
Pearson r / MSE), TAD and ATTRS, reconstruction (MSE, PSNR, SSIM, LPIPS) and FID, as the
`python -m arcdae_fast.eval` command and during training (`train.eval_every`)."""

from .suites import Evaluator, SuiteUnavailable

__all__ = ["Evaluator", "SuiteUnavailable"]
