"""The `estimate` runner: a per-profile linear cost model over the artifact's cost features,
calibrated on the profile's table of reference measurements (published or measured).

latency_ms = floor + a * dense MMACs + b * depthwise MMACs + c * MB moved (weights +
activations at the artifact's precision), all coefficients >= 0, fitted by non-negative least
squares on the reference rows of the same precision. The floor, the runtime's fixed cost per
inference, is the profile's `estimate.floor_ms` where it gives one (then no estimate is below
it), else fitted with three rows or more, else absent (and the estimate says so). With fewer
than six rows the model shrinks (total MACs and the fixed cost; then MACs alone). A precision with fewer rows than float, some of them paired with a float row (same
model, same input size), is estimated as the float estimate times the paired rows' mean
ratio: two rows at 224 px fit a model that says nothing about a 32 px input, while the ratio
of one precision to the other holds across sizes far better. A precision the table lacks is
estimated as the float estimate times the profile's declared ratio. Every estimate says which
way it was made and carries its leave-one-out error on its own reference table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekiln.targets.cost import CostFeatures
from edgekiln.targets.errors import RunnerFailed
from edgekiln.targets.profiles import Profile


@dataclass(frozen=True)
class Reference:
    model: str
    precision: str
    latency_ms: float
    features: CostFeatures
    source: str
    # Why a row of another device stands in for the profile's (None: measured on it). The fit
    # may use a stand-in; a bound may not (bounding_rows).
    stand_in: str | None = None


def load_references(path: Path) -> list[Reference]:
    """Rows of a reference CSV: model, precision, input_px, threads, latency_ms, source and the
    cost features (macs, depthwise_macs, params, activations, and layers where counted), and
    stand_in where a row of another device stands in."""
    with open(path, newline="") as f:
        return [Reference(model=row["model"], precision=row["precision"], latency_ms=float(row["latency_ms"]),
                          source=row["source"], features=CostFeatures.from_dict({**row, "image_size": row["input_px"]}),
                          stand_in=row.get("stand_in") or None)
                for row in csv.DictReader(f)]


# A per-layer cost needs this many rows: with fewer, five terms fit five rows exactly and say
# nothing about a sixth.
LAYER_ROWS = 8


def _columns(rows: int, floor: float = 0.0, layers: bool = False) -> tuple[str, ...]:
    """The model's terms for a table of `rows` rows of one precision (`layers`: every row has
    its layer count). Without a given floor, three rows or more fit a fixed per-inference
    cost (the runtime's overhead): without one, a model far smaller than the rows would be
    estimated at a few microseconds, which no runtime call takes."""
    full = ("dense_mmacs", "depthwise_mmacs", "traffic_mb") + (("layers",) if layers and rows >= LAYER_ROWS else ())
    if floor:
        if rows >= 4:
            return full
        return ("mmacs", "traffic_mb") if rows >= 2 else ("mmacs",)
    if rows >= 6:
        return full + ("overhead_ms",)
    return ("mmacs", "overhead_ms") if rows >= 3 else ("mmacs",)


def _row(features: CostFeatures, precision: str, columns: tuple[str, ...]) -> np.ndarray:
    if "layers" in columns and features.layers is None:
        raise RunnerFailed("the cost model has a per-layer term, and these cost features have no layer count")
    values = {"dense_mmacs": features.dense_macs / 1e6, "depthwise_mmacs": features.depthwise_macs / 1e6,
              "mmacs": features.macs / 1e6, "traffic_mb": features.traffic_bytes(precision) / 1e6,
              "overhead_ms": 1.0, "layers": features.layers}
    return np.array([values[c] for c in columns], dtype=float)


def _counted(rows: list[Reference]) -> bool:
    return all(r.features.layers is not None for r in rows)


@dataclass(frozen=True)
class CostModel:
    precision: str
    columns: tuple[str, ...]
    coefficients: tuple[float, ...]
    rows: int
    floor: float = 0.0  # the given per-inference cost, ms (a fitted one is the overhead_ms column)

    def predict(self, features: CostFeatures) -> float:
        return self.floor + float(_row(features, self.precision, self.columns) @ np.array(self.coefficients))

    def scaled(self, features: CostFeatures, ratio: float) -> float:
        """The estimate for another precision at `ratio` of this one. A given floor is the
        runtime's whatever the precision, so the ratio scales only what lies above it (a fitted
        overhead is part of the float model the paired ratios were measured against)."""
        return self.floor + (self.predict(features) - self.floor) * ratio

    @property
    def fixed_ms(self) -> float | None:
        """The fixed cost per inference every estimate includes; None when the model has none."""
        if self.floor:
            return self.floor
        return self.coefficients[self.columns.index("overhead_ms")] if "overhead_ms" in self.columns else None


def fit(references: list[Reference], precision: str, columns: tuple[str, ...] | None = None,
        floor: float = 0.0) -> CostModel:
    """Non-negative least squares on the rows of `precision`, weighted so that every row
    counts by its relative (not absolute) error; `floor` ms is the given fixed cost per
    inference, and the features explain the rest of each row's latency."""
    from scipy.optimize import nnls

    rows = [r for r in references if r.precision == precision]
    if not rows:
        raise RunnerFailed(f"no reference rows of precision {precision!r}")
    below = [r for r in rows if r.latency_ms <= floor]
    if below:
        raise RunnerFailed(f"estimate.floor_ms = {floor:g} is not below the reference row {below[0].model} "
                           f"({below[0].precision}, {below[0].latency_ms:g} ms): a floor must be under every "
                           "measurement")
    columns = columns or _columns(len(rows), floor, _counted(rows))
    a = np.stack([_row(r.features, precision, columns) / r.latency_ms for r in rows])
    b = np.array([(r.latency_ms - floor) / r.latency_ms for r in rows])
    coefficients, _ = nnls(a, b)
    return CostModel(precision, columns, tuple(float(c) for c in coefficients), len(rows), floor)


def paired_ratio(references: list[Reference], precision: str) -> tuple[float, int] | None:
    """(geometric mean of latency(precision) / latency(float), number of pairs) over the rows
    measured in both precisions on the same model and input size; None without such pairs."""
    floats = {(r.model, r.features.image_size): r.latency_ms for r in references if r.precision == "float"}
    ratios = [r.latency_ms / floats[r.model, r.features.image_size] for r in references
              if r.precision == precision and (r.model, r.features.image_size) in floats]
    return (float(np.exp(np.mean(np.log(ratios)))), len(ratios)) if ratios else None


def by_ratio(references: list[Reference], precision: str) -> bool:
    """Whether `precision` is estimated as float x its paired ratio rather than by its own fit:
    it has fewer rows than float and at least one pair."""
    own = sum(r.precision == precision for r in references)
    floats = sum(r.precision == "float" for r in references)
    return precision != "float" and own < floats and paired_ratio(references, precision) is not None


def leave_one_out(references: list[Reference], precision: str, floor: float = 0.0) -> list[tuple[Reference, float]]:
    """(row, its prediction without it) for each row of `precision` that leaves something to
    fit on, made the way the full table's estimate is made, with the full table's terms (the
    error of that model, not of a smaller one). For a ratio estimate, the held row's model and
    size leave the table in every precision: neither its float row nor its pair may inform its
    prediction."""
    rows = [r for r in references if r.precision == precision]
    from_pairs = by_ratio(references, precision)
    fitted = [r for r in references if r.precision == ("float" if from_pairs else precision)]
    columns = _columns(len(fitted), floor, _counted(fitted))
    out = []
    for i, held in enumerate(rows):
        if from_pairs:
            key = (held.model, held.features.image_size)
            rest = [r for r in references if (r.model, r.features.image_size) != key]
            if (pairs := paired_ratio(rest, precision)) is not None:  # a pair left means a float row left
                out.append((held, fit(rest, "float", columns, floor).scaled(held.features, pairs[0])))
        else:
            rest = rows[:i] + rows[i + 1:]
            if rest:
                out.append((held, fit(rest, precision, columns, floor).predict(held.features)))
    return out


def interval(pairs: list[tuple[Reference, float]], point: float) -> list[float] | None:
    """[low, high] around `point` from the leave-one-out residuals: the smallest and largest
    ratio of a held-out row's measurement to its prediction (and 1), applied to the point.
    With n rows it covers about (n - 1) / (n + 1) of new models like the rows (50% with 3, 90%
    with 19); None with fewer than two residuals."""
    ratios = [r.latency_ms / predicted for r, predicted in pairs if predicted > 0]
    if len(ratios) < 2:
        return None
    return [point * min(1.0, *ratios), point * max(1.0, *ratios)]  # always around the point itself


def outside_range(features: CostFeatures, rows: list[Reference]) -> str | None:
    """What puts `features` outside the reference rows the estimate was fitted on (MACs,
    input size), or None when inside: outside, the estimate is an extrapolation."""
    problems = []
    macs = [r.features.macs for r in rows]
    if not min(macs) <= features.macs <= max(macs):
        problems.append(f"{features.macs / 1e6:.3g} MMACs outside the rows' {min(macs) / 1e6:.3g}-"
                        f"{max(macs) / 1e6:.3g}")
    sizes = [r.features.image_size for r in rows]
    if not min(sizes) <= features.image_size <= max(sizes):
        problems.append(f"{features.image_size} px outside the rows' {min(sizes)}-{max(sizes)} px")
    return "; ".join(problems) or None


def error_pct(pairs: list[tuple[Reference, float]], statistic=np.mean) -> float | None:
    """Mean (or `statistic`) absolute percentage error of (reference, prediction) pairs."""
    if not pairs:
        return None
    return float(statistic([abs(pred - r.latency_ms) / r.latency_ms * 100 for r, pred in pairs]))


# What an artifact and a reference row are compared on for a bound: the per-inference work
# the cost model counts. Latency does not fall when every one of them rises: the assumption
# behind the non-negative cost model, used here without any fit.
_WORK = ("dense_macs", "depthwise_macs", "params", "activations", "layers")


@dataclass(frozen=True)
class Bounds:
    """What the measured rows alone say of an artifact's latency at their precision: `high`,
    the fastest row that does at least as much of every counted cost (the artifact is no
    slower), and `low`, the slowest row that does at most as much (it is no faster). `refuted`:
    why the table's own rows give no bound (see monotonic)."""

    low: Reference | None
    high: Reference | None
    refuted: str | None = None

    def as_detail(self) -> dict | None:
        """The bounds in an estimate's detail (p50 and p90, ms, and the rows behind them); None
        without either. Rows are medians or means: the p90 bound above is the row's latency
        times P90_SAFETY, as an estimate's p90 interval is its p50 interval's."""
        if self.low is None and self.high is None:
            return None
        low = None if self.low is None else self.low.latency_ms
        high = None if self.high is None else self.high.latency_ms
        return {"p50": [low, high], "p90": [low, None if high is None else high * P90_SAFETY],
                "low_row": _described(self.low), "high_row": _described(self.high)}


def _described(row: Reference | None) -> str | None:
    return None if row is None else (f"{row.model} {row.precision} at {row.features.image_size} px, "
                                     f"{row.latency_ms:g} ms ({row.source})")


def _work(features: CostFeatures) -> list[int]:
    return [getattr(features, k) for k in _WORK]


def _at_least(a: CostFeatures, b: CostFeatures) -> bool:
    """Whether `a` does at least as much of every counted cost as `b`."""
    return all(x >= y for x, y in zip(_work(a), _work(b)))


def _bounding(references: list[Reference], precision: str) -> list[Reference]:
    """The rows of `precision` a bound may come from: measured on the profile's device (no
    stand-ins), with a layer count."""
    return [r for r in references if r.precision == precision and r.features.layers is not None and not r.stand_in]


def monotonic(references: list[Reference], precision: str) -> tuple[int, list[tuple[Reference, Reference]]]:
    """The table's own test of the bound's assumption: (how many pairs of rows of `precision`
    have one doing at least as much of every cost as the other, the pairs in which that one is
    nevertheless faster). On this host's onnxruntime INT8, a MobileNetV3 (hard-swish,
    squeeze-excite) at 224 px took 1.75x a MobileNetV2 at 128 px that does more of every cost."""
    rows = _bounding(references, precision)
    pairs = [(a, b) for a in rows for b in rows if a is not b and _at_least(a.features, b.features)
             and _work(a.features) != _work(b.features)]
    return len(pairs), [(a, b) for a, b in pairs if a.latency_ms < b.latency_ms]


def bounding_rows(features: CostFeatures, references: list[Reference], precision: str) -> Bounds:
    """The rows of `precision` (see _bounding) that bound `features` from above and below
    (module _WORK). A model far outside the rows, which the fit only extrapolates to, is
    often still below a measured row in every cost: that row's latency is a bound no fit is
    needed for. None where the table's own rows refute the assumption (monotonic)."""
    if features.layers is None:  # without the dispatch count, fewer MACs may still be more work
        return Bounds(None, None)
    pairs, against = monotonic(references, precision)
    if against:
        faster, slower = against[0]
        return Bounds(None, None, refuted=(
            f"in {len(against)} of the table's {pairs} {precision} row pairs where one does at least as much of every "
            f"cost, that one is faster (e.g. {faster.model} at {faster.features.image_size} px, {faster.latency_ms:g} ms, "
            f"against {slower.model} at {slower.features.image_size} px, {slower.latency_ms:g} ms): its rows bound nothing"))
    rows = _bounding(references, precision)
    above = [r for r in rows if _at_least(r.features, features)]
    below = [r for r in rows if _at_least(features, r.features)]
    return Bounds(low=max(below, key=lambda r: r.latency_ms, default=None),
                  high=min(above, key=lambda r: r.latency_ms, default=None))


# int16 layers inside an INT8 model run on other kernels (on this host's XNNPACK, TFLite's
# reference ones: 4-5x INT8, BENCHMARKS.md); no table has rows of such models.
_INT16_LAYERS = ("the cost model has no rows for INT8 models with int16 layers (on an x86 host they ran 4-5x "
                 "slower than INT8, BENCHMARKS.md); a device's int16 kernels are its own")


def _kept(other_layers: dict[str, int] | None) -> dict[str, int]:
    """The layers an INT8 artifact keeps at another precision ({"float": n, "int16": n}, as
    its metadata `edgekiln_other_layers` records them), the kinds it has any of."""
    return {kind: n for kind, n in (other_layers or {}).items() if n}


# An estimate may decide a budget only when its precision has this many reference rows and
# their leave-one-out median error is under this (nn-Meter's bar is far higher: ~99% of
# predictions within 10%); otherwise it is an order of magnitude, shown and never gating.
MIN_ROWS = 6
MAX_MEDIAN_ERROR_PCT = 25.0


def order_of_magnitude(rows: int, median_loo_pct: float | None) -> str | None:
    """Why an estimate made from `rows` reference rows with this leave-one-out median error is
    only an order of magnitude, or None when it is calibrated well enough to gate."""
    problems = []
    if rows < MIN_ROWS:
        problems.append(f"{rows} reference row(s) of its precision, fewer than {MIN_ROWS}")
    if median_loo_pct is None:
        problems.append("no leave-one-out error")
    elif median_loo_pct >= MAX_MEDIAN_ERROR_PCT:
        problems.append(f"leave-one-out median error {median_loo_pct:.0f}% (limit {MAX_MEDIAN_ERROR_PCT:g}%)")
    return "; ".join(problems) or None


def error_table(profile: Profile) -> list[dict]:
    """Per precision of `profile`'s reference table: its rows, how it is estimated, the
    leave-one-out error (median, mean, worst, percent), why it is only an order of magnitude
    (None when its estimates may decide budgets), and the bounds' test on its rows (monotonic:
    the pairs where one row does at least as much of every cost, and how many of them it is
    faster in)."""
    references = load_references(profile.references_path())
    floor = profile.estimate.floor_ms or 0.0
    table = []
    for precision in sorted({r.precision for r in references}):
        rows = sum(r.precision == precision for r in references)
        calibrated = calibrate(profile, precision)
        how = ", ".join(calibrated.model.columns) if calibrated.ratio == 1.0 else (
            f"float fit x {calibrated.ratio:.3f} (mean ratio of {paired_ratio(references, precision)[1]} pairs)")
        held_out = leave_one_out(references, precision, floor)
        median = error_pct(held_out, np.median)
        pairs, against = monotonic(references, precision)
        table.append({"precision": precision, "rows": rows, "model": how, "fixed_ms": calibrated.model.fixed_ms,
                      "loo_median_pct": median, "loo_mean_pct": error_pct(held_out),
                      "loo_worst_pct": error_pct(held_out, np.max),
                      "order_of_magnitude": order_of_magnitude(rows, median),
                      "monotonic_pairs": pairs, "monotonic_against": len(against)})
    return table


@dataclass(frozen=True)
class Calibrated:
    """A profile's cost model for one artifact precision: latency = floor + (model - floor) x
    ratio. `precision` is what is estimated (after the profile's alias); `model.precision` the
    reference rows it was fitted on."""

    model: CostModel
    ratio: float
    references: list[Reference]
    notes: list[str]
    precision: str

    def predict(self, features: CostFeatures) -> float:
        return self.model.scaled(features, self.ratio)


def calibrate(profile: Profile, precision: str) -> Calibrated:
    """Fit `profile`'s cost model for artifacts of `precision` (through its precision alias,
    or the float model times its declared ratio where the table has no such rows)."""
    spec = profile.estimate
    if spec is None:
        raise RunnerFailed(f"profile {profile.name!r} has no [estimate] section: it cannot be estimated")
    references = load_references(profile.references_path())
    floor = spec.floor_ms or 0.0
    wanted = asked = spec.precision_alias.get(precision, precision)
    notes = []
    if wanted != precision:
        notes.append(f"{precision} artifact estimated as {wanted} (profile estimate.precision_alias)")
    ratio = 1.0
    if by_ratio(references, wanted):
        ratio, pairs = paired_ratio(references, wanted)
        own = sum(r.precision == wanted for r in references)
        notes.append(f"{wanted} estimated as the float estimate x {ratio:.3f}, the mean {wanted}/float ratio of "
                     f"{pairs} paired reference(s): its {own} row(s), fewer than float's, fit the float model better as a ratio")
        return Calibrated(fit(references, "float", floor=floor), ratio, references, notes, wanted)
    if not any(r.precision == wanted for r in references):
        if wanted not in spec.precision_ratio:
            have = sorted({r.precision for r in references})
            raise RunnerFailed(f"profile {profile.name!r} has no {wanted} reference measurements (it has "
                               f"{', '.join(have)}) and no estimate.precision_ratio for {wanted}")
        ratio = spec.precision_ratio[wanted]
        notes.append(f"no {wanted} references: float estimate x {ratio:g} ({spec.ratio_source or 'profile'})")
        wanted = "float"
    return Calibrated(fit(references, wanted, floor=floor), ratio, references, notes, asked)


def measure(artifact: Path, profile: Profile, features: CostFeatures | None, precision: str,
            other_layers: dict[str, int] | None = None):
    """The estimate of an artifact of `precision` with these cost features; `other_layers`:
    how many layers it keeps in float or int16 (the rows are whole models of one precision:
    none bounds such a model, and int16 layers make its estimate an order of magnitude)."""
    from edgekiln.targets.runners import Measurement

    if features is None:
        raise RunnerFailed(f"{artifact.name} carries no edgekiln cost features (metadata 'edgekiln_cost'): "
                           "only artifacts written by edgekiln can be estimated")
    calibrated = calibrate(profile, precision)
    model, references = calibrated.model, calibrated.references
    if "layers" in model.columns and features.layers is None:
        raise RunnerFailed(f"{artifact.name} was written before edgekiln counted layers (metadata 'edgekiln_cost' "
                           f"has no 'layers'), and profile {profile.name!r} estimates a per-layer cost: re-export "
                           "it, or measure it on the device")
    # The error on the rows of the precision estimated; a declared ratio has none: the float fit's.
    if any(r.precision == calibrated.precision for r in references):
        scored, predict = calibrated.precision, calibrated.predict
    else:
        scored, predict = model.precision, model.predict
    held_out = leave_one_out(references, scored, model.floor)
    loo = error_pct(held_out)
    loo_median = error_pct(held_out, np.median)
    # A declared ratio (no rows of the precision at all) is borrowed, never calibrated.
    weak = order_of_magnitude(sum(r.precision == calibrated.precision for r in references), loo_median)
    kept = _kept(other_layers)
    if kept.get("int16"):
        weak = _INT16_LAYERS
    in_sample = error_pct([(r, predict(r.features)) for r in references if r.precision == scored])
    p50 = calibrated.predict(features)
    bounds = interval(held_out, p50)
    fitted_on = [r for r in references if r.precision == model.precision]
    extrapolated = outside_range(features, fitted_on)
    notes = calibrated.notes + [
        f"estimated from {model.rows} {model.precision} reference measurements; error on the {scored} rows "
        + (f"{loo:.0f}% (leave-one-out)" if loo is not None else "unknown (one row)")]
    p90, p90_bounds = p50 * P90_OVER_P50, None
    if bounds:
        p90_bounds = [bounds[0], bounds[1] * P90_SAFETY]
        notes.append(f"p90 {p90:.3g} ms: the p50 estimate x {P90_OVER_P50:g} (the largest p90/p50 measured on the "
                     f"host); its interval {p90_bounds[0]:.3g}-{p90_bounds[1]:.3g} ms reaches the p50 interval's upper "
                     f"end x {P90_SAFETY:g}, for the device's scheduler")
    peak = _host_peak_memory(artifact, profile)
    if peak is not None:
        notes.append(f"peak memory {peak:.3g} MB measured in this host's {profile.format} runtime (the same artifact "
                     "and interpreter; the device's allocator and the app around it add to it)")
    notes.append(f"interval {bounds[0]:.3g}-{bounds[1]:.3g} ms: the extreme leave-one-out errors of its "
                 f"{len(held_out)} rows (covers about {100 * (len(held_out) - 1) / (len(held_out) + 1):.0f}% of "
                 "models like them)" if bounds else "no interval: fewer than two rows to hold out")
    if model.fixed_ms is None:
        notes.append("no fixed per-inference cost known (estimate.floor_ms, or six rows to fit one): a model far "
                     "smaller than the rows may be estimated below what the runtime can do")
    if extrapolated:
        notes.append(f"extrapolated: {extrapolated}")
    bound = bounding_rows(features, references, calibrated.precision)
    if kept:
        bound = Bounds(None, None)
        notes.append("no measured row bounds it: the rows are whole models of one precision, and this one keeps "
                     + " and ".join(f"{n} {kind} layer(s)" for kind, n in kept.items())
                     + ("; the estimate is the whole model's at its precision, which its float layers run slower "
                        "than" if kept.get("float") else ""))
    if bound.refuted:
        notes.append(f"no measured row bounds it: {bound.refuted}")
    if bound.high is not None:
        notes.append(f"no slower than {_described(bound.high)}: that row does at least as much of every counted "
                     "cost (MACs, depthwise MACs, parameters, activations, layers)")
    if bound.low is not None:
        notes.append(f"no faster than {_described(bound.low)}: that row does at most as much of every counted cost")
    if weak:
        notes.append(f"order of magnitude only ({weak}): no budget is decided on it, only on a measured row's "
                     "bound; measure on the device or calibrate the profile on it (edgekiln profile calibrate)")
    return Measurement(source="estimate", runner="estimate", device=profile.device, tool="edgekiln cost model",
                       latency_ms={"p50": p50, "p90": p90, "mean": None, "std": None, "runs": None,
                                   "p50_interval": bounds, "p90_interval": p90_bounds},
                       peak_memory_mb=peak, notes=notes,
                       extra={"precision": model.precision, "ratio": calibrated.ratio, "references": model.rows,
                              "columns": list(model.columns), "coefficients": list(model.coefficients),
                              "fixed_ms": model.fixed_ms, "error_pct_leave_one_out": loo,
                              "error_pct_leave_one_out_median": loo_median, "error_pct_in_sample": in_sample,
                              "extrapolated": extrapolated, "order_of_magnitude": weak,
                              "bounds": bound.as_detail(),
                              "peak_memory_source": None if peak is None else "this host's runtime"})


# p90 from a p50 estimate: the point is the p50 times the largest p90/p50 the host runner
# measured on the first-run artifacts (1.07-1.30, BENCHMARKS.md); the interval's upper end
# doubles the p50 interval's, since a phone's scheduler is noisier than a quiet host.
P90_OVER_P50 = 1.3
P90_SAFETY = 2.0


def _host_peak_memory(artifact: Path, profile: Profile) -> float | None:
    """The artifact's peak memory in its runtime on this host, where that runtime runs."""
    from edgekiln.targets.runners import host

    try:
        return host.peak_memory(artifact, profile)
    except RunnerFailed:
        return None


class ProfileEstimator:
    """A profile's latency estimate of a torch model, at the precision its format exports
    (INT8 for every format but fp32-only ones): the cost model is fitted once, then any model
    at `input_size` is estimated from its cost features (pruning steps, student candidates)."""

    source = "estimate"

    def __init__(self, profile: str | Profile, input_size: int):
        from edgekiln.targets import get_format
        from edgekiln.targets.profiles import load_profile

        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.calibrated = calibrate(self.profile, get_format(self.profile.format).PRECISION)
        self.input_size = input_size

    def __call__(self, model) -> float:
        from edgekiln.targets.cost import cost_features

        return self.calibrated.predict(cost_features(model, self.input_size))
