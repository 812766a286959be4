"""A linear-chain CRF loss over the entity layer's word tags.

Constrained Viterbi already forbids invalid BIO paths, but it scores each
word on its own: nothing learns that, say, "B-test I-test" is more likely
than "B-test B-test" around a comma. A transition matrix trained with the
CRF likelihood does; inference adds it inside the same Viterbi
(``decode.viterbi(learned=...)``), so the product needs no new code path.
No start/end scores: training windows begin and end mid-note.
"""

from __future__ import annotations

import torch


def word_grid(
    flat: torch.Tensor, rows: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-word values (in row order, as ``loop._collate`` lays them
    out) → (rows, max words, ...) plus the mask of real words."""
    counts = torch.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if len(rows) else 0
    offsets = torch.cumsum(counts, 0) - counts
    col = torch.arange(len(rows), device=rows.device) - offsets[rows]
    grid = flat.new_zeros((n_rows, width, *flat.shape[1:]))
    grid[rows, col] = flat
    mask = torch.arange(width, device=rows.device)[None, :] < counts[:, None]
    return grid, mask


def crf_nll(
    emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood per word; ``emissions`` (B, W, T), ``tags``
    and ``mask`` (B, W) with each row's words first, ``trans`` (T, T)."""
    keep = mask[:, 0]
    emissions, tags, mask = emissions[keep], tags[keep], mask[keep]
    if not len(tags):
        return emissions.sum() * 0.0
    batch = torch.arange(len(tags), device=tags.device)
    gold = emissions[batch, 0, tags[:, 0]]
    alpha = emissions[:, 0]
    for i in range(1, tags.shape[1]):
        m = mask[:, i]
        step = trans[tags[:, i - 1], tags[:, i]] + emissions[batch, i, tags[:, i]]
        gold = gold + torch.where(m, step, torch.zeros_like(step))
        nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + emissions[:, i]
        alpha = torch.where(m[:, None], nxt, alpha)
    log_z = torch.logsumexp(alpha, dim=1)
    return (log_z - gold).sum() / mask.sum()
