"""Draw the flow stack of SinGlow-TF2 with the tensor shapes at every level.

The shapes are read from a real ``Glow`` built from the default ``Config`` of each feature, so the
figure cannot drift from the code.

    python design/make_architecture_figure.py [--out design/architecture.png]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from common_definitions import Config  # noqa: E402
from model import Glow  # noqa: E402


def flow_stages(config: Config):
    """(label, shape) boxes from input to latent for one patch of ``config``."""
    model = Glow.from_config(config)
    height, width, channels = model.image_shape
    stages = [("input patch", f"({height}, {width}, {channels})")]
    for level, steps in enumerate(model.levels):
        height //= 2
        if model.time_only:
            channels *= 2
            squeeze_text = "squeeze (time)"
        else:
            width //= 2
            channels *= 4
            squeeze_text = "squeeze 2x2"
        stages.append((f"L{level + 1}: {squeeze_text}", f"({height}, {width}, {channels})"))
        stages.append((f"K={len(steps)} x [ActNorm -> 1x1 conv -> coupling]", f"({height}, {width}, {channels})"))
        prior = model.priors[level]
        if prior.conditional:
            kept = channels // 2
            stages.append((f"split: z{level + 1} whitened by p(z | kept)",
                           f"z {height * width * (channels - kept)} dims; keep ({height}, {width}, {kept})"))
            channels = kept
        else:
            stages.append(("top prior (per channel)", f"z{level + 1} {height * width * channels} dims"))
    return stages, model.latent_dims()


def draw(ax, title, stages, dims):
    ax.set_xlim(0, 10)
    ax.set_ylim(-len(stages) - 1, 1)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    for i, (label, shape) in enumerate(stages):
        y = -i
        colour = "#dbe9f6" if "split" not in label and "prior" not in label else "#f9e0c7"
        ax.add_patch(FancyBboxPatch((0.3, y - 0.35), 9.4, 0.7, boxstyle="round,pad=0.05",
                                    facecolor=colour, edgecolor="#34495e"))
        ax.text(0.5, y, label, va="center", fontsize=8.5)
        ax.text(9.5, y, shape, va="center", ha="right", fontsize=8.5, family="monospace")
        if i:
            ax.annotate("", xy=(5, y + 0.38), xytext=(5, y + 0.62),
                        arrowprops=dict(arrowstyle="->", color="#34495e"))
    ax.text(5, -len(stages) - 0.2, f"z = concat(z1 .. zL): D = {dims} dims, N(0, I) under the model",
            ha="center", fontsize=9)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "design", "architecture.png"))
    args = parser.parse_args(argv)
    configs = {
        "spectrogram (default Config)": Config(),
        "waveform (Config(feature='waveform'))": Config(feature="waveform"),
    }
    fig, axes = plt.subplots(1, 2, figsize=(14, 7))
    for ax, (title, config) in zip(axes, configs.items()):
        stages, dims = flow_stages(config)
        draw(ax, title, stages, dims)
    fig.suptitle("SinGlow-TF2 flow: x -> z (encode); decode runs the same stack backwards", fontsize=12)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
