"""SyncDreamer's spatial volume (``spatial_volume``): the 3D feature grid that synchronises the views.

Per denoising step: every view's noisy latent is encoded (``target_encoder``), unprojected into a grid over
[-L, L]³ in the world frame and concatenated over views (view-major channels); a 3D UNet (``spatial_volume_feats``)
turns this into the spatial volume. For each target view, the volume is resampled on that view's frustum (latent
pixel grid × ``frustum_depth`` depths between camera_distance ± frustum_length) and a second 3D UNet
(``frustum_volume_feats``) gives features at every UNet resolution.

Projection conventions reproduce the original exactly: world points go through ``diag(r, r, 1) · K · [R|t]`` with
r = feature size / image size (K in image pixels, OpenCV w2c poses), and pixel u maps to the grid_sample coordinate
u / ((size - 1) / 2) - 1 with align_corners=True (pixel indices, no half-pixel shift); depths are clamped at 1e-4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glimpse3d_core.models.syncdreamer.config import VolumeConfig
from glimpse3d_core.models.syncdreamer.layers import GroupNorm32

MIN_DEPTH = 1e-4


class Image2DResBlockWithTV(nn.Module):
    """Residual 2D block conditioned on time and viewpoint (1x1 convs of the embeddings added to the input).
    ``conv`` indices: 0 norm, 2 conv, 3 norm, 5 conv."""

    def __init__(self, dim: int, t_dim: int, v_dim: int, groups: int) -> None:
        super().__init__()
        self.time_embed = nn.Conv2d(t_dim, dim, 1)
        self.view_embed = nn.Conv2d(v_dim, dim, 1)
        self.conv = nn.Sequential(
            GroupNorm32(groups, dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, padding=1),
            GroupNorm32(groups, dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x + self.time_embed(t) + self.view_embed(v))


class NoisyTargetViewEncoder(nn.Module):
    """Noisy latent [B,4,h,w] + time [B,T] + viewpoint [B,V] embeddings -> features [B, out, h, w]."""

    def __init__(self, t_dim: int, v_dim: int, run_dim: int, out_dim: int, groups: int) -> None:
        super().__init__()
        self.init_conv = nn.Conv2d(4, run_dim, 3, padding=1)
        self.out_conv0 = Image2DResBlockWithTV(run_dim, t_dim, v_dim, groups)
        self.out_conv1 = Image2DResBlockWithTV(run_dim, t_dim, v_dim, groups)
        self.out_conv2 = Image2DResBlockWithTV(run_dim, t_dim, v_dim, groups)
        self.final_out = nn.Sequential(
            GroupNorm32(groups, run_dim), nn.SiLU(), nn.Conv2d(run_dim, out_dim, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t, v = t[:, :, None, None], v[:, :, None, None]
        x = self.init_conv(x)
        for block in (self.out_conv0, self.out_conv1, self.out_conv2):
            x = block(x, t, v)
        return self.final_out(x)


class VolumeBlock(nn.Module):
    """x + t_conv(t) [+ v_conv(v)], GroupNorm, SiLU, then a 3x3x3 conv (stride 1 or 2) or, with ``up``, a stride-2
    transposed conv that doubles the size. The norm is named ``bn`` in down blocks and ``norm`` in up blocks, as in
    the checkpoint."""

    def __init__(self, x_dim: int, t_dim: int, v_dim: int | None, out_dim: int, groups: int, stride: int = 1,
                 up: bool = False) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1)
        self.v_conv = None if v_dim is None else nn.Conv3d(v_dim, x_dim, 1)
        self.norm_name = "norm" if up else "bn"
        self.add_module(self.norm_name, GroupNorm32(groups, x_dim))
        self.conv = (
            nn.ConvTranspose3d(x_dim, out_dim, 3, stride=2, padding=1, output_padding=1)
            if up else nn.Conv3d(x_dim, out_dim, 3, stride=stride, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.t_conv(t)
        if self.v_conv is not None:
            x = x + self.v_conv(v)
        return self.conv(F.silu(getattr(self, self.norm_name)(x)))


class SpatialTime3DNet(nn.Module):
    """3D UNet over the spatial volume, conditioned on time: [B, in, V, V, V] -> [B, dims[0], V, V, V]."""

    def __init__(self, in_dim: int, t_dim: int, dims: tuple[int, int, int, int], groups: int) -> None:
        super().__init__()
        d0, d1, d2, d3 = dims

        def block(a: int, b: int, stride: int = 1, up: bool = False) -> VolumeBlock:
            return VolumeBlock(a, t_dim, None, b, groups, stride, up)

        self.init_conv = nn.Conv3d(in_dim, d0, 3, padding=1)
        self.conv0 = block(d0, d0)
        self.conv1, self.conv2_0, self.conv2_1 = block(d0, d1, 2), block(d1, d1), block(d1, d1)
        self.conv3, self.conv4_0, self.conv4_1 = block(d1, d2, 2), block(d2, d2), block(d2, d2)
        self.conv5, self.conv6_0, self.conv6_1 = block(d2, d3, 2), block(d3, d3), block(d3, d3)
        self.conv7, self.conv8, self.conv9 = block(d3, d2, up=True), block(d2, d1, up=True), block(d1, d0, up=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, :, None, None, None]
        conv0 = self.conv0(self.init_conv(x), t)
        conv2 = self.conv2_1(self.conv2_0(self.conv1(conv0, t), t), t)
        conv4 = self.conv4_1(self.conv4_0(self.conv3(conv2, t), t), t)
        x = self.conv6_1(self.conv6_0(self.conv5(conv4, t), t), t)
        x = conv4 + self.conv7(x, t)
        x = conv2 + self.conv8(x, t)
        return conv0 + self.conv9(x, t)


class FrustumTV3DNet(nn.Module):
    """3D UNet over one target view's frustum, conditioned on time and viewpoint.

    Input [B, in, D, H, W]; output {W: [B, dims[0], D, H, W], W/2: [.., dims[1], ..], W/4: .., W/8: ..}.
    """

    def __init__(self, in_dim: int, t_dim: int, v_dim: int, dims: tuple[int, int, int, int], groups: int) -> None:
        super().__init__()
        d0, d1, d2, d3 = dims

        def block(a: int, b: int, stride: int = 1, up: bool = False) -> VolumeBlock:
            return VolumeBlock(a, t_dim, v_dim, b, groups, stride, up)

        self.conv0 = nn.Conv3d(in_dim, d0, 3, padding=1)
        self.conv1, self.conv2 = block(d0, d1, 2), block(d1, d1)
        self.conv3, self.conv4 = block(d1, d2, 2), block(d2, d2)
        self.conv5, self.conv6 = block(d2, d3, 2), block(d3, d3)
        self.up0, self.up1, self.up2 = block(d3, d2, up=True), block(d2, d1, up=True), block(d1, d0, up=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        t, v = t[:, :, None, None, None], v[:, :, None, None, None]
        width = x.shape[-1]
        x0 = self.conv0(x)
        x1 = self.conv2(self.conv1(x0, t, v), t, v)
        x2 = self.conv4(self.conv3(x1, t, v), t, v)
        x3 = self.conv6(self.conv5(x2, t, v), t, v)
        x2 = self.up0(x3, t, v) + x2
        x1 = self.up1(x2, t, v) + x1
        x0 = self.up2(x1, t, v) + x0
        return {width: x0, width // 2: x1, width // 4: x2, width // 8: x3}


def projection_matrices(Ks: torch.Tensor, poses: torch.Tensor, scale: float) -> torch.Tensor:
    """[N,4,4] maps homogeneous world points to (u·z, v·z, z, 1) in pixels of an image ``scale`` × the K size."""
    S = torch.diag(torch.tensor([scale, scale, 1.0], dtype=Ks.dtype, device=Ks.device))
    P = torch.zeros(len(Ks), 4, 4, dtype=Ks.dtype, device=Ks.device)
    P[:, :3] = S @ Ks @ poses
    P[:, 3, 3] = 1.0
    return P


class SpatialVolume(nn.Module):
    """``target_encoder``, ``spatial_volume_feats`` and ``frustum_volume_feats`` plus the volume geometry."""

    def __init__(self, cfg: VolumeConfig, t_dim: int, v_dim: int, num_views: int, image_size: int,
                 latent_size: int) -> None:
        super().__init__()
        self.cfg, self.image_size, self.latent_size = cfg, image_size, latent_size
        self.target_encoder = NoisyTargetViewEncoder(
            t_dim, v_dim, cfg.encoder_channels, cfg.view_feature_channels, cfg.norm_groups
        )
        self.spatial_volume_feats = SpatialTime3DNet(
            cfg.view_feature_channels * num_views, t_dim, cfg.spatial_dims, cfg.norm_groups
        )
        self.frustum_volume_feats = FrustumTV3DNet(
            cfg.spatial_dims[0], t_dim, v_dim, cfg.frustum_dims, cfg.norm_groups
        )

    def unprojection_grid(self, poses: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
        """grid_sample coordinates [N, V, V*V, 2] of the spatial grid's vertices in each view's latent map.

        Vertex [i, j, k] (z, y, x order) sits at world (x_k, y_j, z_i), x/y/z = linspace(-L, L, V)."""
        V, L, f = self.cfg.spatial_volume_size, self.cfg.spatial_volume_length, self.latent_size
        axis = torch.linspace(-L, L, V, dtype=torch.float32, device=poses.device)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        points = torch.stack([x, y, z]).reshape(3, -1)
        P = projection_matrices(Ks.float(), poses.float(), f / self.image_size)
        uvz = P[:, :3, :3] @ points + P[:, :3, 3:]
        uv = uvz[:, :2] / uvz[:, 2:].clamp_min(MIN_DEPTH)
        return (uv / ((f - 1) / 2) - 1).permute(0, 2, 1).reshape(len(P), V, V * V, 2)

    def frustum_grid(self, poses: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
        """grid_sample coordinates [N, D, H, W, 3] of each view's frustum samples in the spatial volume.

        Latent pixel (u, v) = (column, row) at depth d (D values from camera_distance - frustum_length to + ...)
        is unprojected to the world and divided by the volume half-size L."""
        c, f = self.cfg, self.latent_size
        depths = torch.linspace(0.0, 1.0, c.frustum_depth, device=poses.device) * 2 * c.frustum_length
        depths = depths + c.camera_distance - c.frustum_length
        rows, cols = torch.meshgrid(
            torch.arange(f, dtype=torch.float32, device=poses.device),
            torch.arange(f, dtype=torch.float32, device=poses.device), indexing="ij",
        )
        pixels = torch.stack([cols, rows, torch.ones_like(rows)]).reshape(3, 1, f * f)
        rays = (pixels * depths.view(1, -1, 1)).reshape(3, -1)  # [3, D*H*W]
        P_inv = torch.linalg.inv(projection_matrices(Ks.float(), poses.float(), f / self.image_size))
        points = P_inv[:, :3, :3] @ rays + P_inv[:, :3, 3:]
        return (points / c.spatial_volume_length).permute(0, 2, 1).reshape(len(P_inv), c.frustum_depth, f, f, 3)

    def build(self, x: torch.Tensor, t_embed: torch.Tensor, v_embed: torch.Tensor,
              unprojection_grid: torch.Tensor) -> torch.Tensor:
        """Spatial volume [B, spatial_dims[0], V, V, V] from the noisy latents x [B,N,4,h,w] of all views,
        t_embed [B,T], v_embed [B,N,4] and :meth:`unprojection_grid` [N, V, V*V, 2]."""
        B, N = x.shape[:2]
        V = self.cfg.spatial_volume_size
        dtype = t_embed.dtype
        feats = self.target_encoder(
            x.reshape(B * N, *x.shape[2:]).to(dtype),
            t_embed.repeat_interleave(N, dim=0),
            v_embed.reshape(B * N, -1).to(dtype),
        )
        grid = unprojection_grid.repeat(B, 1, 1, 1)
        volume = F.grid_sample(feats.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        volume = volume.reshape(B, N * feats.shape[1], V, V, V).to(dtype)
        return self.spatial_volume_feats(volume, t_embed)

    def frustum_features(self, volume: torch.Tensor, t_embed: torch.Tensor, v_embed: torch.Tensor,
                         frustum_grid: torch.Tensor, views: torch.Tensor) -> dict[int, torch.Tensor]:
        """Frustum features of the target ``views`` [TN] (indices into the rig), flattened b-major to B*TN:
        {latent width / 2**i: [B*TN, frustum_dims[i], D / 2**i, ...]}."""
        B, TN = volume.shape[0], len(views)
        grid = frustum_grid[views].repeat(B, 1, 1, 1, 1)
        volume_ = volume.float().repeat_interleave(TN, dim=0)
        feats = F.grid_sample(volume_, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return self.frustum_volume_feats(
            feats.to(volume.dtype),
            t_embed.repeat_interleave(TN, dim=0),
            v_embed[:, views].reshape(B * TN, -1).to(volume.dtype),
        )
