"""Asset checks, evaluated inside the asset that produces the value (no second load): finite Gaussian
parameters (blocking: downstream stages do not run on NaNs), Gaussian count in range, and the input-view PSNR
above a floor (a warning: a poor fit is worth a look, not a failed pipeline)."""

from __future__ import annotations

from collections.abc import Iterator

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from glimpse3d_core.types import Gaussians

MIN_GAUSSIANS = 500
MAX_GAUSSIANS = 5_000_000
INPUT_PSNR_FLOOR_DB = 20.0
"""Input-view PSNR (on white) below which the fit is flagged: the photo's own view is fitted directly."""
FINITE = "finite_parameters"
COUNT = "gaussian_count_in_range"
PSNR_FLOOR = "input_psnr_above_floor"


def gaussian_specs(asset: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(FINITE, asset=asset, blocking=True, description="no NaN/inf in any Gaussian parameter"),
        AssetCheckSpec(COUNT, asset=asset,
                       description=f"between {MIN_GAUSSIANS:,} and {MAX_GAUSSIANS:,} Gaussians"),
    ]


def gaussian_checks(asset: str, gaussians: Gaussians) -> Iterator[AssetCheckResult]:
    bad = [k for k, v in gaussians.tensors().items() if v.numel() and not bool(v.isfinite().all())]
    yield AssetCheckResult(check_name=FINITE, asset_key=asset, passed=not bad,
                           metadata={"non_finite_fields": ", ".join(bad) or "none"})
    n = len(gaussians)
    yield AssetCheckResult(check_name=COUNT, asset_key=asset, passed=MIN_GAUSSIANS <= n <= MAX_GAUSSIANS,
                           metadata={"num_gaussians": n, "min": MIN_GAUSSIANS, "max": MAX_GAUSSIANS})


def psnr_spec(asset: str) -> AssetCheckSpec:
    return AssetCheckSpec(PSNR_FLOOR, asset=asset, description=f"input-view PSNR >= {INPUT_PSNR_FLOOR_DB} dB")


def psnr_check(asset: str, input_psnr: float) -> AssetCheckResult:
    return AssetCheckResult(check_name=PSNR_FLOOR, asset_key=asset, severity=AssetCheckSeverity.WARN,
                            passed=bool(input_psnr >= INPUT_PSNR_FLOOR_DB),  # NaN fails, inf passes
                            metadata={"input_psnr": input_psnr, "floor_db": INPUT_PSNR_FLOOR_DB})
