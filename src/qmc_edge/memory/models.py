"""Device models for the memories that hold quantized weights.

Written by hand because no maintained library models multi-level ReRAM *read-out errors of
stored levels* in a form a quantizer can use: NVMExplorer ships the level table but no API, and
IBM aihwkit models continuous analog noise for in-memory compute, not digital level storage.

Every model answers two questions through one small interface:

* ``transition_matrix()``: P[i, j] = probability that a cell programmed to level i reads back as
  level j. The noise-aware quantizer uses it analytically (expected error, no sampling).
* ``read(levels, generator)``: one sampled read of many cells. The default samples from the
  transition matrix; a continuous model (e.g. conductance drift) may override it.

Two error sources, named:

* **Programming (write) error, per chip.** A cell is programmed once; where its conductance lands in
  its level's Gaussian (and where relaxation has moved it by the deployment age) is fixed for that
  chip. The project draws one such realisation per noise seed and keeps it for a whole evaluation:
  a seed is *a chip*, not a read. The level tables, ``age_s``, ``noise_scale`` and ``write_verify``
  all describe this error.
* **Read noise, per read** (optional, ``read_noise=True`` in :func:`reram`): a second, small Gaussian
  on the conductance drawn afresh at every read (1/f and telegraph noise; aihwkit's CMO/HfOx fit).
  :attr:`GaussianLevelReRAM.read_sigma` gives it per level. ``transition_matrix()`` includes both
  (variances add): it is the error of one read, what the clip search optimises. ``read(levels,
  generator, read_generator)`` draws the two apart: the chip's programmed conductances from
  ``generator`` (:meth:`GaussianLevelReRAM.program`, the same for every read of the chip), then this
  read's noise from ``read_generator`` (:meth:`GaussianLevelReRAM.sense`). ``read_share`` is the
  what-if knob: that fraction of each level's total variance is per-read, the rest frozen, so the
  error rate of one read is unchanged and only its split between chip and read moves.

The shipped ReRAM cell models are data: validated YAML files in ``qmc_edge/cell_models/`` with a source
on every figure (:mod:`qmc_edge.memory.files`); a user passes an edited copy by path.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

from qmc_edge.memory.counter_rng import Generator, normal, uniform
from qmc_edge.memory.drift import ReadNoiseModel, Relaxation
from qmc_edge.memory.files import (
    DEFAULT_CELL_MODEL,
    CellModelFile,
    format_age,
    load_cell_model,
    parse_age,
    shipped_cell_models,
)

__all__ = [
    "DEFAULT_AGES",
    "RERAM_LEVELS",
    "RERAM_SOURCE",
    "CellModel",
    "GaussianLevelReRAM",
    "IdealCells",
    "cell_model_table",
    "reram",
]

# Gaussian level model of multi-level ReRAM, normalised conductance (0 = lowest, 1 = highest), at the
# time after programming that the cell-model file calls fresh (1 s). Source: NVMExplorer (lpentecost/
# NVMExplorer, MIT), nvmexplorer_src/nvmFI/nvm_data/mlc_rram_args.p, as tabulated in
# ../shared/reference/devices.md; 1 bit/cell uses the two extreme states of the 2-bit table. The
# numbers live in cell_models/nvmexplorer_rram.yaml (each with its source); this is a view of them.
_DEFAULT_FILE = load_cell_model(DEFAULT_CELL_MODEL)
RERAM_LEVELS: dict[int, tuple[tuple[float, float], ...]] = {b: _DEFAULT_FILE.table(b) for b in _DEFAULT_FILE.levels}
RERAM_SOURCE = "NVMExplorer mlc_rram_args.p (Gaussian levels), via shared/reference/devices.md"
#: The ages at which ``qmc cells`` and :func:`cell_model_table` report error rates.
DEFAULT_AGES = ("1s", "1d", "1y", "10y")
#: Largest accepted ``noise_scale``.
MAX_NOISE_SCALE = 100.0


class CellModel(ABC):
    """A memory whose cells each store one of ``2**bits_per_cell`` levels."""

    bits_per_cell: int
    name: str

    @property
    def levels(self) -> int:
        return 2**self.bits_per_cell

    @abstractmethod
    def transition_matrix(self) -> np.ndarray:
        """(L, L) row-stochastic matrix of programmed level -> read level probabilities."""

    @property
    def is_ideal(self) -> bool:
        return bool(np.allclose(self.transition_matrix(), np.eye(self.levels), atol=0, rtol=0))

    @property
    def rereads(self) -> bool:
        """Whether part of the error is drawn afresh at every read (read noise), so that one chip
        (one programming seed) gives a different read each time it is read."""
        return False

    def read(self, levels: torch.Tensor, generator: Generator, read_generator: Generator | None = None) -> torch.Tensor:
        """Sample one read of every cell in ``levels`` (integer tensor of any shape).

        ``generator`` draws the chip (the programming error); ``read_generator``, for models that
        :attr:`rereads`, draws this read's noise. Without it, or for other models, the whole error is
        drawn from ``generator`` through the transition matrix. A generator is a ``torch.Generator``
        or a :class:`~qmc_edge.memory.counter_rng.CounterStream` (the same draws on every device; the read
        then runs where ``levels`` are)."""
        if self.is_ideal or levels.numel() == 0:
            return levels.clone()
        dev = levels.device
        cdf = torch.from_numpy(np.cumsum(self.transition_matrix(), axis=1)).to(dev, torch.float64)
        cdf[:, -1] = 1.0  # guard against rounding: every draw lands somewhere
        flat = levels.reshape(-1).long()
        u = uniform(flat.shape, generator).to(dev)
        # Inverse-CDF sampling for every cell in one sorted search: row i of the CDF is offset by i,
        # so the rows concatenate into one ascending array and a cell programmed to level q with
        # uniform u is found by searching q + u. The read level is the number of entries of row q
        # below u, exactly the count ``(u > cdf[q]).sum()`` without an (n, L) comparison.
        offset = torch.arange(self.levels, dtype=torch.float64, device=dev)[:, None]
        table = (offset + cdf).reshape(-1)
        v = flat.to(torch.float64) + u
        # Most cells read their own level q: that is exactly table[qL + q - 1] < v <= table[qL + q]
        # (the search's answer qL + q), two comparisons against per-level bounds. Only the others are
        # searched; the result is the full search's, element for element, at a fraction of its time.
        n = self.levels
        q = torch.arange(n, device=dev)
        lo = torch.cat([torch.tensor([-float("inf")], dtype=torch.float64, device=dev), table])[q * n + q]
        hi = table[q * n + q]
        out = flat.clone()
        miss = ~((v > lo.index_select(0, flat)) & (v <= hi.index_select(0, flat)))
        idx = miss.nonzero().squeeze(1)
        if idx.numel():
            out[idx] = torch.searchsorted(table, v[idx]) - flat[idx] * n
        return out.clamp_(0, n - 1).reshape(levels.shape).to(levels.dtype)

    def describe(self) -> dict:
        t = self.transition_matrix()
        return {
            "name": self.name,
            "bits_per_cell": self.bits_per_cell,
            "mean_cell_error_rate": float(1.0 - np.mean(np.diag(t))),
            "worst_level_error_rate": float(1.0 - np.min(np.diag(t))),
        }


@dataclass
class IdealCells(CellModel):
    """Error-free storage (SRAM, DRAM, or ECC-protected memory)."""

    bits_per_cell: int = 1
    name: str = "ideal"

    def transition_matrix(self) -> np.ndarray:
        return np.eye(self.levels)


def _gaussian_intersection(m0: float, s0: float, m1: float, s1: float) -> float:
    """Point between m0 < m1 where the two normal densities are equal (the ML read threshold)."""
    if abs(s0 - s1) < 1e-15:
        return 0.5 * (m0 + m1)
    # Equal log-densities: quadratic a x^2 + b x + c = 0.
    a = 1.0 / (2 * s1**2) - 1.0 / (2 * s0**2)
    b = m0 / s0**2 - m1 / s1**2
    c = m1**2 / (2 * s1**2) - m0**2 / (2 * s0**2) + np.log(s1 / s0)
    roots = np.roots([a, b, c])
    roots = roots[np.isreal(roots)].real
    inside = [r for r in roots if m0 <= r <= m1]
    if not inside:  # cannot happen for well-separated levels; fall back to the midpoint
        return 0.5 * (m0 + m1)
    return float(inside[0])


@dataclass
class GaussianLevelReRAM(CellModel):
    """Multi-level ReRAM: each level is a Gaussian in conductance; reads threshold at the
    intersections of neighbouring Gaussians, so a read past a threshold returns a neighbour.

    ``level_table`` is the fresh distribution (read ``t0`` after programming). With a
    :class:`Relaxation`, ``age_s`` moves and widens every level; ``write_verify_factor`` narrows the
    programmed sigmas; ``noise_scale`` multiplies the programmed sigmas after ageing (``0 <
    noise_scale <= 100``); a :class:`ReadNoiseModel` adds per-read noise (variances add).

    Read thresholds (``reference``): ``"fixed"`` (default) keeps the thresholds of the fresh
    distribution (with the chosen noise_scale, write-verify and read noise), as a sense amplifier
    with fixed references set when the chip is programmed would; ``"aged"`` recomputes them for the
    aged distributions, as references that relax with the cells would. At age <= t0 both are the
    same, and with the defaults the matrix is exactly that of the fresh table.
    """

    bits_per_cell: int = 3
    level_table: tuple[tuple[float, float], ...] | None = None
    name: str = "reram-mlc"
    age_s: float = 0.0
    noise_scale: float = 1.0
    write_verify_factor: float = 1.0
    relaxation: Relaxation | None = None
    read_noise: ReadNoiseModel | None = None
    reference: str = "fixed"
    cell_model: str | None = None  # the name of the cell-model file the levels come from
    # Fraction of every level's total variance that is redrawn at each read (the rest is frozen at
    # programming). None: the cell-model file's own read noise (read_noise) is the per-read part.
    read_share: float | None = None

    def __post_init__(self) -> None:
        if self.level_table is None:
            if self.bits_per_cell not in RERAM_LEVELS:
                raise ValueError(
                    f"no ReRAM level table for {self.bits_per_cell} bits/cell; use 1, 2 or 3 or pass level_table"
                )
            self.level_table = RERAM_LEVELS[self.bits_per_cell]
            if self.cell_model is None:
                self.cell_model = DEFAULT_CELL_MODEL
        if len(self.level_table) != self.levels:
            raise ValueError(
                f"level table has {len(self.level_table)} levels, {self.bits_per_cell} bits/cell needs {self.levels}"
            )
        self.age_s = parse_age(self.age_s)
        ns = self.noise_scale
        if isinstance(ns, bool) or not isinstance(ns, numbers.Real) or not (0 < ns <= MAX_NOISE_SCALE):
            raise ValueError(f"noise_scale must be a number in (0, {MAX_NOISE_SCALE:g}], got {ns!r}")
        self.noise_scale = float(ns)
        wv = self.write_verify_factor
        if isinstance(wv, bool) or not isinstance(wv, numbers.Real) or not (0 < wv <= 1):
            raise ValueError(f"write_verify_factor must be in (0, 1], got {wv!r}")
        rs = self.read_share
        if rs is not None and (isinstance(rs, bool) or not isinstance(rs, numbers.Real) or not 0 <= rs <= 1):
            raise ValueError(f"read_share must be a number in [0, 1], got {rs!r}")
        if self.reference not in ("fixed", "aged"):
            raise ValueError(f"reference must be 'fixed' or 'aged', got {self.reference!r}")
        if self.relaxation is None and self.age_s > self.fresh_s:
            raise ValueError(
                f"age {format_age(self.age_s)}: this ReRAM model has no retention figures; use a cell-model file "
                f"with a retention section (shipped: {', '.join(shipped_cell_models())})"
            )
        self.name = f"reram-{self.bits_per_cell}b/cell"
        self._mu, self._sd_prog, self._sd_read, sd_total = self._level_params(self.age_s)
        if self.reference == "fixed" and self.age_s > self.fresh_s:
            fmu, _, _, fsd = self._level_params(0.0)
        else:
            fmu, fsd = self._mu, sd_total
        self._thr = np.array(
            [
                _gaussian_intersection(float(fmu[i]), float(fsd[i]), float(fmu[i + 1]), float(fsd[i + 1]))
                for i in range(self.levels - 1)
            ],
            dtype=np.float64,
        )
        self._sd_total = sd_total
        if self.read_share is not None:
            # Same total per level, split: the transition matrix (and so the clip search) is unchanged.
            self._sd_prog = sd_total * math.sqrt(1.0 - self.read_share)
            self._sd_read = sd_total * math.sqrt(self.read_share)
        self._matrix = self._compute_matrix(self._mu, sd_total)
        self._prog_matrix = self._matrix if not self.rereads else self._compute_matrix(self._mu, self._sd_prog)

    @property
    def fresh_s(self) -> float:
        """Time after programming at which the level table holds (1 s when there is no retention model)."""
        return self.relaxation.t0_s if self.relaxation is not None else 1.0

    def _level_params(self, age_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(means, programmed sigmas, read sigmas, total sigmas) per level at ``age_s``.

        Written so that the defaults (fresh, noise_scale 1, no write-verify, no read noise) return the
        table's own numbers untouched: no arithmetic on them at all, hence bit-identical matrices."""
        mu0 = np.array([m for m, _ in self.level_table], dtype=np.float64)
        sd = np.array([s for _, s in self.level_table], dtype=np.float64)
        if self.write_verify_factor != 1.0:
            sd = sd * self.write_verify_factor
        t = max(age_s, self.fresh_s)
        mu = mu0
        if self.relaxation is not None and age_s > self.relaxation.t0_s:
            mu = mu0 + self.relaxation.shift(t)
            sd = np.sqrt(sd**2 + self.relaxation.extra_variance(t))
        if self.noise_scale != 1.0:
            sd = sd * self.noise_scale
        if self.read_noise is None:
            return mu, sd, np.zeros_like(sd), sd
        rd = np.asarray(self.read_noise.sigma(mu0, t), dtype=np.float64)
        return mu, sd, rd, np.sqrt(sd**2 + rd**2)

    def thresholds(self) -> np.ndarray:
        return self._thr.copy()

    @property
    def rereads(self) -> bool:
        return self.read_noise is not None or bool(self.read_share)

    def read(self, levels: torch.Tensor, generator: Generator, read_generator: Generator | None = None) -> torch.Tensor:
        """One read; with read noise (or ``read_share``) and a ``read_generator``: the chip's
        programmed conductances from ``generator`` (the same for every read of that chip), then this
        read's noise from ``read_generator`` (:meth:`program`, then :meth:`sense`)."""
        if read_generator is None or not self.rereads or levels.numel() == 0:
            return super().read(levels, generator)
        flat = levels.reshape(-1).long()
        g = self.program(flat, generator)
        if self.read_share is not None:
            sd = torch.from_numpy(self._sd_read).to(flat.device)[flat]
            g = g + sd * normal(g.shape, read_generator).to(g.device)
            out = torch.bucketize(g, torch.from_numpy(self._thr).to(g.device), right=True)
        else:
            out = self.sense(g, read_generator)
        return out.reshape(levels.shape).to(levels.dtype)

    def _compute_matrix(self, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
        edges = np.concatenate([[-np.inf], self._thr, [np.inf]])[None, :]
        with np.errstate(divide="ignore"):  # sd 0 (read_share=1): the programming error alone is exact
            cdf = ndtr((edges - mu[:, None]) / sd[:, None])
        return np.diff(cdf, axis=1)

    def transition_matrix(self) -> np.ndarray:
        """Programming error at ``age_s`` and, when on, read noise together (variances add)."""
        return self._matrix

    def programming_matrix(self) -> np.ndarray:
        """The transition matrix of the programming error alone (no read noise), same thresholds."""
        return self._prog_matrix

    def level_means(self) -> np.ndarray:
        """Mean conductance of every level at ``age_s`` (normalised)."""
        return self._mu.copy()

    def level_sigmas(self) -> np.ndarray:
        """Programmed (write) sigma of every level at ``age_s``, after write-verify and noise_scale."""
        return self._sd_prog.copy()

    @property
    def read_sigma(self) -> np.ndarray:
        """Per-read noise sigma of every level (normalised; zeros when read noise is off)."""
        return self._sd_read.copy()

    @property
    def age_extrapolated(self) -> bool:
        """Whether ``age_s`` lies beyond the longest measured time of the retention figures."""
        return self.relaxation is not None and self.age_s > self.relaxation.measured_to_s

    def program(self, levels: torch.Tensor, generator: Generator) -> torch.Tensor:
        """One chip's programmed conductances (float64, normalised) for integer ``levels``: the
        programming error at ``age_s``, to be kept fixed for that chip."""
        flat = levels.reshape(-1).long()
        mu = torch.from_numpy(self._mu).to(flat.device)[flat]
        sd = torch.from_numpy(self._sd_prog).to(flat.device)[flat]
        z = normal(flat.shape, generator).to(flat.device)
        return (mu + sd * z).reshape(levels.shape)

    def sense(self, conductance: torch.Tensor, generator: Generator | None = None) -> torch.Tensor:
        """Read levels (int64) from conductances; with read noise on and a generator, adds a fresh
        read-noise draw first (sigma evaluated at each cell's conductance)."""
        g = conductance.to(torch.float64)
        if self.read_noise is not None and generator is not None:
            sd = self.read_noise.sigma(g, max(self.age_s, self.fresh_s))
            g = g + sd * normal(g.shape, generator).to(g.device)
        return torch.bucketize(g, torch.from_numpy(self._thr).to(g.device), right=True)

    def describe(self) -> dict:
        info = super().describe()
        info.update(
            cell_model=self.cell_model,
            age_s=self.age_s,
            age=format_age(self.age_s),
            age_extrapolated=self.age_extrapolated,
            noise_scale=self.noise_scale,
            write_verify_factor=self.write_verify_factor,
            read_noise=self.read_noise is not None,
            read_share=self.read_share,
            reference=self.reference,
        )
        return info


def reram(
    bits_per_cell: int,
    ideal: bool = False,
    *,
    cell_model: str | CellModelFile = DEFAULT_CELL_MODEL,
    age_s: float | str = 0.0,
    noise_scale: float = 1.0,
    write_verify: bool = False,
    read_noise: bool = False,
    reference: str = "fixed",
    read_share: float | None = None,
) -> CellModel:
    """The ReRAM model for ``bits_per_cell`` from a cell-model file; ``ideal`` swaps in error-free cells
    of the same size.

    ``cell_model``: a shipped cell model name (:func:`shipped_cell_models`), a cell-model YAML path, or a parsed
    :class:`~qmc_edge.memory.files.CellModelFile`. ``age_s``: time since programming, seconds or a human
    age (``"1d"``, ``"10y"``; :func:`parse_age`); ages up to the file's fresh time (1 s) give the
    fresh table. ``noise_scale``: multiplies the programmed sigmas after ageing (0 < x <= 100).
    ``write_verify``: narrows the programmed sigmas by the file's write-verify factor. ``read_noise``:
    adds the file's per-read noise. ``reference``: read thresholds ``"fixed"`` at programming time or
    ``"aged"`` (see :class:`GaussianLevelReRAM`). ``read_share``: the fraction of each level's total
    variance redrawn at every read instead of frozen at programming (equal total sigma, so the same
    error rate per read). With every default, the model is exactly the one
    this function returned before cell-model files existed."""
    spec = load_cell_model(cell_model)
    if bits_per_cell not in spec.levels:
        raise ValueError(
            f"bits per cell must be {', '.join(map(str, spec.bits_per_cell))} for cell model {spec.name}, "
            f"got {bits_per_cell}"
        )
    age = parse_age(age_s)
    relaxation = Relaxation.from_file(spec)
    if write_verify and spec.write_verify is None:
        raise ValueError(f"cell model {spec.name} gives no write-verify figures; add a write_verify section")
    if read_noise and spec.read_noise is None:
        raise ValueError(f"cell model {spec.name} gives no read-noise figures; add a read_noise section")
    model = GaussianLevelReRAM(
        bits_per_cell=bits_per_cell,
        level_table=spec.table(bits_per_cell),
        age_s=age,
        noise_scale=noise_scale,
        write_verify_factor=spec.write_verify.factor if write_verify else 1.0,
        relaxation=relaxation,
        read_noise=ReadNoiseModel.from_file(spec) if read_noise else None,
        reference=reference,
        cell_model=spec.name,
        read_share=read_share,
    )
    if ideal:
        return IdealCells(bits_per_cell=bits_per_cell, name=f"ideal-{bits_per_cell}b/cell")
    return model


def cell_model_table(
    cell_models: list[str | CellModelFile] | None = None,
    ages: tuple[str | float, ...] | list[str | float] = DEFAULT_AGES,
    **options,
) -> list[dict]:
    """One row per cell model and bits per cell: ``name``, ``bits_per_cell``, ``mean_cell_error_rate`` and
    ``worst_level_error_rate`` (fresh), ``source`` (of the level tables), ``measured_to_s`` (longest
    measured retention time, None without retention figures), and ``error_rate_at`` /
    ``worst_error_rate_at``: {age label: rate} at ``ages`` (None where the file has no retention
    figures), ``extrapolated``: the age labels beyond the measured times. ``options`` go to
    :func:`reram` (noise_scale, write_verify, read_noise, reference). Devices: the shipped ones by
    default."""
    rows = []
    labels = [a if isinstance(a, str) else format_age(float(a)) for a in ages]
    seconds = [parse_age(a) for a in ages]
    for dev in cell_models if cell_models is not None else shipped_cell_models():
        spec = load_cell_model(dev)
        relax = Relaxation.from_file(spec)
        for bits in spec.bits_per_cell:
            fresh = reram(bits, cell_model=spec, **options).describe()
            at, worst, extrap = {}, {}, []
            for label, t in zip(labels, seconds, strict=True):
                if relax is None and t > 1.0:
                    at[label] = worst[label] = None
                    continue
                d = reram(bits, cell_model=spec, age_s=t, **options)
                info = d.describe()
                at[label] = info["mean_cell_error_rate"]
                worst[label] = info["worst_level_error_rate"]
                if isinstance(d, GaussianLevelReRAM) and d.age_extrapolated:
                    extrap.append(label)
            rows.append(
                {
                    "name": spec.name,
                    "bits_per_cell": bits,
                    "mean_cell_error_rate": fresh["mean_cell_error_rate"],
                    "worst_level_error_rate": fresh["worst_level_error_rate"],
                    "source": spec.source,
                    "measured_to_s": relax.measured_to_s if relax is not None else None,
                    "error_rate_at": at,
                    "worst_error_rate_at": worst,
                    "extrapolated": extrap,
                }
            )
    return rows
