"""Pure-PyTorch differentiable EWA splatting: the CPU reference rasteriser.

It follows gsplat 1.5's "classic" 3DGS rasteriser so that the two agree pixel for pixel:

* **Projection** (per camera and Gaussian): camera-space mean ``t = R x + T``; 3D covariance ``M M^T`` with
  ``M = rot(q / |q|) diag(exp(log_scales))``; the perspective Jacobian ``J`` at ``t`` with x/z and y/z clamped
  to the field of view plus a 30 % margin; 2D covariance ``J R M (J R M)^T + eps2d I`` (eps2d = 0.3 px);
  mean ``(fx x/z + cx, fy y/z + cy)`` with pixel centres at integer + 0.5.
* **Culling**: z outside [near, far], opacity below 1/255, both radii <= ``radius_clip``, or the bounding box
  entirely off the image. The radius per axis is ``ceil(e * sqrt(cov2d_ii))`` with
  ``e = min(3.33, sqrt(2 ln(255 opacity)))``, which encloses every pixel where the Gaussian's alpha reaches 1/255,
  so the tile binning below never changes the image.
* **Compositing**: ``alpha = min(0.999, opacity * exp(-0.5 d^T conic d))``, dropped below 1/255; front to back
  in increasing z of the mean; a pixel stops before the Gaussian that would bring its transmittance to <= 1e-4.
  Output channels: colour (premultiplied, i.e. over black), sum of ``w_i z_i`` and alpha.

Memory stays bounded: the image is cut into square tiles; each (camera, tile) gets the depth-sorted list of
Gaussians whose bounding box touches it and whose alpha reaches 1/255 at one of its pixel centres; tiles of
similar list length are batched into chunks of at most ``chunk_pairs`` pixel-Gaussian pairs and composited
densely. The compositing step is a custom autograd function
whose backward recomputes the per-pair terms instead of storing them, so memory during training is
O(chunk_pairs + intersections) rather than O(pixels x Gaussians). Gradients reach every Gaussian parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glimpse3d_core.render.common import expected_depth
from glimpse3d_core.render.sh import sh_to_rgb
from glimpse3d_core.types import Gaussians

ALPHA_MIN = 1.0 / 255.0
"""Per-pair alpha below which a Gaussian is skipped (gsplat's ALPHA_THRESHOLD)."""
ALPHA_MAX = 0.999
"""Per-pair alpha is clamped here so that a single Gaussian never makes a pixel fully opaque."""
TRANSMITTANCE_MIN = 1e-4
"""A pixel stops compositing before the Gaussian that would bring its transmittance to or below this."""
EXTEND_MAX = 3.33
"""Largest bounding-box half-size in standard deviations."""
FOV_MARGIN = 0.3
"""The Jacobian clamps x/z, y/z to the image's field of view widened by this fraction (as 3DGS and gsplat do)."""
_LOG_ALPHA_MIN = math.log(ALPHA_MIN)
_LOG_ALPHA_MAX = math.log(ALPHA_MAX)
_LOG_T_MIN = math.log(TRANSMITTANCE_MIN)
_CULL_MARGIN = 1e-3
"""Pairs are culled only if their log-alpha misses the 1/255 cut by this much at every pixel of the tile."""


@dataclass(frozen=True)
class TorchRasterConfig:
    """Options of the PyTorch rasteriser. ``eps2d`` and ``radius_clip`` change the image and default to
    gsplat.rasterization's values. The others only change speed and memory: ``tile_size`` (pixels per tile side;
    small tiles waste fewer pairs on small splats, 4 was fastest on 2 CPU cores for 10k-50k Gaussians at
    128-256 px), ``chunk_pairs`` (pixel-Gaussian pairs composited at once, i.e. working memory), ``block``
    (Gaussians per compositing step, the granularity of early termination) and ``cache_pairs`` (pairs whose
    per-pair terms, 13 bytes each in float32, forward keeps for backward instead of recomputing them)."""

    tile_size: int = 4
    eps2d: float = 0.3
    radius_clip: float = 0.0
    chunk_pairs: int = 1 << 18
    block: int = 256
    cache_pairs: int = 1 << 23


@dataclass
class Projection:
    """Per (camera, Gaussian) screen-space quantities, all [C,N,...]."""

    means2d: torch.Tensor  # [C,N,2] pixels
    conics: torch.Tensor  # [C,N,3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: torch.Tensor  # [C,N] camera-space z
    radii: torch.Tensor  # [C,N,2] int32 bounding-box half-sizes in pixels; 0 where culled
    visible: torch.Tensor  # [C,N] bool


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [N,3,3] from wxyz quaternions [N,4] (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # fmt: skip


def project(
    g: Gaussians,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    config: TorchRasterConfig,
) -> Projection:
    """EWA projection of every Gaussian into every camera, with gsplat's culling rules (see module docstring)."""
    R, T = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mean_c = torch.einsum("cij,nj->cni", R, g.means) + T[:, None]  # [C,N,3]
    x, y, z = mean_c.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite (and their grads 0)

    fx, fy, cx, cy = (Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None])
    lim_x_pos = (width - cx) / fx + FOV_MARGIN * 0.5 * width / fx
    lim_x_neg = cx / fx + FOV_MARGIN * 0.5 * width / fx
    lim_y_pos = (height - cy) / fy + FOV_MARGIN * 0.5 * height / fy
    lim_y_neg = cy / fy + FOV_MARGIN * 0.5 * height / fy
    u, v = x / z_safe, y / z_safe
    uc = torch.maximum(torch.minimum(u, lim_x_pos), -lim_x_neg)
    vc = torch.maximum(torch.minimum(v, lim_y_pos), -lim_y_neg)
    # Rows of J R (J: perspective Jacobian at the clamped point), then J R M, all elementwise: [C,N,3] each.
    R0, R1, R2 = R[:, None, 0], R[:, None, 1], R[:, None, 2]
    jr0 = (fx / z_safe)[..., None] * (R0 - uc[..., None] * R2)
    jr1 = (fy / z_safe)[..., None] * (R1 - vc[..., None] * R2)
    M = quat_to_rotmat(g.quats) * g.log_scales.exp()[:, None, :]  # [N,3,3], world covariance = M M^T
    jrm0 = (jr0[..., :, None] * M).sum(-2)
    jrm1 = (jr1[..., :, None] * M).sum(-2)
    a = (jrm0 * jrm0).sum(-1) + config.eps2d
    b = (jrm0 * jrm1).sum(-1)
    c = (jrm1 * jrm1).sum(-1) + config.eps2d
    det = a * c - b * b
    det_ok = det > 0
    inv_det = 1.0 / torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c * inv_det, -b * inv_det, a * inv_det], dim=-1)
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)

    with torch.no_grad():
        opacity = torch.sigmoid(g.opacity_logits)[None].expand_as(z)
        opaque_enough = opacity >= ALPHA_MIN
        extend = torch.sqrt(2.0 * torch.log(opacity.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(EXTEND_MAX)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        big_enough = (rx > config.radius_clip) | (ry > config.radius_clip)
        mx, my = means2d.unbind(-1)
        on_image = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        visible = in_depth & det_ok & opaque_enough & big_enough & on_image
        radii = torch.stack([rx, ry], dim=-1).where(visible[..., None], 0).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=z, radii=radii, visible=visible)


@dataclass
class TileBins:
    """Depth-sorted (camera, tile) -> Gaussian lists, flattened. Tiles are numbered ``cam * n_tiles + row * tiles_x
    + col``; ``entry_*`` are [M] in order of (tile, depth); ``tile_ids``/``starts``/``counts`` list the non-empty
    tiles by decreasing count."""

    entry_gauss: torch.Tensor  # [M] flat index cam * N + gaussian
    entry_centre: torch.Tensor  # [M,2] pixel coordinates of the entry's tile centre
    tile_ids: torch.Tensor  # [B]
    starts: torch.Tensor  # [B]
    counts: torch.Tensor  # [B]
    tiles_x: int
    tiles_y: int


def _pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[P,6] monomials (x^2, xy, y^2, x, y, 1) of pixel-centre offsets from the tile centre, row-major."""
    offs = torch.arange(tile_size, dtype=dtype, device=device) + 0.5 - tile_size / 2.0
    py, px = torch.meshgrid(offs, offs, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    return torch.stack([px * px, px * py, py * py, px, py, torch.ones_like(px)], dim=-1)


def _pair_coefficients(
    means2d: torch.Tensor, conics: torch.Tensor, log_opacity: torch.Tensor, centres: torch.Tensor
) -> torch.Tensor:
    """[M,6] coefficients c such that log-alpha = c . (x^2, xy, y^2, x, y, 1) for pixel offsets (x, y) from the
    tile centre ``centres`` [M,2]: log(opacity) - 0.5 d^T conic d with d = offset - (mean2d - centre)."""
    a, b, c = conics.unbind(-1)
    ux, uy = (means2d - centres).unbind(-1)
    sigma_u = 0.5 * (a * ux * ux + c * uy * uy) + b * ux * uy
    return torch.stack([-0.5 * a, -b, -0.5 * c, a * ux + b * uy, b * ux + c * uy, log_opacity - sigma_u], dim=-1)


def _reaches_any_pixel(coeffs: torch.Tensor, basis: torch.Tensor, rows: int = 1 << 16) -> torch.Tensor:
    """[M] bool: the pair's alpha reaches 1/255 at some pixel centre of its tile (with a small margin, so that
    rounding in the compositing matmul can never resurrect a dropped pair)."""
    keep = [
        (coeffs[i : i + rows] @ basis.T).amax(dim=-1) >= _LOG_ALPHA_MIN - _CULL_MARGIN
        for i in range(0, len(coeffs), rows)
    ]
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool, device=coeffs.device)


def bin_tiles(proj: Projection, log_opacity: torch.Tensor, width: int, height: int, tile_size: int) -> TileBins:
    """Assign each visible Gaussian to the tiles its bounding box overlaps, keep the (tile, Gaussian) pairs whose
    alpha reaches 1/255 at one of the tile's pixels at least, and sort them by tile then depth."""
    with torch.no_grad():
        C, N = proj.depths.shape
        tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
        device, dtype = proj.depths.device, proj.means2d.dtype
        flat = proj.visible.reshape(-1).nonzero().squeeze(1)
        flat = flat[torch.sort(proj.depths.reshape(-1)[flat], stable=True).indices]  # front to back
        m = proj.means2d.detach().reshape(-1, 2).index_select(0, flat)
        r = proj.radii.reshape(-1, 2).index_select(0, flat).to(dtype)
        x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x).long()
        x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x).long()
        y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y).long()
        y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y).long()
        n_hit = (x1 - x0) * (y1 - y0)
        # One row per (Gaussian, tile of its bounding box), in depth order: expand per-Gaussian values.
        ints = torch.stack([x0, y0, x1 - x0, torch.cumsum(n_hit, 0) - n_hit, flat], dim=-1)
        x0, y0, span_x, first, gauss = torch.repeat_interleave(ints, n_hit, dim=0).unbind(-1)
        k = torch.arange(len(gauss), device=device) - first
        col, row = x0 + k % span_x, y0 + k // span_x
        centres = (torch.stack([col, row], dim=-1).to(dtype) + 0.5) * tile_size
        floats = torch.cat([m, proj.conics.detach().reshape(-1, 3).index_select(0, flat)], dim=-1)
        floats = torch.cat([floats, log_opacity.detach().index_select(0, flat % N)[:, None]], dim=-1)
        floats = torch.repeat_interleave(floats, n_hit, dim=0)
        coeffs = _pair_coefficients(floats[:, 0:2], floats[:, 2:5], floats[:, 5], centres)
        kept = _reaches_any_pixel(coeffs, _pixel_basis(tile_size, dtype, device)).nonzero().squeeze(1)
        tile = ((gauss // N) * (tiles_x * tiles_y) + row * tiles_x + col).index_select(0, kept)
        tile, order = torch.sort(tile, stable=True)
        kept = kept.index_select(0, order)
        counts_all = torch.bincount(tile, minlength=C * tiles_x * tiles_y)
        starts_all = torch.cumsum(counts_all, 0) - counts_all
        tile_ids = counts_all.nonzero().squeeze(1)
        counts, by_size = torch.sort(counts_all[tile_ids], descending=True, stable=True)
        tile_ids = tile_ids[by_size]
        return TileBins(
            gauss.index_select(0, kept),
            centres.index_select(0, kept),
            tile_ids,
            starts_all[tile_ids],
            counts,
            tiles_x,
            tiles_y,
        )


def _alpha_terms(basis: torch.Tensor, coeffs: torch.Tensor, log_t0: torch.Tensor, clamp_mask: bool = False):
    """Per-pair terms of one block of k Gaussians over B tiles, all [B,P,k]: alpha, exclusive transmittance (0
    past termination) and compositing weights; the log-transmittance after the block [B,P,1]; and, if asked,
    where alpha was clamped at ALPHA_MAX. ``log_t0`` [B,P,1] is the log-transmittance before the block."""
    power = torch.matmul(basis, coeffs.transpose(1, 2))  # log(opacity) - sigma
    clamped = power >= _LOG_ALPHA_MAX if clamp_mask else None
    # -inf below the 1/255 cut: exp gives exact zeros (and never denormals, which are slow on CPUs)
    alpha = power.clamp_max_(_LOG_ALPHA_MAX).masked_fill_(power < _LOG_ALPHA_MIN, -math.inf).exp_()
    log1m = alpha.neg().log1p_()
    log1m[..., :1] += log_t0
    log_t_incl = torch.cumsum(log1m, dim=-1)
    log_t_excl = torch.cat([log_t0, log_t_incl[..., :-1]], dim=-1)
    t_excl = log_t_excl.masked_fill_(log_t_incl <= _LOG_T_MIN, -math.inf).exp_()
    return alpha, t_excl, alpha * t_excl, log_t_incl[..., -1:], clamped


@dataclass(frozen=True)
class _Chunk:
    """B tiles composited together: ``index`` [B,K] rows of the pair tables in depth order (padding points at
    the last, transparent row); Gaussians are taken ``block`` at a time along K."""

    index: torch.Tensor
    block: int


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of every binned tile.

    ``pair`` [M+1,6] holds each (tile, Gaussian) pair's log-alpha as a quadratic in the pixel offset (see
    :func:`_pair_coefficients`), ``feats`` [M+1,F] the features to composite; the result is [sum B,P,F] =
    sum_k w_k feats_k per pixel, chunk after chunk. Within a chunk the Gaussians are taken a block at a time;
    once every pixel of the chunk has terminated, the remaining blocks are skipped (they cannot contribute).
    Backward goes block by block, back to front, and scatters the gradients into the pair tables; it reuses the
    per-pair terms of the first ``cache_pairs`` pairs kept from forward and recomputes the rest from the
    log-transmittance saved at each block start (so memory stays bounded)."""

    @staticmethod
    def forward(
        ctx, pair: torch.Tensor, feats: torch.Tensor, basis: torch.Tensor, chunks: list[_Chunk], cache_pairs: int
    ):
        outs, starts, cached = [], [], []
        for chunk in chunks:
            coeffs, chunk_feats = pair[chunk.index], feats[chunk.index]
            n_tiles, k_total = chunk.index.shape
            out = pair.new_zeros(n_tiles, basis.shape[0], feats.shape[-1])
            log_t = pair.new_zeros(n_tiles, basis.shape[0], 1)
            chunk_starts, chunk_cached = [], []
            for k0 in range(0, k_total, chunk.block):
                if k0 and bool((log_t <= _LOG_T_MIN).all()):
                    break
                chunk_starts.append(log_t)
                block_pairs = n_tiles * basis.shape[0] * min(chunk.block, k_total - k0)
                keep = block_pairs <= cache_pairs
                cache_pairs -= block_pairs if keep else 0
                alpha, t_excl, weights, log_t, clamped = _alpha_terms(
                    basis, coeffs[:, k0 : k0 + chunk.block], log_t, keep
                )
                chunk_cached.append((alpha, t_excl, weights, clamped) if keep else None)
                out.baddbmm_(weights, chunk_feats[:, k0 : k0 + chunk.block])
            outs.append(out)
            starts.append(chunk_starts)
            cached.append(chunk_cached)
        ctx.chunks, ctx.starts, ctx.cached = chunks, starts, cached
        ctx.save_for_backward(pair, feats, basis)
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        pair, feats, basis = ctx.saved_tensors
        grad_pair, grad_feats = torch.zeros_like(pair), torch.zeros_like(feats)
        row = 0
        for chunk, chunk_starts, chunk_cached in zip(ctx.chunks, ctx.starts, ctx.cached, strict=True):
            n_tiles, block = chunk.index.shape[0], chunk.block
            g_out = grad_out[row : row + n_tiles]
            row += n_tiles
            later = g_out.new_zeros(*g_out.shape[:2], 1)  # sum of g_w * w over the blocks behind this one
            for b in reversed(range(len(chunk_starts))):
                index = chunk.index[:, b * block : (b + 1) * block]
                terms = chunk_cached[b]
                if terms is None:
                    alpha, t_excl, weights, _, clamped = _alpha_terms(basis, pair[index], chunk_starts[b], True)
                else:
                    alpha, t_excl, weights, clamped = terms
                grad_feats.index_add_(0, index.reshape(-1), torch.matmul(weights.transpose(1, 2), g_out).flatten(0, 1))
                g_w = torch.matmul(g_out, feats[index].transpose(1, 2))  # dL/dw  [B,P,k]
                running = torch.cumsum(g_w * weights, dim=-1)
                block_total = running[..., -1:]
                behind = (block_total - running).add_(later)  # sum over the Gaussians behind each one
                later = later + block_total
                # dw_i/dalpha_i = T_i, dw_j/dalpha_i = -w_j / (1 - alpha_i) for j > i; dalpha/dlog-alpha = alpha.
                g_alpha = g_w.mul_(t_excl).sub_(behind.div_(1.0 - alpha))
                g_log_alpha = g_alpha.mul_(alpha).masked_fill_(clamped, 0.0)
                grad_pair.index_add_(
                    0, index.reshape(-1), torch.matmul(g_log_alpha.transpose(1, 2), basis).flatten(0, 1)
                )
        return grad_pair, grad_feats, None, None, None


def composite(
    proj: Projection,
    bins: TileBins,
    log_opacity: torch.Tensor,
    colors: torch.Tensor,
    width: int,
    height: int,
    config: TorchRasterConfig,
) -> torch.Tensor:
    """Composite the binned Gaussians: [C,H,W,5] = (premultiplied RGB, sum w z, alpha)."""
    C, N = proj.depths.shape
    ts = config.tile_size
    P = ts * ts
    dtype, device = proj.means2d.dtype, proj.means2d.device
    n_tiles = bins.tiles_x * bins.tiles_y

    # Everything a pair needs from its (camera, Gaussian), gathered once: [C*N, 10].
    per_view = torch.cat(
        [
            proj.means2d,
            proj.conics,
            log_opacity[None, :, None].expand(C, N, 1),
            colors.expand(C, N, 3),
            proj.depths[..., None],
        ],
        dim=-1,
    ).flatten(0, 1)
    entry = per_view[bins.entry_gauss]
    pair = _pair_coefficients(entry[:, 0:2], entry[:, 2:5], entry[:, 5], bins.entry_centre)
    feats = torch.cat([entry[:, 6:10], torch.ones_like(entry[:, :1])], dim=-1)  # rgb, z, 1 (-> alpha)
    transparent = torch.zeros(1, 6, dtype=dtype, device=device)
    transparent[0, 5] = -math.inf
    pair = torch.cat([pair, transparent])
    feats = torch.cat([feats, torch.zeros(1, feats.shape[1], dtype=dtype, device=device)])
    pad_index = pair.shape[0] - 1

    counts, chunks, i = bins.counts.tolist(), [], 0
    while i < len(counts):
        k_max = counts[i]
        block = min(k_max, config.block)
        n = max(1, config.chunk_pairs // (block * P))
        starts, cnt = bins.starts[i : i + n], bins.counts[i : i + n]
        k = torch.arange(k_max, device=device)
        chunks.append(_Chunk(torch.where(k < cnt[:, None], starts[:, None] + k, pad_index), block))
        i += n
    image = torch.zeros(C * n_tiles, P, feats.shape[1], dtype=dtype, device=device)
    if chunks:
        cache = config.cache_pairs if torch.is_grad_enabled() and pair.requires_grad else 0
        tiles = _Composite.apply(pair, feats, _pixel_basis(ts, dtype, device), chunks, cache)
        image = image.index_copy(0, bins.tile_ids, tiles)
    image = image.reshape(C, bins.tiles_y, bins.tiles_x, ts, ts, -1).permute(0, 1, 3, 2, 4, 5)
    return image.reshape(C, bins.tiles_y * ts, bins.tiles_x * ts, -1)[:, :height, :width]


def rasterize_torch(
    g: Gaussians,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int,
    near: float,
    far: float,
    config: TorchRasterConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Render C views: (rgb over black [C,H,W,3], alpha [C,H,W], expected depth [C,H,W], info).

    ``info`` holds what gsplat's densification strategies read (``means2d`` [C,N,2], a non-leaf tensor on which
    ``retain_grad()`` works; ``radii`` [C,N,2] int32; ``width``, ``height``, ``n_cameras``; ``gaussian_ids`` None
    as for gsplat's unpacked layout) plus ``depths``,
    ``conics``, ``n_intersections`` and ``backend``.
    """
    config = config or TorchRasterConfig()
    proj = project(g, viewmats, Ks, width, height, near, far, config)
    log_opacity = F.logsigmoid(g.opacity_logits)
    bins = bin_tiles(proj, log_opacity, width, height, config.tile_size)
    coeffs = torch.cat([g.sh0, g.shN], dim=1)
    cam_centres = -torch.einsum("cji,cj->ci", viewmats[:, :3, :3], viewmats[:, :3, 3])  # -R^T T
    dirs = g.means[None] - cam_centres[:, None] if sh_degree > 0 else None
    colors = sh_to_rgb(coeffs, dirs, sh_degree)  # [C,N,3], or [N,3] for degree 0
    out = composite(proj, bins, log_opacity, colors, width, height, config)
    rgb, depth_sum, alpha = out[..., :3], out[..., 3], out[..., 4]
    info = {
        "backend": "torch",
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "width": width,
        "height": height,
        "n_cameras": viewmats.shape[0],
        "gaussian_ids": None,  # unpacked [C,N,...] layout, as gsplat with packed=False
        "tile_size": config.tile_size,
        "n_intersections": int(bins.entry_gauss.numel()),
    }
    return rgb, alpha, expected_depth(depth_sum, alpha), info
