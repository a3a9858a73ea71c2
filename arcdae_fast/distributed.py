"""Multi-process data-parallel training (`torchrun --nproc_per_node=N -m arcdae_fast.train`).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `setup` joins the process group (NCCL on CUDA,
gloo on CPU) and pins rank r to cuda:LOCAL_RANK. A run on N ranks is the single-process run
on the same global batch:
- every rank draws the step's random inputs for the global batch and keeps its rows;
- the InfoNCE terms gather all ranks' codes (`gather_rows`, handed to the method by
  `Method.distribute`; ArcDAE's method.gather_negatives);
- the gradients are averaged during backward: by DistributedDataParallel (`wrap_ddp`,
  train.parallel: ddp; buckets all-reduced), clipping, AdamW and the EMAs then run
  identically on every rank, so the replicas stay identical (`check_replicas` verifies it);
  or by FSDP2's reduce-scatter (train.parallel: fsdp, arcdae_fast/fsdp.py), each rank then
  updating its shard.
A collective that waits longer than train.dist_timeout_s for a peer (dead, hung, or a node
gone) raises on the ranks still alive, so they exit instead of hanging; torchrun's agent
also stops every worker when one dies.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fcol

# renamed in torch 2.12 (the old name warns); both are traceable by torch.compile
_all_gather = getattr(fcol, "all_gather_single_autograd", None) or fcol.all_gather_tensor_autograd


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist | None:
    """The torchrun environment, or None for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(d: Dist, device: torch.device, timeout_s: float = 600.0) -> torch.device:
    """Join the process group (collectives time out after timeout_s); returns this rank's
    device."""
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = attempt_store(timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
            store = dist.distributed_c10d._get_default_store()  # noqa: SLF001
        else:
            dist.init_process_group(
                backend, store=store, rank=d.rank, world_size=d.world, timeout=timeout
            )
        _STORES[:] = [store]
    return device


_STORES: list = []  # the rendezvous store of this process's group: where ranks leave failures


def report_failure(rank: int, what: str) -> None:
    """Leave this rank's failure (one line) where the other ranks look when a collective
    fails on them; best effort (the store may be gone too)."""
    if _STORES:
        try:
            _STORES[0].set(f"arcdae_fast/failed/{rank}", what[:500])
        except Exception:  # noqa: BLE001 - a lost store only loses the better message
            pass


def failures(world: int, wait_s: float = 3.0) -> list[tuple[int, str]]:
    """The failures other ranks reported ((rank, one line)); waits up to wait_s for the
    first, since a dying rank's report may trail the collective error it caused."""
    if not _STORES:
        return []
    store, keys = _STORES[0], [f"arcdae_fast/failed/{r}" for r in range(world)]
    deadline = time.monotonic() + wait_s
    while True:
        try:
            found = [(r, store.get(k).decode()) for r, k in enumerate(keys) if store.check([k])]
        except Exception:  # noqa: BLE001 - the store died with its host rank
            return []
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def attempt_store(timeout: timedelta) -> dist.Store | None:
    """Under torchrun's shared store (TORCHELASTIC_USE_AGENT_STORE=True, torch's default
    since 2.5), this attempt's own key space in it; None otherwise (env:// as usual).

    That TCPStore outlives a `--max-restarts` restart, and init_process_group's env://
    rendezvous uses it without a per-attempt prefix (pytorch/pytorch#135712): a restarted rank
    can read a dead attempt's gloo/NCCL address before its peer overwrites it, then time out
    connecting to it (seen here: "Gloo connectFullMesh failed ... Connect timeout", only when
    the restarted peer came up late). Every worker group restarts together, so
    TORCHELASTIC_RESTART_COUNT names the attempt consistently on all nodes."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"arcdae_fast/attempt_{attempt}", base)


def peer_lost(e: BaseException) -> bool:
    """Whether `e` is a collective's failure: torch.distributed's own errors, or gloo's and
    NCCL's RuntimeErrors (a reset connection, a timeout, an aborted communicator)."""
    if isinstance(e, dist.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "NCCL", "Connection reset", "Timed out", "timed out")
    )


def finish(ok: bool) -> None:
    """End this rank's part in the group. After a run that ended well: a barrier, then
    destroy_process_group (a rank that tears down while a slower one still talks can hang
    both: pytorch/pytorch#75097). After a failure: no collective at all (destroying the group
    while a peer may be inside a collective can deadlock, as torchtitan found,
    pytorch/torchtitan#1342); the process's exit releases it.

    The caller drops its DDP wrapper first (EagerStep.release_ddp): the hang at exit of
    issue 31, caught under gdb on the code it was reported against, was the main thread
    freeing DDP's reducer, which held the group's last reference; ~ProcessGroupGloo then
    joined gloo's worker threads while holding the GIL, and a worker waited for the GIL to
    free a finished all-gather's tensors (their Python objects): a deadlock
    (pytorch/pytorch#56297: destructors that block under the GIL). With the reducer gone
    while the group is still registered, the last reference goes with destroy_process_group,
    whose ProcessGroup wrapper releases the GIL while it is destroyed."""
    if dist.is_initialized() and ok:
        dist.barrier()
        dist.destroy_process_group()


def exit_guard(rc: int, seconds: float = 60.0) -> None:
    """After a rank's work has ended with exit status `rc`: if the process is still alive
    `seconds` later (a thread or a library's exit handler holding it), say what holds it
    (its threads' Python stacks and its child processes: the cause, for a bug report) and
    end it with `rc`. A finished job must not hold its devices until its wall time.

    The guard is a Python thread, and once the interpreter finalizes no Python thread runs
    again: for a process stuck past that point (a C++ destructor, a library's exit code) an
    alarm 15 s later ends it by SIGALRM, whose default action needs no Python."""

    def fire() -> None:
        time.sleep(seconds)
        rank = os.environ.get("RANK", "?")
        me = threading.current_thread()
        names = [t.name for t in threading.enumerate() if t is not me]
        sys.stderr.write(
            f"rank {rank}: still alive {seconds:g} s after the run ended (exit status {rc}); "
            f"forcing the exit. Python threads: {', '.join(names) or 'none'}; "
            f"child processes: {', '.join(_children()) or 'none'}; stacks:\n"
        )
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(rc)

    if hasattr(signal, "alarm") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(seconds) + 15)
    threading.Thread(target=fire, name="exit-guard", daemon=True).start()


def _children() -> list[str]:
    """This process's child processes as 'pid (command)' (Linux; empty elsewhere)."""
    out = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            except OSError:
                cmd = b"?"
            out.append(f"{pid} ({cmd.decode(errors='replace')[:120]})")
    return out


def gather_rows(x: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """All ranks' rows of x (rank-major, the global batch's order), in float32. With
    with_grad the backward sums every rank's gradient of its rows back to their owner."""
    x = x.float() if with_grad else x.detach().float()
    return _all_gather(x.contiguous(), 0, dist.group.WORLD)


def wrap_ddp(module: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel over `module` (train.parallel: ddp): gradient buckets
    all-reduced (averaged) while backward runs. The module lives on one device, so no
    device_ids (its inputs are on that device already); no buffers to broadcast (the
    evaluation EMA and the targets are updated identically on every rank)."""
    from torch.nn.parallel import DistributedDataParallel

    # oneDNN's weight gradient of a 1x1 convolution comes channels_last-strided ((C, 1, C, C)
    # for a contiguous (C, 1, 1, 1) weight: the same memory order, other strides on the size-1
    # dimensions); DDP copies it into its bucket and warns once per run. Giving the weights
    # those strides (match_grad_strides) removes the copy but made oneDNN's convolutions
    # slower: 0.78x the step on 2 gloo ranks (bench/ddp_strides.py,
    # bench/results/ddp_strides_cpu.txt). The copy stays; its warning says nothing actionable
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(module, gradient_as_bucket_view=True, **_no_buffer_sync())


def match_grad_strides(module: torch.nn.Module) -> None:
    """1x1 convolution weights restrided like their gradients (no bucket copy; measured slower
    overall, see wrap_ddp): kept for bench/ddp_strides.py's comparison."""
    for p in module.parameters():
        if p.dim() == 4 and p.shape[2:] == (1, 1) and p.is_contiguous():
            c = p.shape[1]  # (contiguous(channels_last) keeps them: both layouts are dense)
            w = torch.empty_strided(p.shape, (c, 1, c, c), dtype=p.dtype, device=p.device)
            p.data = w.copy_(p.data)


def _no_buffer_sync() -> dict:
    """broadcast_buffers=False, under the name this torch version takes (newer ones renamed
    it forward_sync_buffers)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    names = inspect.signature(DistributedDataParallel.__init__).parameters
    return {
        "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers": False
    }


def average(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy)."""
    out = values.detach().float().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (ranks agree on stopping)."""
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_state(*modules: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank."""
    for m in modules:
        for t in m.state_dict().values():
            dist.broadcast(t, 0)


def check_replicas(module: torch.nn.Module, device: torch.device) -> None:
    """Raise when the ranks' parameters differ (a per-tensor float64 fingerprint)."""
    fp = torch.stack([p.detach().double().square().sum() for p in module.parameters()])
    fp = torch.cat([fp, torch.stack([p.detach().double().sum() for p in module.parameters()])])
    fp = fp.to(device)
    allfp = [torch.empty_like(fp) for _ in range(dist.get_world_size())]
    dist.all_gather(allfp, fp)
    bad = [r for r, f in enumerate(allfp) if not torch.equal(f, allfp[0])]
    if bad:
        raise RuntimeError(f"data-parallel replicas diverged: rank(s) {bad} differ from rank 0")
