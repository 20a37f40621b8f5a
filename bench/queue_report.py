"""The benchmark's Markdown table and the ratios that the queue's targets are stated in."""

PROMPTGEN = "promptgen ({setting})"
BARE = "bare SQLite ({setting})"

#: (description, numerator system, denominator system, figure, minimum ratio)
TARGETS = (
    ("enqueue vs bare SQLite, NORMAL", "promptgen (NORMAL)", "bare SQLite (NORMAL)", "enqueue", 0.7),
    ("enqueue vs bare SQLite, FULL", "promptgen (FULL)", "bare SQLite (FULL)", "enqueue", 0.7),
    ("drain x1 vs bare SQLite, NORMAL", "promptgen (NORMAL)", "bare SQLite (NORMAL)", "drain_1", 0.5),
    ("drain x4 vs bare SQLite, NORMAL", "promptgen (NORMAL)", "bare SQLite (NORMAL)", "drain_4", 0.5),
    ("drain x1 vs bare SQLite, FULL", "promptgen (FULL)", "bare SQLite (FULL)", "drain_1", 0.5),
    ("drain x4 vs bare SQLite, FULL", "promptgen (FULL)", "bare SQLite (FULL)", "drain_4", 0.5),
    ("drain x1 vs persist-queue", "promptgen (NORMAL)", "persist-queue SQLiteAckQueue", "drain_1", 2.0),
    ("drain x4 vs persist-queue", "promptgen (NORMAL)", "persist-queue SQLiteAckQueue", "drain_4", 2.0),
    ("drain x1 vs RQ on Redis", "promptgen (NORMAL)", "RQ on Redis", "drain_1", 4.0),
    ("drain x4 vs RQ on Redis", "promptgen (NORMAL)", "RQ on Redis", "drain_4", 4.0),
)  # fmt: skip


def markdown(summary):
    """Return the results as a Markdown table with a line about the machine and run."""
    machine = summary["machine"]
    lines = [
        f"{summary['jobs']} jobs per phase, {summary['date']}, {machine['cpus']} CPUs,"
        f" Python {machine['python']}, SQLite {machine['sqlite']},"
        f" whole run {summary['seconds']:g} s. bare SQLite and promptgen: best of"
        f" {summary.get('rounds', 1)} interleaved rounds; the peers: one round.",
        "",
        "| system | durability setting | enqueue/s | drain/s x1 | drain/s x4"
        " | duplicates x1/x4 | lost x1/x4 | worker killed with SIGKILL mid-job |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for system in summary["systems"]:
        one, four = system["drain_1"], system["drain_4"]
        name = system["name"]
        if system["drain_jobs"] != summary["jobs"]:
            name += f" (drains {system['drain_jobs']:,} jobs)"
        lines.append(
            f"| {name} | {system['setting']} | {system['enqueue_per_second']:,}"
            f" | {_rate(one)} | {_rate(four)}"
            f" | {one['duplicates']:,} / {four['duplicates']:,}"
            f" | {one['lost']:,} / {four['lost']:,} | {system['sigkill']['outcome']} |"
        )
    lines.append("")
    lines.append("| target | ratio | minimum | met |")
    lines.append("|---|--:|--:|---|")
    for description, ratio, minimum in ratios(summary):
        if ratio is None:
            lines.append(f"| {description} | n/a | {minimum:g}x | n/a |")
            continue
        met = "yes" if ratio >= minimum else "no"
        lines.append(f"| {description} | {ratio:.2f}x | {minimum:g}x | {met} |")
    return "\n".join(lines) + "\n"


def ratios(summary):
    """Return (description, ratio or None, minimum) for each target."""
    by_name = {system["name"]: system for system in summary["systems"]}
    found = []
    for description, numerator, denominator, figure, minimum in TARGETS:
        if numerator not in by_name or denominator not in by_name:
            found.append((description, None, minimum))
            continue
        found.append(
            (description, _figure(by_name[numerator], figure) / _figure(by_name[denominator], figure), minimum)
        )
    return found


def ratios_text(summary):
    """Return one line per target ratio, for the terminal."""
    lines = []
    for description, ratio, minimum in ratios(summary):
        if ratio is None:
            lines.append(f"{description}: not measured")
        else:
            verdict = "met" if ratio >= minimum else "MISSED"
            lines.append(f"{description}: {ratio:.2f}x (target {minimum:g}x) {verdict}")
    return "\n".join(lines)


def _figure(system, figure):
    if figure == "enqueue":
        return system["enqueue_per_second"]
    return system[figure]["per_second"]


def _rate(drain):
    text = f"{drain['per_second']:,}"
    return f"{text} (timed out)" if drain["timed_out"] else text
