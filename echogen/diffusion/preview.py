"""Training previews: a stage sampled as the app samples it, and the loss curve. Used by train/train_stage.py
and train/distill.py, so a preview always shows the stage's own sampler, steps, guidance and sigma_start."""
from __future__ import annotations

from pathlib import Path

import torch

from echogen.config import CascadeConfig, StageConfig
from echogen.data.resample import lowres_from_target, resize_frames
from echogen.data.video_io import write_video
from echogen.diffusion.stage import lowres_input, previous_stage, sample_stage, sampling_settings, stage_condition

PREVIEW_EFS = (20.0, 50.0, 80.0)


@torch.no_grad()
def write_stage_preview(denoiser, cascade: CascadeConfig, stage: StageConfig, item: dict, path, device="cpu") -> Path:
    """EF 20 / 50 / 80 from one clip's frame (item: an EchoNetDataset item), sampled with the stage's sampling
    settings (echogen.diffusion.stage); SR stages get that clip's real low-res input at the sampling noise
    level. Writes a GIF: the real clip | EF 20 | EF 50 | EF 80."""
    den = denoiser.eval()
    n = len(PREVIEW_EFS)
    frames = item["frame"][None].expand(n, -1, -1, -1)
    efs = torch.tensor(PREVIEW_EFS)
    g = torch.Generator().manual_seed(0)
    prev = previous_stage(cascade, stage)
    low = aug = None
    if prev is not None:  # this stage alone on the real clip's low-res input, at the sampling noise level
        video = resize_frames(item["video"][None].expand(n, -1, -1, -1, -1), stage.size)
        low = lowres_input(stage, lowres_from_target(video, stage.fps, prev.frames, prev.fps, prev.size), prev.fps)
        aug = torch.full((n,), stage.lowres_aug_sample)
    cond = {k: v.to(device) for k, v in stage_condition(stage, frames, efs, low, aug, g).items()}
    x = sample_stage(den, stage, cascade.diffusion, cond, sampling_settings(stage), g, lowres=low)
    vid = ((x.float().clamp(-1, 1) + 1) / 2).mean(1, keepdim=True).cpu()
    real = item["video"][None]
    if real.shape[2:] != vid.shape[2:]:
        real = torch.nn.functional.interpolate(real, size=vid.shape[2:], mode="trilinear")
    grid = torch.cat([real[0, 0]] + [v[0] for v in vid], dim=-1).numpy()  # (T, H, 4W)
    write_video(path, grid, stage.fps)
    return Path(path)


def plot_loss_csv(csv_path, png_path, title: str, ylabel: str = "loss") -> None:
    """loss.csv (step,loss header) -> a log-scale PNG; nothing when fewer than two rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [line.split(",") for line in Path(csv_path).read_text().splitlines()[1:]]
    if len(rows) < 2:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r[0]) for r in rows], [float(r[1]) for r in rows])
    ax.set(xlabel="step", ylabel=ylabel, yscale="log", title=title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
