"""`edgekiln run CONFIG --plan`: what a run will do and how long it should take here, before
any training. Each planned stage says what it will run (stages/planning.py: loops of an
architecture, epochs expected and at most, and conversions); this module sizes the data,
times a few training and evaluation steps of each architecture at the data's image size on
this machine (the throughput probe), and adds it up. Auto loops are expected to run about
four patience windows (measured: stages/planning.py), between one window and their cap."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgekiln import stages as registry
from edgekiln.progress import console

PROBE_STEPS = 3


@dataclass
class PlannedRow:
    stage: str  # the stage's title, as the reports show it
    what: str
    epochs: tuple[float, float, float] | None  # expected, least, most
    minutes: tuple[float, float, float]  # expected, least, most
    name: str = ""  # the stage's name


@dataclass
class RunPlan:
    train_images: int
    val_images: int
    image_size: int
    rows: list[PlannedRow] = field(default_factory=list)
    probes: dict[str, dict] = field(default_factory=dict)  # arch -> seconds per image, training and eval
    seconds_to_plan: float = 0.0

    max_minutes: float | None = None  # the config's time budget ([pipeline] max_minutes)

    @property
    def minutes(self) -> tuple[float, float, float]:
        return tuple(sum(r.minutes[i] for r in self.rows) for i in range(3))  # type: ignore[return-value]

    def expected_by_stage(self) -> dict[str, float]:
        """Expected minutes of each stage, in the order they run (the time budget's shares)."""
        out: dict[str, float] = {}
        for r in self.rows:
            out[r.name] = out.get(r.name, 0.0) + r.minutes[0]
        return out


def probe(arch: str, num_classes: int, size: int, batch: int) -> dict:
    """Seconds per image of a training step (forward, backward, optimizer) and of an eval
    forward pass of `arch` at `size` px on this machine's training device."""
    import torch

    from edgekiln.training import evaluation, modeling

    device = evaluation.device()
    model = modeling.create(arch, num_classes, image_size=size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    model.train()
    for _ in range(2):  # warm-up: the first steps pay for allocations and kernel selection
        step()
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    train = (time.perf_counter() - started) / (PROBE_STEPS * batch)
    model.eval()
    with torch.no_grad():
        model(x)
        started = time.perf_counter()
        for _ in range(PROBE_STEPS):
            model(x)
    return {"train_s_per_image": train, "eval_s_per_image": (time.perf_counter() - started) / (PROBE_STEPS * batch)}


def plan_run(cfg, data=None) -> RunPlan:
    """The plan of `cfg`'s run on this machine (loads the data's listing and splits unless
    `data` is given, probes each architecture; trains nothing, writes nothing)."""
    from edgekiln.data.dataset import load_dataset
    from edgekiln.engine.config import plan_of

    started = time.perf_counter()
    data = data if data is not None else load_dataset(cfg.data)
    plan = RunPlan(len(data.train_y), len(data.val_y), data.image_size, max_minutes=cfg.pipeline.max_minutes)
    model = None
    works = []
    for stage in plan_of(cfg).stages:
        if stage.plan is None:
            continue
        planned, model = registry.resolve(stage.plan)(cfg, model)
        works += [(stage, w) for w in planned]
    batch = cfg.train.batch_size  # per-image cost depends on it: probe at the size training uses
    for _, w in works:
        if w.arch is not None and w.max_epochs and w.arch not in plan.probes:
            console.print(f"  timing {w.arch} at {data.image_size} px", markup=False)
            plan.probes[w.arch] = probe(w.arch, data.num_classes, data.image_size, batch)
    for stage, w in works:
        if w.arch is None or not w.max_epochs:  # a loop that may not run still has a most
            plan.rows.append(PlannedRow(stage.label, w.what, None, (w.seconds / 60,) * 3, stage.name))
            continue
        p = plan.probes[w.arch]
        epoch_s = w.scale * (plan.train_images * p["train_s_per_image"] + plan.val_images * p["eval_s_per_image"])
        plan.rows.append(PlannedRow(stage.label, w.what, (w.epochs, w.min_epochs, w.max_epochs),
                                    tuple(e * epoch_s / 60 for e in (w.epochs, w.min_epochs, w.max_epochs)),
                                    stage.name))
    plan.seconds_to_plan = time.perf_counter() - started
    return plan
