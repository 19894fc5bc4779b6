"""Neighbourhood (relational) distillation over memory banks: CompRess "2q" (Abbasi Koohpayegani,
Tejankar and Pirsiavash, NeurIPS 2020, arXiv:2010.14713).

Each query is compared with a bank of anchors (recent items) in the teacher's space and, through
a second bank of the same items, in the student's own space. The similarities become
distributions over the anchors, and the student is trained to match the teacher's::

    p_t(i) = softmax_j(<t_i, T_j> / tau),  p_s(i) = softmax_j(<s_i, S_j> / tau)
    loss   = mean_i KL(p_t(i) || p_s(i))

``t`` and ``s`` are L2-normalised (after centring, when asked: the teacher by its fixed mean,
the student by the mean of its bank). Unlike a cosine to the teacher's embedding through a
projection head, this acts on the student embedding's own metric: it asks the student to keep
each item's teacher neighbours as its own neighbours.

The banks are FIFO buffers of detached features. Under DDP every process enqueues the features
of all processes (gathered), so the banks stay identical across processes without broadcasts;
they are buffers, so checkpoints carry them and a resumed run continues bitwise.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgepath.distill.losses._dist import world_size


class RelationLoss(nn.Module):
    """KL between the teacher's and the student's similarity distributions over memory banks.

    Args:
        student_dim, teacher_dim: Feature sizes.
        queue: Anchors kept per bank (CompRess uses 128k on ImageNet; a few batches' worth of
            the training set is enough to rank neighbours on small data).
        temperature: Softmax temperature of both sides (CompRess: 0.04).
        center_student: Centre student features by their bank's mean before normalising (use it
            with teacher targets centred by the teacher's mean).
        min_fill: The loss is zero until the banks hold this many anchors.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        *,
        queue: int = 1024,
        temperature: float = 0.04,
        center_student: bool = False,
        min_fill: int = 64,
    ) -> None:
        super().__init__()
        if queue < 2:
            raise ValueError(f"relation queue must hold at least 2 anchors, got {queue}")
        self.temperature = temperature
        self.center_student = center_student
        self.min_fill = max(1, min(min_fill, queue))
        self.register_buffer("s_bank", torch.zeros(queue, student_dim))
        self.register_buffer("t_bank", torch.zeros(queue, teacher_dim))
        #: next row to overwrite, and how many rows hold anchors
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def _student_rows(self, s: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        if self.center_student:
            s = s - bank.mean(0)
        return F.normalize(s, dim=-1)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Loss of queries ``s`` (B, Ds, with grad) against teacher rows ``t`` (B, Dt), computed
        on the banks as they are, then the (gathered) batch is enqueued."""
        n = int(self.filled)
        s = s.float()
        t = t.float().detach()
        if n >= self.min_fill:
            sb = self.s_bank[:n]
            t_rows = F.normalize(t, dim=-1)
            tb = F.normalize(self.t_bank[:n], dim=-1)
            s_rows = self._student_rows(s, sb)
            sbn = self._student_rows(sb, sb)
            log_pt = F.log_softmax(t_rows @ tb.t() / self.temperature, dim=-1)
            log_ps = F.log_softmax(s_rows @ sbn.t() / self.temperature, dim=-1)
            loss = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
        else:
            loss = s.sum() * 0.0  # keeps the graph (and DDP's view of it) the same every step
        self.enqueue(s.detach(), t)
        return loss

    @torch.no_grad()
    def enqueue(self, s: torch.Tensor, t: torch.Tensor) -> None:
        """Append rows (gathered from every process under DDP) to both banks, FIFO."""
        if world_size() > 1:
            s, t = _gather(s), _gather(t)
        q = self.s_bank.shape[0]
        s, t = s[-q:], t[-q:]
        idx = (int(self.ptr) + torch.arange(s.shape[0], device=self.s_bank.device)) % q
        self.s_bank[idx] = s.to(self.s_bank.dtype)
        self.t_bank[idx] = t.to(self.t_bank.dtype)
        self.ptr.fill_((int(self.ptr) + s.shape[0]) % q)
        self.filled.fill_(min(q, int(self.filled) + s.shape[0]))


def _gather(x: torch.Tensor) -> torch.Tensor:
    """Rows of every process, in rank order (equal batch sizes, as the trainer's)."""
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
