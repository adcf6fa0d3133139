#!/usr/bin/env python3
"""Plot and summarize a `lookahead train` run directory (metrics.jsonl, checkpoints/, export/).

Usage: plot_metrics.py RUN_DIR [--png FILE] [--summary FILE] [--resume-step N ...]

Writes a PNG with L_diff and L_LH per step (a dashed line at every resume point) and a Markdown
summary: steps, final losses, mean step time and its breakdown from the time_* fields, the
checkpoint list and the exported files. Resume points are taken from --resume-step, from the
records marked "resumed" (a resumed run rewrites metrics.jsonl so that every step appears once and
marks its first record), and, for files written before that, from where the file goes back in steps. Needs only the standard library for the summary;
matplotlib (Agg) for the plot, which is skipped with a note when matplotlib is missing.
"""
import argparse
import json
import os
import statistics
import sys


def read_metrics(path):
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"plot_metrics: {path}:{n}: skipped a malformed line ({e})", file=sys.stderr)
    return [r for r in records if "step" in r]


def dedupe(records):
    """Keeps the last record of each step (a resumed run may repeat steps after the checkpoint)."""
    by_step = {}
    for r in records:
        by_step[int(r["step"])] = r
    return [by_step[s] for s in sorted(by_step)]


def repeated_steps(records):
    """Steps where the file goes back (a run resumed from an older checkpoint)."""
    out, last = [], None
    for r in records:
        s = int(r["step"])
        if last is not None and s <= last:
            out.append(s)
        last = s
    return out


def marked_resumes(records):
    """Steps whose record is the first one written after a resume."""
    return [int(r["step"]) for r in records if r.get("resumed")]


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0


def list_files(folder):
    if not os.path.isdir(folder):
        return []
    return [(name, os.path.getsize(os.path.join(folder, name)))
            for name in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, name))]


def plot(records, resume_steps, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_metrics: matplotlib is not installed; no plot written", file=sys.stderr)
        return False
    steps = [int(r["step"]) + 1 for r in records]  # the step a record reports has just finished
    fig, ax1 = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax1.plot(steps, [r["loss_diffusion"] for r in records], "o-", ms=3, color="tab:blue", label="L_diff")
    ax1.set_xlabel("step")
    ax1.set_ylabel("L_diff (diffusion loss)", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(steps, [r["loss_lookahead"] for r in records], "s-", ms=3, color="tab:orange", label="L_LH")
    ax2.set_ylabel("L_LH (lookahead identity loss)", color="tab:orange")
    for i, s in enumerate(resume_steps):
        ax1.axvline(s + 0.5, color="gray", ls="--", lw=1, label="resumed from checkpoint" if i == 0 else None)
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax1.set_title("lookahead train: losses per step")
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return True


def summary(run_dir, raw, records, resume_steps, png):
    last = records[-1]
    n = len(records)
    tail = records[-min(10, n):]
    mean = lambda key, rs=records: statistics.fmean(r.get(key, 0.0) for r in rs)
    lines = [f"# Training run `{run_dir}`", ""]
    lines.append(f"- steps: {n} logged (steps {int(records[0]['step']) + 1}..{int(last['step']) + 1}); "
                 f"{len(raw)} lines in metrics.jsonl")
    if resume_steps:
        lines.append("- resumed from a checkpoint at step " + ", ".join(str(s) for s in resume_steps))
    lines.append(f"- final L_diff: {last['loss_diffusion']:.4f} (mean of the last {len(tail)}: "
                 f"{mean('loss_diffusion', tail):.4f}; first step: {records[0]['loss_diffusion']:.4f})")
    lines.append(f"- final L_LH: {last['loss_lookahead']:.4f} (mean of the last {len(tail)}: "
                 f"{mean('loss_lookahead', tail):.4f}; first step: {records[0]['loss_lookahead']:.4f})")
    lines.append(f"- final α: {last.get('alpha', float('nan')):.3f}, grad norm: {last.get('grad_norm', float('nan')):.4f}, "
                 f"usable faces in the last batch: {int(last.get('faces_valid', 0))}, "
                 f"records skipped (all steps): {int(sum(r.get('records_skipped', 0) for r in records))}")
    if png:
        lines.append(f"- plot: `{png}`")
    lines += ["", "## Step time (mean over all logged steps, seconds)", "",
              "| part | mean s | share |", "|---|---|---|"]
    step = mean("time_step_s")
    parts = [("data (waiting for the loader)", "time_data_s"),
             ("compute (forward + backward)", "time_compute_s"),
             ("&nbsp;&nbsp;of which waiting for gathers", "time_gather_wait_s"),
             ("&nbsp;&nbsp;of which waiting for reduce-scatters", "time_reduce_wait_s"),
             ("optimizer (clip + AdamW)", "time_optimizer_s")]
    accounted = mean("time_data_s") + mean("time_compute_s") + mean("time_optimizer_s")
    lines.append(f"| **step** (`time_step_s`) | {step:.3f} | 100% |")
    for label, key in parts:
        v = mean(key)
        lines.append(f"| {label} (`{key}`) | {v:.3f} | {100 * v / step if step else 0:.0f}% |")
    lines.append(f"| other (reference ArcFace, step draws, loss all-reduce) | {max(step - accounted, 0):.3f} | "
                 f"{100 * max(step - accounted, 0) / step if step else 0:.0f}% |")
    if n > 1:
        lines.append("")
        lines.append(f"Without the first step (warm-up): {statistics.fmean(r['time_step_s'] for r in records[1:]):.3f} s per step.")
    ck = [(f, s) for f, s in list_files(os.path.join(run_dir, "checkpoints")) if f.endswith(".h5")]
    lines += ["", f"## Checkpoints (`{os.path.join(run_dir, 'checkpoints')}`)", ""]
    lines += [f"- `{f}` ({human_bytes(s)})" for f, s in ck] or ["- none"]
    latest = os.path.join(run_dir, "checkpoints", "latest")
    if os.path.isfile(latest):
        lines.append(f"- `latest` → `{open(latest).read().strip()}`")
    ex = list_files(os.path.join(run_dir, "export"))
    lines += ["", f"## Export (`{os.path.join(run_dir, 'export')}`)", ""]
    lines += [f"- `{f}` ({human_bytes(s)})" for f, s in ex] or ["- none"]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--png", default=None, help="plot file (default RUN_DIR/loss.png)")
    p.add_argument("--summary", default=None, help="Markdown summary (default RUN_DIR/summary.md)")
    p.add_argument("--resume-step", type=int, action="append", default=[],
                   help="a step at which the run was resumed (repeatable)")
    a = p.parse_args()
    metrics = os.path.join(a.run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        sys.exit(f"plot_metrics: {metrics} does not exist")
    raw = read_metrics(metrics)
    if not raw:
        sys.exit(f"plot_metrics: {metrics} has no step records")
    records = dedupe(raw)
    resume_steps = sorted(set(a.resume_step) | set(repeated_steps(raw)) | set(marked_resumes(raw)))
    png = a.png or os.path.join(a.run_dir, "loss.png")
    md = a.summary or os.path.join(a.run_dir, "summary.md")
    wrote_png = plot(records, resume_steps, png)
    os.makedirs(os.path.dirname(os.path.abspath(md)), exist_ok=True)
    with open(md, "w") as f:
        f.write(summary(a.run_dir, raw, records, resume_steps, png if wrote_png else None))
    print(f"plot_metrics: {len(records)} steps; " + (f"plot {png}, " if wrote_png else "") + f"summary {md}")


if __name__ == "__main__":
    main()
