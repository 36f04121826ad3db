"""T3A (Iwasawa & Matsuo, NeurIPS 2021): the last layer replaced by prototypes of the track.

Per class a set of supports, seeded with the class's row of the last linear layer (the
paper's warm start); every frame's embedding joins the class the original classifier
predicts, with the entropy of that prediction; per class only the ``k`` supports of lowest
entropy are kept; the new classifier's rows are the normalised sums of the L2-normalised
supports, and logits = z · W, without the bias (the prototypes replace the whole layer).

Offline, as in the challenge: the whole track is known, so every frame is classified by the
supports the paper's frame-by-frame loop ends with, which one sort finds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from abaw.personalise.registry import register_method
from abaw.personalise.view import LinearView, check_view, entropy, lowest, usable


@register_method("t3a", grid={"k": (1, 5, 20, 50, 100, "all")})
@torch.no_grad()
def t3a(view: LinearView, *, k: int | str | None = 20, keep_seeds: bool = False,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """T3A's prototype classifier on one unit: (T, C) logits.

    Row c of ``weight`` is class c's seed, with the entropy of the original classifier on it.
    The public code files each seed under the classifier's own argmax on it; here row c stays
    under class c, so that no class can lose its template to a row of unusual norm. As in the
    public code the seeds compete with the frames on entropy (they usually win, their
    self-logit being large); ``keep_seeds=True`` keeps each seed besides the ``k`` best frames.
    ``k`` None or "all": every support is kept. Frames with ``mask`` False are classified but
    never become supports.
    """
    check_view(view)
    k = None if k in (None, "all") else int(k)
    if k is not None and k < 1:
        raise ValueError(f"t3a: k={k} must be >= 1 or 'all'")
    keep_seeds = keep_seeds or k is None  # with no limit nothing leaves, the seeds included
    logits = view.logits()
    classes = logits.shape[1]
    predicted = logits.argmax(dim=-1)
    # The candidates: seed c as item c under class c (first, so that a frame of equal entropy
    # does not displace it), then frame t as item C + t under its predicted class (a masked
    # frame under none), each with the entropy of the original classifier's prediction.
    owner = torch.cat([torch.arange(classes), torch.where(usable(view, mask), predicted, -1)])
    key = torch.cat([entropy(view.logits(view.weight)), entropy(logits)])
    if keep_seeds:
        owner[:classes] = -1  # not candidates: every class keeps its seed
    kept = torch.cat(lowest(key, owner, k, classes))
    seeded = torch.full((classes,), keep_seeds)
    seeded[kept[kept < classes]] = True
    frames = kept[kept >= classes] - classes
    seeds = F.normalize(view.weight, dim=-1)
    # Each class's sum of unit supports: its seed if it is one, then its frames.
    prototypes = (seeds * seeded[:, None]).index_add_(0, predicted[frames], F.normalize(view.z[frames], dim=-1))
    return view.z @ F.normalize(prototypes, dim=-1).T
