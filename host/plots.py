"""Loss-curve plots (matplotlib, Agg: no display needed)."""

__all__ = ["plot_loss_curves"]


def plot_loss_curves(curves, path, title, ylabel="training loss (full-precision data)"):
    """Plot ``{label: [loss per epoch]}`` (entry 0 = before training) into a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, curve in curves.items():
        ax.plot(range(len(curve)), curve, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
