"""Latency-aware encoding: INT8 is not always the fastest artifact (x86 without VNNI runs
fp32 faster; phones run INT8 faster). A target whose `encoding` is "auto" or a list gets
each candidate encoding built, measured on its own profile, and the fastest one that meets
the accuracy and size budgets ships, unless a smaller one is as fast within the run-to-run
noise (measured by timing the candidates interleaved over repeated rounds). Without
`encoding`, a target gets INT8 as [quantize] asks."""

from __future__ import annotations

import statistics
from typing import Callable

from edgekiln.targets.artifact import Artifact

DEFAULT = "int8"
# A faster candidate must beat a smaller one by more than this, even where the measured noise
# is lower: a 1 % gain does not pay for an artifact twice the size, and an estimate has no noise.
MIN_MARGIN = 0.02
DESCRIPTION = {"fp32": "float32", "fp16": "float16 weights", "int8": "INT8", "dynamic": "dynamic-range INT8",
               "int16x8": "INT8 weights with int16 activations"}


def candidates(encoding: str | list[str] | None, supported: dict[str, str], on_request: tuple[str, ...] = ()) -> list[str]:
    """The encodings a target asks for, in order: "auto" means every one its format supports
    but those it builds only on request."""
    if encoding is None:
        return [DEFAULT]
    if encoding == "auto":
        return [e for e in supported if e not in on_request]
    return list(encoding)


def unsupported(encoding: str | list[str] | None, supported: dict[str, str]) -> list[str]:
    """The listed encodings that the target's format cannot write."""
    return [] if encoding is None or encoding == "auto" else [e for e in encoding if e not in supported]


def failures(record: Artifact, breach: Callable[[float], str | None]) -> list[str]:
    """Why a candidate may not ship: it breaks the accuracy budget or the size budget."""
    out = []
    why = breach(record.accuracy)
    if why is not None:
        out.append(f"accuracy {record.accuracy:.2f}%: {why}")
    size_mb = record.budget.get("size_mb")
    if size_mb is not None and record.size_bytes / 1e6 > size_mb:
        out.append(f"size {record.size_bytes / 1e6:.2f} MB > {record.budget_keys['size_mb']} = {size_mb:g}")
    return out


def noise(round_p50_ms: list[float]) -> float:
    """One candidate's run-to-run noise: the interquartile range of its round p50s over their
    median (0.04: the middle half of its rounds lie within 4 % of each other)."""
    if len(round_p50_ms) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(round_p50_ms, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(round_p50_ms)


def paired(slow: list[float], fast: list[float]) -> tuple[float, float]:
    """(median ratio, its noise) of two candidates' p50s round by round: timed in the same
    rounds, drift that slows both (a busy neighbour, a clock change) cancels in the ratio."""
    ratios = [a / b for a, b in zip(slow, fast)]
    return statistics.median(ratios), noise(ratios)


def choose(records: list[Artifact], breach: Callable[[float], str | None],
           rounds: dict[int, list[float]] | None = None) -> tuple[int, str]:
    """Index of the candidate to ship, and why. Among the candidates within the accuracy and
    size budgets, the fastest by p50 (the median of its interleaved `rounds` where given,
    record index -> round p50s) is found; every candidate it does not beat by more than the
    margin ties with it, and of those the smallest ships. The margin is the run-to-run noise
    of the two candidates' round-by-round ratio (`paired`), at least MIN_MARGIN. Candidates
    whose latency could not be measured nor estimated rank after the others (by size). When none is within budget, the most accurate ships
    (then the smallest), and the gates fail it."""
    rounds = rounds or {}
    failing = [failures(r, breach) for r in records]
    eligible = [i for i, f in enumerate(failing) if not f]
    if not eligible:
        best = max(range(len(records)), key=lambda i: (records[i].accuracy, -records[i].size_bytes))
        return best, ("no candidate meets the budgets; the most accurate ships and its gates report it: "
                      + "; ".join(f"{records[i].encoding}: {', '.join(f)}" for i, f in enumerate(failing)))

    def p50(i: int) -> float | None:
        return statistics.median(rounds[i]) if i in rounds else records[i].p50_ms

    def margin(i: int, j: int) -> float:
        return max(MIN_MARGIN, paired(rounds[i], rounds[j])[1]) if i in rounds and j in rounds else MIN_MARGIN

    def slower(i: int, j: int) -> float:
        """How much slower i is than j: their rounds' median ratio where both were timed together."""
        return paired(rounds[i], rounds[j])[0] if i in rounds and j in rounds else p50(i) / p50(j)

    timed = sorted((i for i in eligible if p50(i) is not None), key=lambda i: (p50(i), records[i].size_bytes))
    if not timed:
        best = min(eligible, key=lambda i: records[i].size_bytes)
        return best, ("no candidate's latency was measured or estimated on this profile; the smallest "
                      "within the budgets ships")
    fastest = timed[0]
    ties = [i for i in timed if slower(i, fastest) <= 1 + margin(i, fastest)]
    best = min(ties, key=lambda i: (records[i].size_bytes, p50(i)))
    how = (f"median of {len(rounds[best])} interleaved rounds" if best in rounds
           else records[best].latency_source or "latency")
    if best == fastest:
        why = f"lowest p50 ({p50(best):.3g} ms, {how}) of the candidates within the accuracy and size budgets"
        beaten = [i for i in timed if i != best and records[i].size_bytes < records[best].size_bytes]
        if beaten:
            smaller = min(beaten, key=p50)  # the smaller candidate that came closest
            why += (f"; faster than the smaller {records[smaller].encoding} ({p50(smaller):.3g} ms) by "
                    f"{slower(smaller, best) - 1:.1%}, more than the {margin(smaller, best):.1%} margin")
        elif len(timed) > 1:
            runner_up = timed[1]
            why += (f"; next: {records[runner_up].encoding} at {p50(runner_up):.3g} ms "
                    f"({p50(runner_up) / p50(best):.2f}x)")
    else:
        why = (f"smallest of the candidates as fast as the fastest within the run-to-run noise: "
               f"{records[fastest].encoding} at {p50(fastest):.3g} ms is {slower(best, fastest) - 1:.1%} "
               f"faster than {records[best].encoding} at {p50(best):.3g} ms ({how}), not more than the "
               f"{margin(best, fastest):.1%} margin")
    excluded = [f"{records[i].encoding} ({'; '.join(f)})" for i, f in enumerate(failing) if f]
    if excluded:
        why += f"; over budget: {', '.join(excluded)}"
    untimed = [records[i].encoding for i in eligible if p50(i) is None]
    if untimed:
        why += f"; latency unknown, so not preferred: {', '.join(untimed)}"
    return best, why


def summary(record: Artifact, breach: Callable[[float], str | None], rounds: list[float] | None = None) -> dict:
    """What the manifest keeps of one candidate, with its interleaved rounds where it had some."""
    return {"encoding": record.encoding, "precision": record.precision, "size_bytes": record.size_bytes,
            "accuracy": record.accuracy, "accuracy_source": record.accuracy_source,
            "p50_ms": record.p50_ms, "latency_source": record.latency_source,
            "median_ms": None if not rounds else round(statistics.median(rounds), 4),
            "noise": None if not rounds else round(noise(rounds), 4),
            "round_p50_ms": [round(t, 4) for t in rounds or []],
            "latency_notes": record.latency_notes, "over_budget": failures(record, breach)}
