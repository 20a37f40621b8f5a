"""Progress lines in the format of tqdm, which Stable Diffusion pipelines print while they run.

A line looks like " 40%|████      | 8/20 [00:00<00:00, 41.23it/s]". replicate-python's
Prediction.progress parses the percentage and the "current/total" counts from the last such
line in the logs.
"""

BAR_WIDTH = 10

#: Partial block characters for eighths of one bar cell, as tqdm draws them.
PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"
FULL_BLOCK = "█"


def progress_line(done, total, elapsed):
    """Return the progress line after done of total steps, elapsed seconds after the start."""
    percent = f"{done * 100 // total:3d}%"
    bar = _bar(done, total)
    counts = f"{done}/{total}"

    if done == 0 or elapsed <= 0:
        return f"{percent}|{bar}| {counts} [{_clock(elapsed)}<?, ?it/s]"

    remaining = elapsed / done * (total - done)
    return (
        f"{percent}|{bar}| {counts} [{_clock(elapsed)}<{_clock(remaining)}, {_rate(done, elapsed)}]"
    )


def _bar(done, total):
    # Integer arithmetic, so that 29/100 fills exactly as many eighths as 29 % of the bar.
    eighths = done * BAR_WIDTH * 8 // total
    full, partial = divmod(eighths, 8)
    if full >= BAR_WIDTH:
        return FULL_BLOCK * BAR_WIDTH

    bar = FULL_BLOCK * full + (PARTIAL_BLOCKS[partial] if partial else "")
    return bar.ljust(BAR_WIDTH)


def _clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"


def _rate(done, elapsed):
    rate = done / elapsed
    if rate >= 1:
        return f"{rate:5.2f}it/s"
    return f"{1 / rate:5.2f}s/it"
