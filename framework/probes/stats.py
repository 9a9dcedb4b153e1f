"""Small, exact statistics the probes share, each beside a slow reference that tests compare it with.

Everything returns float64. Attention weights are recomputed from the hooked queries and keys as
softmax(q k^T / sqrt(dh)) under the causal mask, because the model's fused attention kernel never
forms them.
"""
from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def attention_weights(q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(..., T, dh) queries and keys -> (..., T, T) causal attention weights, rows summing to 1.

    With ``rows`` (R,) query positions, only those rows, (..., R, T): query t sees keys 0..t.
    """
    T, dh = k.shape[-2], k.shape[-1]
    rows = torch.arange(T, device=q.device) if rows is None else rows.to(q.device)
    q, k = q[..., rows, :].double(), k.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (..., R, T)
    future = torch.arange(T, device=q.device)[None, :] > rows[:, None]  # (R, T)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def attention_weights_reference(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The same for (B, H, T, dh), one query position at a time over its visible keys."""
    B, H, T, dh = q.shape
    out = torch.zeros(B, H, T, T, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                scores = [float(q[b, h, t].double() @ k[b, h, s].double()) / math.sqrt(dh) for s in range(t + 1)]
                top = max(scores)
                weights = [math.exp(x - top) for x in scores]
                for s, w in enumerate(weights):
                    out[b, h, t, s] = w / sum(weights)
    return out


def row_entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each row (last axis) of a probability tensor; 0 log 0 = 0."""
    p = p.double()
    return -torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p)).sum(-1) / LN2


def js_divergence_bits(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits between rows (last axis): 0 when equal, at most 1."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)
    return (row_entropy_bits(m) - 0.5 * (row_entropy_bits(p) + row_entropy_bits(q))).clamp_min(0.0)


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-d tensor; tied values share the mean of their ranks (as scipy's default)."""
    values, inverse, counts = torch.unique(x.double(), sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # rank of the last member of each tie group
    mean_rank = ends - (counts.double() - 1) / 2
    return mean_rank[inverse]


def rankdata_reference(x: torch.Tensor) -> torch.Tensor:
    """Rank by definition: 1 + (number strictly smaller) + (number of other equal values) / 2."""
    xs = x.double().tolist()
    return torch.tensor([1 + sum(y < v for y in xs) + (sum(y == v for y in xs) - 1) / 2 for v in xs],
                        dtype=torch.float64)


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation; NaN when either input is constant (the correlation is undefined)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = torch.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks."""
    return pearson(rankdata(x.flatten()), rankdata(y.flatten()))


def pca(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of the rows of ``x`` (N, d) -> (variance ratio of every component, components (k, d), scores (N, k)).

    Each component's sign is fixed so that its largest-magnitude loading is positive, making the
    output deterministic (an SVD may return either sign).
    """
    x = x.double()
    centred = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (k, d)
    flip = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))  # (k, 1)
    vh = vh * torch.where(flip == 0, torch.ones_like(flip), flip)
    var = s**2
    ratio = var / var.sum() if var.sum() > 0 else torch.zeros_like(var)
    return ratio, vh, centred @ vh.T


def mean_abs_offdiag_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """(..., n, d) -> (...): mean |cos| between distinct vectors of each set (0 = mutually orthogonal)."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)
    cos = unit @ unit.transpose(-1, -2)  # (..., n, n)
    n = cos.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=cos.device)
    return cos.abs()[..., off].mean(-1)


def silhouette(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) with Euclidean distances; NaN with < 2 clusters.

    For each point, a = mean distance to the rest of its own cluster, b = the smallest mean distance
    to another cluster, s = (b - a) / max(a, b); a point alone in its cluster scores 0 (sklearn's rule).
    """
    x = x.double()
    classes = labels.unique()
    if len(classes) < 2:
        return float("nan")
    dist = torch.cdist(x, x)  # (N, N)
    onehot = (labels[:, None] == classes[None, :]).double()  # (N, K)
    sizes = onehot.sum(0)  # (K,)
    sums = dist @ onehot  # (N, K): total distance from each point to each cluster
    own = onehot.argmax(1)
    own_size = sizes[own]
    a = sums.gather(1, own[:, None]).squeeze(1) / (own_size - 1).clamp_min(1)
    other_mean = sums / sizes
    other_mean[torch.arange(len(x), device=x.device), own] = float("inf")
    b = other_mean.min(1).values
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-300)
    s = torch.where(own_size > 1, s, torch.zeros_like(s))
    return float(s.mean())


def nearest_centroid_accuracy(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Two-fold held-out accuracy of the nearest-class-centroid rule (fit on one half, score the other)."""
    x = x.double()
    idx = torch.arange(len(x), device=x.device)
    correct, total = 0, 0
    for fit, test in ((idx % 2 == 0, idx % 2 == 1), (idx % 2 == 1, idx % 2 == 0)):
        classes = labels[fit].unique()
        if len(classes) == 0 or not bool(test.any()):
            continue
        centroids = torch.stack([x[fit][labels[fit] == c].mean(0) for c in classes])  # (K, d)
        predicted = classes[torch.cdist(x[test], centroids).argmin(1)]
        correct += int((predicted == labels[test]).sum())
        total += int(test.sum())
    return correct / total if total else float("nan")
