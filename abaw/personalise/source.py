"""CaP's source side: per training subject, the statistics that say whom a test track is like
and the class prototypes it then borrows.

Built once per fold from the fold model's views of its training tracks (never of the held-out
ones), grouped by the person each track shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class SourceBank:
    """Per training subject: Gaussian statistics of its embeddings and unit class prototypes.

    ``means`` (S, D); ``scales`` (S, D) standard deviations (``covariance="diag"``) or (S, D, D)
    square roots of the covariance matrices (``"full"``), with ``traces`` (S,) of the
    covariances; ``prototypes`` (S, C, D) unit vectors (mean of the subject's L2-normalised
    frames of class c, renormalised), ``present`` (S, C) whether the subject has class c;
    ``pooled`` (C, D) / ``pooled_present`` (C,) the same over all subjects, the source cache of
    a track too short to compare.
    """

    subjects: tuple[str, ...]
    covariance: str
    means: torch.Tensor
    scales: torch.Tensor
    traces: torch.Tensor
    prototypes: torch.Tensor
    present: torch.Tensor
    pooled: torch.Tensor
    pooled_present: torch.Tensor

    def distances(self, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """(S,) Fréchet distances between N(mean, Σ) and each subject's Gaussian; ``mean`` (D,),
        ``spread`` the standard deviations (D,) for a diagonal bank, the covariance (D, D) for
        a full one.

        Diagonal: ||μ − μ_s||² + ||σ − σ_s||²; full: ||μ − μ_s||² + tr Σ + tr Σ_s −
        2 tr (Σ_s^½ Σ Σ_s^½)^½ (an eigvalsh per subject: costly at large D, so an option)."""
        mean, spread = mean.double(), spread.double()
        gap = ((mean - self.means) ** 2).sum(dim=-1)
        if self.covariance == "diag":
            return gap + ((spread - self.scales) ** 2).sum(dim=-1)
        cross = torch.linalg.eigvalsh(self.scales @ spread @ self.scales).clamp_min(0).sqrt().sum(dim=-1)
        return gap + spread.trace() + self.traces - 2 * cross

    def nearest(self, z: torch.Tensor, frames: torch.Tensor, subjects: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The source cache of a track: prototypes (m, C, D) and present (m, C) of the m =
        min(``subjects``, S) training subjects nearest the Gaussian of its rows ``z`` (T, D)
        where ``frames`` (T,) bool, in the bank's order; the pooled prototypes (1, C, D) when
        fewer than 2 frames give no spread to compare."""
        count = int(frames.sum())
        if count < 2:
            return self.pooled[None], self.pooled_present[None]
        # The moments as products with the frames' 0/1 weights: a reduction down the columns of
        # a (T, D) array, or a copy of the frames, costs far more on the CPU.
        weight = frames.float()
        mean = (weight @ z).double() / count
        if self.covariance == "diag":
            spread = ((weight @ z.square()).double() / count - mean ** 2).clamp_min(0).sqrt()
        else:
            spread = ((z.T * weight) @ z).double() / count - mean[:, None] * mean[None, :]
        picked = self.distances(mean, spread).topk(min(subjects, len(self.subjects)), largest=False).indices.sort()
        return self.prototypes[picked.values], self.present[picked.values]


def _unit_mean(rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.normalize(rows, dim=-1).mean(dim=0), dim=-1)


def _prototypes(z: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) unit class prototypes of rows ``z`` with ``labels`` (zero rows for an absent
    class) and (C,) whether each class is present."""
    present = torch.stack([(labels == c).any() for c in range(classes)])
    prototypes = torch.stack([_unit_mean(z[labels == c]) if present[c] else torch.zeros(z.shape[1])
                              for c in range(classes)])
    return prototypes, present


@torch.no_grad()
def build_source(embeddings: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], subjects: Sequence[str],
                 num_classes: int, covariance: str = "diag") -> SourceBank:
    """The training side of ``cap`` from training tracks, grouped by subject.

    ``embeddings``: per track the z (T, D) of the same linear view the test tracks get
    (``linear_view(model, features).z`` with the fold's own model); ``labels``: per track (T,)
    class indices, -1 (or any negative) where a frame has no label (it still counts in the
    statistics); ``subjects``: per track the person (``Track.source`` in this toolkit).
    """
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance={covariance!r}: choose diag or full")
    if not (len(embeddings) == len(labels) == len(subjects)) or not embeddings:
        raise ValueError("build_source: one label array and one subject per embedding array, at least one")
    labels = [torch.as_tensor(y).reshape(-1).long() for y in labels]
    names = tuple(sorted(set(subjects)))
    means, scales, traces, prototypes, present = [], [], [], [], []
    for name in names:
        picks = [i for i, s in enumerate(subjects) if s == name]
        z = torch.cat([embeddings[i].float() for i in picks]).double()
        means.append(z.mean(dim=0))
        if covariance == "diag":
            scales.append(z.std(dim=0, unbiased=False))
            traces.append(torch.zeros((), dtype=z.dtype))
        else:  # Σ_s^½ once per subject, so that each distance needs one eigvalsh
            cov = torch.cov(z.T, correction=0)
            values, vectors = torch.linalg.eigh(cov)
            scales.append(vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T)
            traces.append(cov.trace())
        mine, has = _prototypes(z.float(), torch.cat([labels[i] for i in picks]), num_classes)
        prototypes.append(mine)
        present.append(has)
    pooled, pooled_present = _prototypes(torch.cat([e.float() for e in embeddings]), torch.cat(labels), num_classes)
    return SourceBank(subjects=names, covariance=covariance, means=torch.stack(means), scales=torch.stack(scales),
                      traces=torch.stack(traces), prototypes=torch.stack(prototypes), present=torch.stack(present),
                      pooled=pooled, pooled_present=pooled_present)
